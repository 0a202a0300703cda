"""The encoder registry and the per-object embeddings table.

An encoder is a folder (model.safetensors + config.json, `lcdash.weights.save_encoder`) registered
under a name; embeddings are keyed (encoder, oid, band) and hold the [L+1, d] per-layer means
flattened row-major into one FLOAT[] (see `lcdash.embed`). Reads go through Arrow: the list column's
flat child buffer is reshaped to [N, L+1, d] without touching rows one by one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from lcdash.errors import ModelError
from lcdash.jsonio import read_encoder_config

DEFAULT_ENCODER = "astromer2-logpe-folded-demo"


def default_encoder_dir(name: str = DEFAULT_ENCODER) -> Path:
    """The shipped encoder folder `data/encoders/<name>` of the repository (beside the package)."""
    return Path(__file__).resolve().parents[2] / "data" / "encoders" / name


def _weights_sha256(path: Path) -> str | None:
    f = path / "model.safetensors"
    if not f.exists():
        return None
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 of an encoder folder's model.safetensors (None when it has none)."""
    return _weights_sha256(Path(path))


@contextmanager
def _transaction(store, cursor):
    """The caller's open transaction (`cursor`), or a new one."""
    if cursor is not None:
        yield cursor
    else:
        with store.transaction() as cur:
            yield cur


def _source_text(meta: dict) -> str | None:
    src = meta.get("source")
    if isinstance(src, dict):  # lcdash.weights.import_official writes {"name", "format", ...}
        return f"official {src.get('name', '?')} ({src.get('format', 'converted')})"
    return None if src is None else str(src)


def register_encoder(store, name: str, path: str | os.PathLike, source: str | None = None,
                     cursor=None) -> dict:
    """Add (or update) encoder `name` pointing at folder `path`; arch / n_layers / d_model come from its
    config.json. Re-registering a name with different weights deletes that name's embeddings (they
    were computed by the old weights). Returns get_encoder(store, name). `cursor`: a transaction the
    caller holds (`import-embeddings` registers and saves in one)."""
    if not name or not str(name).strip():
        raise ModelError("an encoder needs a non-empty name")
    path = Path(path).resolve()
    if not (path / "model.safetensors").exists():
        raise ModelError(f"{path} is not an encoder folder (no model.safetensors)")
    meta = read_encoder_config(path)
    cfg = meta.get("config")
    if not isinstance(cfg, dict) or not {"arch", "n_layers", "d_model"} <= set(cfg):
        raise ModelError(f"{path}/config.json lacks the model configuration (arch, n_layers, d_model)")
    sha = _weights_sha256(path)
    config = {**meta, "weights_sha256": sha}
    with _transaction(store, cursor) as cur:
        old = next(iter(cur.execute("SELECT config FROM encoders WHERE name = ?", [name]).fetchall()), None)
        if old is not None:
            old_sha = json.loads(old[0] or "{}").get("weights_sha256")
            if old_sha != sha:
                cur.execute("DELETE FROM embeddings WHERE encoder = ?", [name])
            cur.execute("DELETE FROM encoders WHERE name = ?", [name])
        cur.execute(
            "INSERT INTO encoders (name, path, arch, n_layers, d_model, source, config) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [name, str(path), cfg["arch"], int(cfg["n_layers"]), int(cfg["d_model"]),
             source if source is not None else _source_text(meta), json.dumps(config, default=str)],
        )
        return get_encoder(store, name, cursor=cur)


def register_default_encoder(store, name: str = DEFAULT_ENCODER) -> dict | None:
    """Register the shipped encoder if it exists and is not registered yet; None when it is absent."""
    path = default_encoder_dir(name)
    if not (path / "model.safetensors").exists():
        return None
    try:
        return get_encoder(store, name)
    except ModelError:
        return register_encoder(store, name, path,
                                source="shipped with lcdash (pretrained on the demo survey)")


def list_encoders(store) -> pd.DataFrame:
    """Registered encoders with their embedding counts: name, path, arch, n_layers, d_model, source,
    created_at, n_embeddings, bands (list)."""
    cur = store.cursor()
    try:
        return cur.execute(
            "SELECT e.name, e.path, e.arch, e.n_layers, e.d_model, e.source, e.created_at, "
            "coalesce(c.n, 0) AS n_embeddings, coalesce(c.bands, []::VARCHAR[]) AS bands "
            "FROM encoders e LEFT JOIN (SELECT encoder, count(*) AS n, "
            "list(DISTINCT band ORDER BY band) AS bands FROM embeddings GROUP BY encoder) c "
            "ON c.encoder = e.name ORDER BY e.created_at, e.name"
        ).df()
    finally:
        cur.close()


