"""Column-at-a-time reads of a stored projection for the large-map view (`lcdash.mapview`).

The plain Explore scatter reads a projection joined with every object column into one DataFrame
(`workspace.projection_points`); at a million points that frame (strings for ids, labels, surveys) is
the slowest part of drawing the map. These reads return numpy / Arrow-backed columns instead, one
colour column only when it is asked for, in the same order (oid, band) as `projection_points`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

from lcdash.errors import LcdashError


def projection_size(store, proj_id: int) -> int:
    """Number of points of projection `proj_id` (0 when it has none or does not exist)."""
    cur = store.cursor()
    try:
        return int(cur.execute("SELECT count(*) FROM projection_points WHERE proj_id = ?",
                               [int(proj_id)]).fetchall()[0][0])
    finally:
        cur.close()


def projection_arrays(store, proj_id: int) -> pd.DataFrame:
    """oid (int64), band, x, y (float32) of a projection, ordered by oid and band; read through Arrow."""
    cur = store.cursor()
    try:
        tb = cur.sql("SELECT oid, band, x, y FROM projection_points WHERE proj_id = $p ORDER BY oid, band",
                     params={"p": int(proj_id)}).to_arrow_table()
    finally:
        cur.close()
    return pd.DataFrame({
        "oid": tb.column("oid").to_numpy().astype(np.int64, copy=False),
        "band": pd.Series(tb.column("band").combine_chunks().dictionary_encode().to_pandas(),
                          dtype="category"),
        "x": tb.column("x").to_numpy().astype(np.float32, copy=False),
        "y": tb.column("y").to_numpy().astype(np.float32, copy=False),
    })


def _object_columns(cur) -> list[str]:
    return [r[0] for r in cur.execute("SELECT column_name FROM information_schema.columns "
                                      "WHERE table_name = 'objects'").fetchall()]


def projection_column(store, proj_id: int, column: str) -> pd.Series:
    """One object column for every point of a projection (same order as `projection_arrays`); missing
    objects give NA. Strings come back as a categorical (a million labels cost a few MB)."""
    cur = store.cursor()
    try:
        if column not in _object_columns(cur):
            raise LcdashError(f"objects have no column {column!r}")
        tb = cur.sql(f'SELECT o."{column}" AS v FROM projection_points p LEFT JOIN objects o USING (oid) '
                     "WHERE p.proj_id = $p ORDER BY p.oid, p.band",
                     params={"p": int(proj_id)}).to_arrow_table()
    finally:
        cur.close()
    col = tb.column("v").combine_chunks()
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return pd.Series(col.dictionary_encode().to_pandas(), name=column, dtype="category")
    return pd.Series(col.to_pandas(), name=column)


def object_ids(store, oids: Iterable[int]) -> list[str]:
    """The object_id of each oid, in the order given ("" for an unknown oid)."""
    sel = np.asarray(list(oids) if not isinstance(oids, np.ndarray) else oids, np.int64).ravel()
    cur = store.cursor()
    try:
        cur.register("_ids", pa.table({"oid": sel, "i": np.arange(sel.size, dtype=np.int64)}))
        got = cur.execute("SELECT i, o.object_id FROM _ids LEFT JOIN objects o USING (oid) "
                          "ORDER BY i").fetchall()
        cur.unregister("_ids")
    finally:
        cur.close()
    return [str(v) if v is not None else "" for _, v in got]


def any_synthetic(store, proj_id: int) -> bool:
    """Whether any point of the projection is a synthetic (simulated) object."""
    cur = store.cursor()
    try:
        return bool(cur.execute("SELECT count(*) FROM projection_points p JOIN objects o USING (oid) "
                                "WHERE p.proj_id = ? AND o.synthetic", [int(proj_id)]).fetchall()[0][0])
    finally:
        cur.close()


def find_object(store, object_id: str) -> int | None:
    """The oid of a user object id (the first by oid when several surveys use it), or None."""
    cur = store.cursor()
    try:
        row = cur.execute("SELECT oid FROM objects WHERE object_id = ? ORDER BY oid LIMIT 1",
                          [str(object_id).strip()]).fetchall()
    finally:
        cur.close()
    return int(row[0][0]) if row else None


def iter_embeddings(store, encoder: str, batch_rows: int = 65_536):
    """(oid int64[n], band list[n], layers float32[n, L+1, d]) batches of all of `encoder`'s embeddings,
    one query per oid range of about `batch_rows` rows: what a million-object map input is built from
    without holding every layer of every object at once (`load_embeddings` does). Measured at 1M x
    [5, 128]: process peak 5.3 GB (one query over the whole table: 6.5 GB), of which ~2.6 GB is DuckDB's
    own block cache, bounded by the store's memory_limit."""
    from lcdash.store.embeddings import get_encoder

    enc = get_encoder(store, encoder)
    shape = (enc["n_layers"] + 1, enc["d_model"])
    cur = store.cursor()
    try:
        lo, hi, n = cur.execute("SELECT min(oid), max(oid), count(*) FROM embeddings WHERE encoder = ?",
                                [str(encoder)]).fetchall()[0]
        if not n:
            return
        step = max(1, int(np.ceil((hi - lo + 1) * batch_rows / n)))
        for start in range(int(lo), int(hi) + 1, step):
            tb = cur.sql("SELECT oid, band, layers FROM embeddings WHERE encoder = $enc AND oid >= $lo "
                         "AND oid < $hi", params={"enc": str(encoder), "lo": start, "hi": start + step}
                         ).to_arrow_table()
            rows = tb.num_rows
            if rows == 0:
                continue
            values = tb.column("layers").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            if values.size != rows * shape[0] * shape[1]:
                raise LcdashError(f"stored embeddings of {encoder!r} do not match its shape {list(shape)}")
            yield (tb.column("oid").to_numpy().astype(np.int64, copy=False), tb.column("band").to_pylist(),
                   values.astype(np.float32, copy=False).reshape(rows, *shape))
            del tb, values
    finally:
        cur.close()