def get_encoder(store, name: str, cursor=None) -> dict:
    """{name, path, arch, n_layers, d_model, source, config (dict), created_at}; unknown names raise.
    `cursor`: read inside the caller's transaction."""
    cur = store.cursor() if cursor is None else cursor
    try:
        row = cur.execute(
            "SELECT name, path, arch, n_layers, d_model, source, config, created_at FROM encoders "
            "WHERE name = ?",
            [name]).fetchall()  # fetchall: a caller's cursor goes on with other statements
        row = row[0] if row else None
        if row is None:
            known = [r[0] for r in cur.execute("SELECT name FROM encoders ORDER BY name").fetchall()]
            raise ModelError(f"no encoder named {name!r} in the store; "
                             f"registered: {', '.join(known) or 'none'}")
    finally:
        if cursor is None:
            cur.close()
    keys = ("name", "path", "arch", "n_layers", "d_model", "source", "config", "created_at")
    enc = dict(zip(keys, row, strict=True))
    enc["config"] = json.loads(enc["config"]) if enc["config"] else {}
    return enc


def save_embeddings(store, encoder: str, oids, bands: Sequence[str] | str, n_windows, layers,
                    cursor=None) -> int:
    """Write embeddings of `encoder` for (oid, band) rows in one transaction (or the caller's,
    `cursor`), replacing any rows with the same keys. layers: float32 [N, L+1, d] matching the
    encoder. Returns the rows written."""
    enc = get_encoder(store, encoder, cursor=cursor)
    oids = np.asarray(oids, np.int64).ravel()
    n = oids.size
    bands = [bands] * n if isinstance(bands, str) else [str(b) for b in bands]
    n_windows = np.asarray(n_windows, np.int32).ravel()
    layers = np.ascontiguousarray(layers, np.float32)
    shape = (enc["n_layers"] + 1, enc["d_model"])
    if layers.ndim != 3 or layers.shape[1:] != shape or layers.shape[0] != n:
        raise ModelError(f"embeddings for {encoder!r} must be [{n}, {shape[0]}, {shape[1]}], "
                         f"got {list(layers.shape)}")
    if len(bands) != n or n_windows.size != n:
        raise ModelError(f"got {n} oids, {len(bands)} bands and {n_windows.size} window counts")
    if n == 0:
        return 0
    keys = pd.DataFrame({"oid": oids, "band": bands})
    if keys.duplicated().any():
        raise ModelError("save_embeddings got the same (oid, band) twice")
    width = shape[0] * shape[1]
    flat = pa.FixedSizeListArray.from_arrays(pa.array(layers.reshape(-1)), width).cast(pa.list_(pa.float32()))
    table = pa.table({"oid": oids, "band": pa.array(bands, pa.string()), "n_windows": n_windows,
                      "layers": flat})
    with _transaction(store, cursor) as cur:
        cur.register("_new_emb", table)
        cur.execute("DELETE FROM embeddings WHERE encoder = ? "
                    "AND (oid, band) IN (SELECT oid, band FROM _new_emb)", [encoder])
        cur.execute("INSERT INTO embeddings SELECT ?, oid, band, n_windows, layers FROM _new_emb", [encoder])
        cur.unregister("_new_emb")
    return n


def load_embeddings(store, encoder: str, oids: Iterable[int] | None = None, band: str | None = None,
                    ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(oid int64[N], band list[N], layers float32[N, L+1, d]) of `encoder`, ordered by oid and band, or
    in the order of `oids` when given (oids without embeddings are left out)."""
    enc = get_encoder(store, encoder)
    shape = (enc["n_layers"] + 1, enc["d_model"])
    cur = store.cursor()
    try:
        where, params = ["e.encoder = $enc"], {"enc": encoder}
        if band is not None:
            where.append("e.band = $band")
            params["band"] = band
        if oids is not None:
            sel = np.asarray(list(oids) if not isinstance(oids, np.ndarray) else oids, np.int64).ravel()
            cur.register("_sel", pa.table({"oid": sel, "i": np.arange(sel.size, dtype=np.int64)}))
            sql = (f"SELECT e.oid, e.band, e.layers FROM embeddings e JOIN _sel s ON s.oid = e.oid "
                   f"WHERE {' AND '.join(where)} ORDER BY s.i, e.band")
        else:
            sql = (f"SELECT e.oid, e.band, e.layers FROM embeddings e WHERE {' AND '.join(where)} "
                   "ORDER BY e.oid, e.band")
        tb = cur.sql(sql, params=params).to_arrow_table()
    finally:
        cur.close()
    n = tb.num_rows
    oid = tb.column("oid").to_numpy().astype(np.int64, copy=False)
    bands = tb.column("band").to_pylist()
    if n == 0:
        return oid, bands, np.zeros((0, *shape), np.float32)
    col = tb.column("layers").combine_chunks()
    values = col.flatten().to_numpy(zero_copy_only=False)
    if values.size != n * shape[0] * shape[1]:
        raise ModelError(f"stored embeddings of {encoder!r} do not match its shape {list(shape)}")
    return oid, bands, values.astype(np.float32, copy=False).reshape(n, *shape)


def iter_embeddings(store, encoder: str, band: str | None = None, chunk_size: int = 50_000):
    """(oid int64[n], band list[n], layers float32[n, L+1, d]) chunks of `encoder`'s embeddings in
    storage order (no sort), streamed from DuckDB at most `chunk_size` rows at a time: a million
    objects of 6 x 128 are 3 GB at once, one 50,000-row chunk is 150 MB."""
    enc = get_encoder(store, encoder)
    shape = (enc["n_layers"] + 1, enc["d_model"])
    cur = store.cursor()
    try:
        sql, params = "SELECT oid, band, layers FROM embeddings WHERE encoder = $enc", {"enc": encoder}
        if band is not None:
            sql += " AND band = $band"
            params["band"] = band
        reader = cur.sql(sql, params=params).to_arrow_reader(int(chunk_size))
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in reader:
            pending.append(batch)
            rows += batch.num_rows
            if rows >= chunk_size:
                yield _chunk(pa.Table.from_batches(pending), encoder, shape)
                pending, rows = [], 0
        if rows:
            yield _chunk(pa.Table.from_batches(pending), encoder, shape)
    finally:
        cur.close()


def _chunk(tb: pa.Table, encoder: str, shape) -> tuple[np.ndarray, list[str], np.ndarray]:
    n = tb.num_rows
    values = tb.column("layers").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    if values.size != n * shape[0] * shape[1]:
        raise ModelError(f"stored embeddings of {encoder!r} do not match its shape {list(shape)}")
    # a copy: a zero-copy view of the oids would keep the whole chunk (its layers too) alive, and a
    # caller that keeps every chunk's oids would keep every chunk (2.5 GB more at a million)
    return (np.array(tb.column("oid").to_numpy(), dtype=np.int64), tb.column("band").to_pylist(),
            values.astype(np.float32, copy=False).reshape(n, *shape))


def has_embeddings(store, encoder: str, band: str | None = None) -> bool:
    cur = store.cursor()
    try:
        sql = "SELECT count(*) FROM (SELECT 1 FROM embeddings WHERE encoder = ?"
        params = [encoder]
        if band is not None:
            sql += " AND band = ?"
            params.append(band)
        return bool(cur.execute(sql + " LIMIT 1)", params).fetchone()[0])
    finally:
        cur.close()


def embedded_keys(store, encoder: str, band: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(oid int64[N], band str[N]) of every stored embedding of `encoder` (in `band` when given): what
    is already embedded, so a job computes only the rest."""
    cur = store.cursor()
    try:
        sql, params = "SELECT oid, band FROM embeddings WHERE encoder = ?", [encoder]
        if band is not None:
            sql += " AND band = ?"
            params.append(band)
        rows = cur.execute(sql, params).fetchnumpy()
    finally:
        cur.close()
    return np.asarray(rows["oid"], np.int64), np.asarray(rows["band"], dtype=str)


def delete_embeddings(store, encoder: str) -> int:
    """Drop every embedding of `encoder` (the registry entry stays). Returns the rows deleted."""
    with store.transaction() as cur:
        n = cur.execute("SELECT count(*) FROM embeddings WHERE encoder = ?", [encoder]).fetchone()[0]
        cur.execute("DELETE FROM embeddings WHERE encoder = ?", [encoder])
    return int(n)


__all__ = [
    "DEFAULT_ENCODER", "default_encoder_dir", "register_encoder", "register_default_encoder", "list_encoders",
    "get_encoder", "save_embeddings", "load_embeddings", "iter_embeddings", "has_embeddings",
    "embedded_keys", "delete_embeddings",
]
