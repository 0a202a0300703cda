"""Embedding catalogues too large for one process, on Dask distributed (the engine LSDB runs on).

A SOURCE is split into partitions, each one Dask task:

* a HATS catalogue (lsdb / nested-pandas): one partition per HEALPix pixel; each row is an object
  with its light curve in a nested column (ZTF's `lightcurve`), read with `nested_pandas.read_parquet`;
* a Parquet dataset of observations: one partition per hive folder (`part=3/`, `survey=x/band=g/`),
  or per file when the files lie side by side; rows are either one observation each (a long table)
  or one light curve each (list columns);
* a store: the client exports its light curves to `OUT/_export/` in chunks first, so a worker never
  opens DuckDB (one writer process per file; a worker may run on another host).

An object's observations must lie in one partition (HATS and `lcdash demo --out-parquet` guarantee
it; `import-embeddings` refuses an object embedded twice). Each worker loads the encoder once
(`EncoderPlugin`, which ships the weights' bytes, so a remote worker needs no shared copy of the
encoder folder) and runs it on the GPU when it has one. A partition writes
`OUT/<partition>/part-0.parquet` (object_id, [band,] [survey, oid,] n_windows, layer_0..layer_L) by
atomic rename, and a partition whose file exists is done: a killed run resumes where it stopped and a
re-run adds nothing. A failing partition is retried, then reported by name; the others still finish.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from lcdash.errors import LcdashError, ModelError, ValidationError
from lcdash.windows import group_curves

MANIFEST = "_lcdash_embeddings.json"
OUTPUT_FILE = "part-0.parquet"
EXPORT_DIR = "_export"
ROLES = ("object_id", "time", "mag", "mag_err", "band")
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: What `--device` may name: torch's device types that lcdash runs on.
DEVICE_RE = r"cpu|mps|cuda(:\d+)?"


# ------------------------------------------------------------------------------------------------
# what to read
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Partition:
    """One task: `name` is its output folder under OUT (hive style, e.g. "Norder=3/Dir=0/Npix=12")."""

    name: str
    paths: tuple[str, ...]


@dataclass
class SourceSpec:
    """How a worker reads a partition. layout: "nested" (HATS: one object a row, observations in the
    `nested` column), "lists" (one light curve a row, list columns) or "long" (one observation a row).
    columns: role -> column (or nested field); `keep`: extra per-curve columns carried to the output
    (the store's survey and oid)."""

    kind: str  # "hats" | "parquet" | "store"
    path: str
    layout: str
    columns: dict[str, str | None]
    nested: str | None = None
    nested_fields: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    partitions: list[Partition] = field(default_factory=list)

    def describe(self) -> dict:
        d = asdict(self)
        d.pop("partitions")
        d["n_partitions"] = len(self.partitions)
        return d

    def to_dict(self) -> dict:
        """JSON-ready (a job's parameters): `from_dict` rebuilds it in another process."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SourceSpec:
        d = dict(d)
        d["partitions"] = [Partition(p["name"], tuple(p["paths"])) for p in d.get("partitions", [])]
        d["nested_fields"], d["keep"] = tuple(d.get("nested_fields", ())), tuple(d.get("keep", ()))
        return cls(**d)


def _is_store(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        head = fh.read(16)
    return head[8:12] == b"DUCK"


def _is_hats(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("hats.properties", "collection.properties",
                                                                "properties"))


def open_source(source: str | os.PathLike, mapping: dict | None = None, nested: str | None = None,
                out: str | os.PathLike | None = None, survey: str | None = None, band: str | None = None,
                chunk_size: int = 5000, progress: Callable | None = None) -> SourceSpec:
    """Find SOURCE's partitions and the columns holding each role (guessed, or given in `mapping`).
    A store is exported to OUT/_export first (`out` is needed then)."""
    path = Path(source)
    if not path.exists():
        raise ValidationError(f"{source}: no such file or folder")
    mapping = dict(mapping or {})
    if _is_store(path):
        if out is None:
            raise ValidationError("embedding a store needs an output folder to export it into")
        return export_store(path, Path(out) / EXPORT_DIR, survey=survey, band=band, chunk_size=chunk_size,
                            progress=progress)
    if survey is not None or band is not None:
        raise ValidationError("--survey and --band select objects of a store; this source is not one")
    if _is_hats(path):
        return _open_hats(path, mapping, nested)
    if path.is_dir() and (path / "observations").is_dir():
        path = path / "observations"  # the layout of `lcdash demo --out-parquet`
    return _open_parquet(path, mapping)


def _roles(names: Sequence[str], mapping: dict, where: str) -> dict[str, str | None]:
    from lcdash.io import guess_mapping

    cols = guess_mapping(names)
    cols = {r: cols.get(r) for r in ROLES}
    for role, col in mapping.items():
        if role not in ROLES:
            raise ValidationError(f"--map {role}: expected one of {', '.join(ROLES)}")
        if col is not None and col not in names:
            raise ValidationError(f"--map {role}={col}: {where} has no column {col!r}; it has {list(names)}")
        cols[role] = col
    missing = [r for r in ("object_id", "time", "mag") if not cols.get(r)]
    if missing:
        raise ValidationError(f"{where}: no column for {', '.join(missing)} (columns: {list(names)}); "
                              "name them with --map ROLE=COLUMN")
    return cols


def _open_hats(path: Path, mapping: dict, nested: str | None) -> SourceSpec:
    try:
        import lsdb
        from hats.io import paths as hats_paths
    except ImportError as exc:  # pragma: no cover - lsdb is in requirements.txt
        raise LcdashError(f"reading a HATS catalogue needs lsdb and hats ({exc.name} is missing)") from exc
    try:
        cat = lsdb.open_catalog(str(path))
    except Exception as exc:  # lsdb raises many kinds; the message is what the user needs
        raise ValidationError(f"{path}: not a readable HATS catalogue ({_one_line(exc)})") from exc
    nested_cols = list(getattr(cat, "nested_columns", []) or [])
    if nested is None:
        if not nested_cols:
            raise ValidationError(f"{path}: the HATS catalogue has no nested light-curve column")
        nested = "lightcurve" if "lightcurve" in nested_cols else nested_cols[0]
    elif nested not in nested_cols:
        raise ValidationError(f"{path}: no nested column {nested!r}; nested columns: {nested_cols}")
    fields = list(cat.dtypes[nested].column_dtypes)
    top = [c for c in cat.columns if c != nested]
    cols = _roles(fields + top, mapping, f"{path} (fields of {nested!r} and columns)")
    if cols["object_id"] not in top:
        raise ValidationError(f"{path}: the object id ({cols['object_id']}) must be a column of the "
                              f"catalogue, not a field of {nested!r}")
    for role in ("time", "mag"):
        if cols[role] not in fields:
            raise ValidationError(f"{path}: {role} ({cols[role]}) must be a field of {nested!r}: {fields}")
    base = cat.hc_structure.catalog_base_dir
    parts = []
    for px in cat.get_healpix_pixels():
        f = hats_paths.pixel_catalog_file(base, px)
        parts.append(Partition(f"Norder={px.order}/Npix={px.pixel}", (str(f),)))
    return SourceSpec("hats", str(path), "nested", cols, nested=nested, nested_fields=tuple(fields),
                      partitions=parts)


def _parquet_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".parquet", ".parq", ".pq")
                  and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))


def _open_parquet(path: Path, mapping: dict) -> SourceSpec:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = _parquet_files(path)
    if not files:
        raise ValidationError(f"{path}: no Parquet files (a HATS catalogue, a Parquet dataset or a store)")
    try:
        schema = pq.read_schema(files[0])
    except Exception as exc:
        raise ValidationError(f"{files[0]}: not a Parquet file ({_one_line(exc)})") from exc
    names = list(schema.names)
    cols = _roles(names, mapping, str(files[0]))
    is_list = pa.types.is_list(schema.field(cols["time"]).type) or \
        pa.types.is_large_list(schema.field(cols["time"]).type)
    keep = tuple(c for c in ("survey", "oid") if c in names and c not in cols.values())
    groups: dict[str, list[str]] = {}
    if path.is_file():
        groups[f"file={path.stem}"] = [str(path)]
    else:
        for f in files:
            rel = f.relative_to(path)
            hive = [p for p in rel.parts[:-1] if "=" in p]
            name = "/".join(hive) if hive and len(hive) == len(rel.parts) - 1 else f"file={_safe(rel)}"
            groups.setdefault(name, []).append(str(f))
    parts = [Partition(n, tuple(fs)) for n, fs in sorted(groups.items())]
    return SourceSpec("parquet", str(path), "lists" if is_list else "long", cols, keep=keep, partitions=parts)


def _safe(rel: Path) -> str:
    stem = "__".join(rel.with_suffix("").parts)
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)


def export_store(db, folder: Path, survey: str | None = None, band: str | None = None,
                 chunk_size: int = 5000, progress: Callable | None = None) -> SourceSpec:
    """Write the store's light curves as Parquet chunks (one light curve a row: object_id, survey, oid,
    band, time, mag, mag_err lists) for workers that must not open DuckDB. A chunk already written is
    kept, so an interrupted export resumes too. `db`: a store file (opened read-only here) or an open
    `Store` (the app's, which holds the write lock)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lcdash.store import Store

    if isinstance(db, Store):
        store, db, own = db, Path(db.path), False
    else:
        own = True
        try:
            store = Store(db, read_only=True)
        except Exception as exc:
            raise LcdashError(f"{db}: cannot open the store read-only ({_one_line(exc)}); "
                              "close the app or the command writing to it") from exc
    try:
        objs = store.objects(survey=survey, columns=["oid", "object_id", "survey", "bands", "period"])
        if objs.empty:
            raise ValidationError(f"{db}: no objects" + (f" of survey {survey!r}" if survey else ""))
        pairs = [(int(o), str(b)) for o, bs in zip(objs["oid"], objs["bands"], strict=True)
                 for b in (list(bs) if bs is not None else []) if band is None or b == band]
        if not pairs:
            raise ValidationError(f"{db}: no light curves in band {band!r}")
        pairs.sort(key=lambda p: (p[1], p[0]))
        meta = objs.set_index("oid")[["object_id", "survey", "period"]]
        # the export (and so the output's partitions) belongs to one selection of the store: a resumed
        # run must select the same light curves in the same chunks
        plan = hashlib.sha256(json.dumps([chunk_size, pairs]).encode()).hexdigest()
        plan_file = folder / "_plan.json"
        if plan_file.exists() and json.loads(plan_file.read_text()).get("plan") != plan:
            raise ValidationError(f"{folder.parent} holds a run over another selection of the store "
                                  "(--survey, --band, --chunk-size or its objects changed); "
                                  "choose another --out")
        folder.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(json.dumps({"plan": plan, "store": str(db), "survey": survey, "band": band,
                                         "chunk_size": chunk_size, "light_curves": len(pairs)}))
        parts = []
        n_chunks = (len(pairs) + chunk_size - 1) // chunk_size
        for k in range(n_chunks):
            name = f"chunk={k:05d}"
            target = folder / name / OUTPUT_FILE
            parts.append(Partition(name, (str(target),)))
            if not target.exists():
                chunk = pairs[k * chunk_size:(k + 1) * chunk_size]
                tables = []
                for b in sorted({p[1] for p in chunk}):
                    oids = np.array([o for o, bb in chunk if bb == b], np.int64)
                    batch = store.read_batch(oids, band=b)
                    tables.append(_batch_table(batch, meta))
                _atomic_parquet(pa.concat_tables(tables), target, pq)
            if progress is not None:
                progress(k + 1, n_chunks, f"exported {k + 1}/{n_chunks} chunks")
    finally:
        if own:
            store.close()
    cols = {"object_id": "object_id", "time": "time", "mag": "mag", "mag_err": "mag_err", "band": "band"}
    # the catalogue period travels with each curve: a folded encoder folds at it, as `lcdash embed` does
    return SourceSpec("store", str(db), "lists", cols, keep=("survey", "oid", "period"), partitions=parts)


def _batch_table(batch, meta: pd.DataFrame):
    import pyarrow as pa

    n = batch.length.astype(np.int64)
    offsets = pa.array(np.r_[0, np.cumsum(n)].astype(np.int32))
    rows = np.repeat(np.arange(len(n)), n)
    cols = np.concatenate([np.arange(k) for k in n]) if len(n) else np.zeros(0, np.int64)

    def lists(values, typ):
        return pa.ListArray.from_arrays(offsets, pa.array(values[rows, cols], typ))

    m = meta.loc[batch.oid]
    return pa.table({
        "object_id": pa.array(m["object_id"].astype(str).tolist(), pa.string()),
        "survey": pa.array(m["survey"].astype(str).tolist(), pa.string()),
        "oid": pa.array(batch.oid.astype(np.int64)),
        "period": pa.array(m["period"].to_numpy(np.float64, na_value=np.nan), pa.float64()),
        "band": pa.array([str(b) for b in batch.band], pa.string()),
        "time": lists(batch.time, pa.float64()),
        "mag": lists(batch.mag, pa.float32()),
        "mag_err": lists(batch.mag_err, pa.float32()),
    })


def _atomic_parquet(table, target: Path, pq=None) -> None:
    """Write `table` to target through a hidden temporary file and a rename: a reader (or a resumed
    run) sees the whole file or none of it."""
    if pq is None:
        import pyarrow.parquet as pq
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


# ------------------------------------------------------------------------------------------------
# reading one partition into light curves
# ------------------------------------------------------------------------------------------------
def read_partition(spec: SourceSpec, part: Partition) -> pd.DataFrame:
    """The partition's observations as one long frame: key columns (object_id, [band], keep...) then
    time, mag (one row an observation)."""
    c = spec.columns
    if spec.layout == "nested":
        import nested_pandas as npd

        inner = [c[r] for r in ("time", "mag", "band") if c.get(r) and c[r] in spec.nested_fields]
        top = [c["object_id"]] + ([c["band"]] if c.get("band") and c["band"] not in inner else [])
        frames = []
        for f in part.paths:
            nf = npd.read_parquet(f, columns=top + [spec.nested])
            nf = nf.reset_index(drop=True)
            flat = nf[spec.nested].nest.to_flat()[inner]
            ids = nf[top].loc[flat.index]
            frames.append(pd.concat([ids.reset_index(drop=True), flat.reset_index(drop=True)], axis=1))
        df = pd.concat(frames, ignore_index=True)
    else:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        wanted = [c[r] for r in ("object_id", "band", "time", "mag") if c.get(r)] + list(spec.keep)
        table = pa.concat_tables([pq.read_table(f, columns=wanted) for f in part.paths])
        if spec.layout == "lists":
            lengths = pc.list_value_length(table.column(c["time"])).to_numpy(zero_copy_only=False)
            lengths = np.nan_to_num(lengths.astype(float)).astype(np.int64)
            rows = np.repeat(np.arange(table.num_rows), lengths)
            data = {}
            for col in wanted:
                arr = table.column(col).combine_chunks()
                if col in (c["time"], c["mag"]) or (pa.types.is_list(arr.type) and col == c.get("band")):
                    data[col] = arr.flatten().to_numpy(zero_copy_only=False)
                else:
                    data[col] = arr.take(pa.array(rows)).to_pandas().to_numpy()
            df = pd.DataFrame(data)
        else:
            df = table.to_pandas()
    rename = {c[r]: r for r in ("object_id", "band", "time", "mag") if c.get(r)}
    return df.rename(columns=rename)


def curves_of(frame: pd.DataFrame, keep: Sequence[str] = ()) -> tuple[pd.DataFrame, list]:
    """Group a long frame (object_id, [band], time, mag, keep...) into light curves the way
    `lcdash.embed.embed_frame` does: rows without a finite time and magnitude dropped, sorted by
    time, a repeated (object, band, time) keeps its first row (`lcdash.windows.group_curves`).
    Returns (keys frame, FlatCurves)."""
    keys = ["object_id"] + (["band"] if "band" in frame.columns else [])
    df = frame
    for col in ("time", "mag"):
        try:
            df[col] = pd.to_numeric(df[col])
        except (ValueError, TypeError) as exc:
            raise ValidationError(f"column {col!r} is not numeric: {_one_line(exc)}") from exc
    df = df[np.isfinite(df["time"].to_numpy(float)) & np.isfinite(df["mag"].to_numpy(float))]
    for col in ("time", "mag"):  # the encoder computes in float32: beyond its range is inf, then NaN
        big = np.abs(df[col].to_numpy(float)) > FLOAT32_MAX
        if big.any():
            row = df.iloc[int(np.flatnonzero(big)[0])]
            raise ValidationError(f"object {str(row['object_id'])!r}: {col} {float(row[col]):g} is beyond "
                                  f"the encoder's float32 range (|{col}| <= {FLOAT32_MAX:.3g}); "
                                  f"{int(big.sum())} such row(s)")
    if "band" in keys:
        df = df.assign(band=df["band"].astype(str))
    return group_curves(df, keys, keep)


# ------------------------------------------------------------------------------------------------
# the encoder on each worker
# ------------------------------------------------------------------------------------------------
_MODELS: dict[str, tuple] = {}  # sha256 of the weights -> (model, device): one per worker process


def encoder_files(model_dir: str | os.PathLike) -> dict[str, bytes]:
    d = Path(model_dir)
    if not (d / "model.safetensors").exists():
        raise ModelError(f"{model_dir} is not an encoder folder (no model.safetensors)")
    return {f.name: f.read_bytes() for f in d.iterdir()
            if f.is_file() and f.suffix in (".safetensors", ".json")}


def _sha(files: dict[str, bytes]) -> str:
    return hashlib.sha256(files["model.safetensors"]).hexdigest()


def load_cached(files: dict[str, bytes], device: str | None = None, threads: int | None = None,
                folder: str | None = None):
    """The encoder of `files` in this process, loaded on first use (GPU when present)."""
    key = _sha(files)
    if key not in _MODELS:
        import tempfile

        import torch

        from lcdash.device import pick_device
        from lcdash.weights import load_encoder

        if threads:
            torch.set_num_threads(int(threads))
        target = Path(folder or tempfile.gettempdir()) / f"lcdash-encoder-{key[:16]}"
        if not (target / "model.safetensors").exists():
            tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex}.tmp")
            tmp.mkdir(parents=True)
            for name, data in files.items():
                (tmp / name).write_bytes(data)
            try:
                os.replace(tmp, target)
            except OSError:  # another process of this host won the race
                for f in tmp.iterdir():
                    f.unlink()
                tmp.rmdir()
        model, _ = load_encoder(target)
        dev = pick_device(device)
        if dev.type == "cuda" and device is None and torch.cuda.device_count() > 1:
            dev = torch.device(f"cuda:{os.getpid() % torch.cuda.device_count()}")
        model.to(dev).eval()
        _MODELS[key] = (model, dev)
    return _MODELS[key]


def _worker_plugin_class():
    from distributed.diagnostics.plugin import WorkerPlugin

    class EncoderPlugin(WorkerPlugin):
        """Loads the encoder once per worker process when the worker joins (or the plugin is
        registered), from bytes shipped with the plugin: no shared filesystem needed for it."""

        name = "lcdash-encoder"

        def __init__(self, files: dict[str, bytes], device: str | None = None):
            self.files, self.device = files, device

        def setup(self, worker):
            state = getattr(worker, "state", None)
            threads = getattr(state, "nthreads", None) or getattr(worker, "nthreads", 1)
            device = self.device
            if device is None:
                import torch

                if torch.cuda.is_available() and torch.cuda.device_count() > 1:
                    try:  # LocalCluster names its workers 0..n-1: one GPU each
                        device = f"cuda:{int(worker.name) % torch.cuda.device_count()}"
                    except (TypeError, ValueError):
                        device = None
            load_cached(self.files, device, threads=threads, folder=worker.local_directory)

    return EncoderPlugin


# ------------------------------------------------------------------------------------------------
# one partition
# ------------------------------------------------------------------------------------------------
@dataclass
class EmbedTask:
    """What every partition's task carries (small: the source without its partition list, the weights'
    hash). The weights travel once per worker in the `EncoderPlugin`, which a worker that joins later
    (a restarted one) runs too; a task holds no data that dies with a worker (a scattered object
    would, and then every task depending on it is cancelled)."""

    spec: SourceSpec
    out: str
    weights_sha256: str
    batch_size: int | None = None
    device: str | None = None
    precision: str = "float32"


def embed_partition(task: EmbedTask, part: Partition) -> dict:
    """Read, embed and write one partition (in a worker). Raises LcdashError naming the partition."""
    from lcdash.embed import embed_batch

    target = Path(task.out, part.name, OUTPUT_FILE)
    if target.exists():  # written by an earlier run, or by a worker that died before it reported
        return {**output_counts(target), "partition": part.name, "seconds": 0.0, "skipped": True,
                "worker": _worker_name()}
    t0, c0 = time.monotonic(), time.process_time()
    try:
        frame = read_partition(task.spec, part)
        heads, curves = curves_of(frame, task.spec.keep)
        periods = heads.pop("period").to_numpy(np.float64) if "period" in heads.columns else None
        if task.weights_sha256 not in _MODELS:
            raise ModelError(f"the encoder is not loaded on worker {_worker_name()} (its plugin failed)")
        model, device = _MODELS[task.weights_sha256]
        if curves:
            n_windows, layers = embed_batch(model, curves, batch_size=task.batch_size, device=device,
                                            precision=task.precision, periods=periods)
            _check_finite(heads, layers)
        else:
            n_windows = np.zeros(0, np.int32)
            layers = np.zeros((0, model.cfg.n_layers + 1, model.cfg.d_model), np.float32)
        _atomic_parquet(embeddings_table(heads, n_windows, layers), target)
    except Exception as exc:
        raise LcdashError(f"partition {part.name}: {_one_line(exc)}") from None
    return {"partition": part.name, "rows": int(len(n_windows)), "windows": int(n_windows.sum()),
            "seconds": time.monotonic() - t0, "skipped": False, "worker": _worker_name(),
            "cpu_seconds": time.process_time() - c0}


def output_counts(target: Path) -> dict:
    """{"rows", "windows"} of a partition's output file (its footer and n_windows column)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(target, columns=["n_windows"])
        return {"rows": table.num_rows, "windows": int(np.asarray(table.column("n_windows")).sum())}
    except Exception:  # unreadable: counted as done with unknown rows; import-embeddings names it
        return {"rows": None, "windows": 0}


def _check_finite(heads: pd.DataFrame, layers: np.ndarray) -> None:
    """Refuse a partition whose embeddings are not finite (a time or magnitude out of range for the
    encoder, e.g. 1e300), naming the first such light curve."""
    bad = ~np.isfinite(layers).all(axis=tuple(range(1, layers.ndim)))
    if bad.any():
        row = heads.iloc[int(np.flatnonzero(bad)[0])]
        what = ", ".join(f"{k} {row[k]!r}" for k in ("object_id", "band") if k in heads.columns)
        raise ValidationError(f"{int(bad.sum())} light curve(s) give embeddings that are not finite, e.g. "
                              f"{what} (times or magnitudes out of the encoder's range?)")


def _worker_name() -> str | None:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return None


def embeddings_table(heads: pd.DataFrame, n_windows: np.ndarray, layers: np.ndarray):
    """Arrow table: the key columns, n_windows int32 and layer_<l> list<float32> (embed-file's format)."""
    import pyarrow as pa

    cols: dict = {}
    for k in heads.columns:
        v = heads[k]
        if k == "oid":
            cols[k] = pa.array(v.to_numpy(np.int64))
        elif k in ("band", "survey"):
            cols[k] = pa.array(v.astype(str).tolist(), pa.string())
        else:
            cols[k] = pa.array(v.tolist() if v.dtype == object else v.to_numpy())
    cols["n_windows"] = pa.array(np.asarray(n_windows, np.int32))
    n, n_layers, d = layers.shape
    for lay in range(n_layers):
        flat = pa.array(np.ascontiguousarray(layers[:, lay]).reshape(-1), pa.float32())
        cols[f"layer_{lay}"] = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * d), flat)
    return pa.table(cols)


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------
@dataclass
class CatalogResult:
    out: str
    partitions: int
    done: list[str]
    skipped: list[str]
    failed: dict[str, str]
    rows: int
    windows: int
    seconds: float
    workers: int
    per_worker: dict = field(default_factory=dict)  # worker name -> light curves it embedded

    @property
    def lc_per_s(self) -> float | None:
        return self.rows / self.seconds if self.seconds > 0 and self.rows else None


def default_workers() -> int:
    """One worker process per GPU when there are GPUs, else one per core (each 1 thread)."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device_count()
    except ImportError:  # pragma: no cover
        pass
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _check_manifest(out: Path, manifest: dict) -> None:
    path = out / MANIFEST
    if not path.exists():
        return
    old = json.loads(path.read_text())
    for key, what in (("weights_sha256", "encoder"), ("source", "source")):
        if old.get(key) != manifest.get(key):
            raise ValidationError(f"{out} holds embeddings of another {what} ({old.get(key)}); "
                                  "choose another --out or empty it")


#: The temporary files `_atomic_parquet` writes (`.part-0.parquet.<uuid>.tmp`, which a killed run
#: leaves) in the partition folders of this run: nothing else is removed.
TMP_RE = r"\." + OUTPUT_FILE.replace(".", r"\.") + r"\.[0-9A-Za-z_-]+\.tmp"


def _clean_tmp(out: Path, spec: SourceSpec) -> None:
    """Remove the temporary files an earlier, killed run of this command left in the partition folders
    it writes; any other file under OUT (the user's `.notes.tmp`) stays."""
    import re

    root = out.resolve()
    for folder in {(out / p.name) for p in spec.partitions}:
        if not folder.is_dir() or not folder.resolve().is_relative_to(root):
            continue
        for f in folder.iterdir():
            if re.fullmatch(TMP_RE, f.name) and f.is_file():
                f.unlink()


def embed_catalog(
    source: str | os.PathLike,
    model_dir: str | os.PathLike,
    out: str | os.PathLike,
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    mapping: dict | None = None,
    nested: str | None = None,
    survey: str | None = None,
    band: str | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    precision: str = "float32",
    retries: int = 2,
    chunk_size: int = 5000,
    show_progress: bool = False,
    log: Callable[[str], None] | None = None,
    progress: Callable | None = None,
) -> CatalogResult:
    """Embed every light curve of SOURCE with the encoder in `model_dir` into OUT on a Dask cluster:
    `client` (a distributed.Client), else `scheduler` (an address), else a LocalCluster of `workers`
    processes (default `default_workers()`), one thread each. SOURCE may also be a `SourceSpec`
    already opened (the app exports its own store before a job starts). `progress(done, total,
    message)` is called as partitions finish (an exception it raises, e.g. a cancelled job, stops the
    run; what finished is kept)."""
    _check_options(out, workers, batch_size, device, retries, chunk_size)
    model_dir = Path(model_dir)
    files = encoder_files(model_dir)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValidationError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from exc
    say = log or (lambda s: None)
    if isinstance(source, SourceSpec):
        spec = source
    else:
        spec = open_source(source, mapping, nested, out=out, survey=survey, band=band, chunk_size=chunk_size)
    source_path = spec.path if isinstance(source, SourceSpec) else str(Path(source).resolve())
    cfg = json.loads(files["config.json"]) if "config.json" in files else {}
    manifest = {"format": 1, "source": source_path, "source_spec": spec.describe(),
                "model": str(model_dir.resolve()), "weights_sha256": _sha(files),
                "model_config": cfg.get("model", cfg), "partitions": [p.name for p in spec.partitions]}
    _check_manifest(out, manifest)
    (out / MANIFEST).write_text(json.dumps({**manifest, "failed": {}}, indent=1))
    _clean_tmp(out, spec)
    todo = [p for p in spec.partitions if not (out / p.name / OUTPUT_FILE).exists()]
    skipped = [p.name for p in spec.partitions if p not in todo]
    say(f"{len(spec.partitions)} partitions in {source_path} ({spec.kind}); {len(skipped)} already done")
    result = CatalogResult(str(out), len(spec.partitions), [], skipped, {}, 0, 0, 0.0, 0)
    if not todo:
        return result

    try:
        import logging
        import warnings

        from distributed import Client, LocalCluster, wait
        from distributed.utils import silence_logging_cmgr
    except ImportError as exc:
        raise LcdashError("embed-catalog runs on Dask distributed, which is not installed "
                          "(pip install -r requirements.txt)") from exc

    cluster = own_client = None
    # Dask's own log lines (a worker's traceback, a restarted worker, a lost task) are not the user's
    # messages: what failed is reported per partition, in one line each
    with silence_logging_cmgr(logging.CRITICAL):
        if client is None:
            if scheduler:
                try:
                    client = own_client = Client(scheduler, timeout="30s")
                except Exception as exc:
                    raise LcdashError(f"cannot reach the Dask scheduler at {scheduler} "
                                      f"({_one_line(exc)})") from exc
            else:
                n = int(workers or default_workers())
                with warnings.catch_warnings():  # "Port 8787 is already in use" (another cluster's)
                    warnings.filterwarnings("ignore", message="Port .* is already in use")
                    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.CRITICAL)
                client = own_client = Client(cluster)
        try:
            n_workers = len(client.scheduler_info(n_workers=-1)["workers"]) if _takes_n_workers(client) \
                else len(client.scheduler_info()["workers"])
            result.workers = n_workers
            say(f"embedding {len(todo)} partitions on {n_workers} Dask workers ({client.scheduler.address})")
            plugin = _worker_plugin_class()(files, device)
            try:
                client.register_plugin(plugin, name=f"lcdash-encoder-{_sha(files)[:12]}")
            except Exception as exc:
                raise ModelError(f"the Dask workers cannot load the encoder {model_dir} "
                                 f"({_one_line(exc)})") from exc
            # the source without its partition list: each task names its own partition
            task = EmbedTask(replace(spec, partitions=[]), str(out.resolve()), _sha(files), batch_size,
                             device, precision)
            token = uuid.uuid4().hex[:8]
            t0 = time.monotonic()
            futures = {client.submit(embed_partition, task, p, key=f"lcdash-embed-{p.name}-{token}",
                                     retries=retries, pure=False): p for p in todo}
            if show_progress:
                from distributed import progress as dask_progress

                # this client's scheduler: the default client (another cluster's, in a notebook or
                # a test session) would never see these keys, and the bar would wait forever
                dask_progress(list(futures), scheduler=client.scheduler.address)
            if progress is not None:
                from distributed import as_completed

                progress(0, len(futures), f"0/{len(futures)} partitions on {n_workers} Dask workers")
                for k, _ in enumerate(as_completed(list(futures)), 1):
                    progress(k, len(futures), f"{k}/{len(futures)} partitions on {n_workers} Dask workers")
            wait(list(futures))
            result.seconds = time.monotonic() - t0
            for fut, p in futures.items():
                _collect(result, fut, p, out)
        finally:
            if own_client is not None:
                own_client.close()
            if cluster is not None:
                cluster.close()
    (out / MANIFEST).write_text(json.dumps({**manifest, "failed": result.failed}, indent=1))
    return result


def _check_options(out, workers, batch_size, device, retries, chunk_size) -> None:
    """One line for each option out of range, before anything is written or started."""
    import re

    if Path(out).exists() and not Path(out).is_dir():
        raise ValidationError(f"--out {out}: a file, not a folder; name a new or an embed-catalog folder")
    for name, value, low in (("--workers", workers, 1), ("--batch-size", batch_size, 1),
                             ("--chunk-size", chunk_size, 1), ("--retries", retries, 0)):
        if value is not None and (not isinstance(value, int | np.integer) or value < low):
            raise ValidationError(f"{name} {value!r}: must be a whole number of at least {low}")
    if device is not None and not re.fullmatch(DEVICE_RE, str(device)):
        raise ValidationError(f"--device {device!r}: not a device lcdash runs on (cpu, cuda, cuda:N or mps)")


def _collect(result: CatalogResult, fut, part: Partition, out: Path) -> None:
    """Count one partition's future: done (its record, or its file when the record was lost with the
    worker that wrote it), or failed with one line."""
    record = None
    if fut.status == "finished":
        try:
            record = fut.result()
        except Exception:  # the result was lost with its worker after it finished
            record = None
    if record is None and (out / part.name / OUTPUT_FILE).exists():
        record = {**output_counts(out / part.name / OUTPUT_FILE), "worker": None}
    if record is not None:
        result.done.append(part.name)
        rows = record.get("rows") or 0
        result.rows += rows
        result.windows += record.get("windows") or 0
        worker = record.get("worker")
        result.per_worker[worker] = result.per_worker.get(worker, 0) + rows
        return
    result.failed[part.name] = _failure(fut, part)


def _failure(fut, part: Partition) -> str:
    """Why a partition's future did not finish, in one line."""
    if fut.status == "cancelled":
        return "cancelled by the Dask cluster (its workers or scheduler were lost); run again to retry it"
    try:
        exc = fut.exception()
    except Exception as err:  # the scheduler forgot it
        return f"lost by the Dask cluster ({_one_line(err)}); run again to retry it"
    if type(exc).__name__ == "KilledWorker":
        return ("every worker that ran it died (out of memory?); it was tried on several workers; "
                "run again with fewer --workers or a smaller --chunk-size")
    msg = str(exc) if isinstance(exc, LcdashError) else f"partition {part.name}: {_one_line(exc)}"
    return msg.removeprefix(f"partition {part.name}: ")


def _takes_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


# ------------------------------------------------------------------------------------------------
# reading the output
# ------------------------------------------------------------------------------------------------
def read_manifest(out: str | os.PathLike) -> dict:
    """The manifest of an embed-catalog output, checked: a JSON object whose `partitions` are distinct
    relative folder names inside OUT (no absolute path, no `..`, no link out of it)."""
    out = Path(out)
    path = out / MANIFEST
    if not path.is_file():
        raise ValidationError(f"{out}: not an embed-catalog output (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValidationError(f"{path}: not a readable manifest ({_one_line(exc)})") from exc
    if not isinstance(manifest, dict):
        raise ValidationError(f"{path}: not a manifest (a JSON object is expected)")
    parts = manifest.get("partitions")
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise ValidationError(f"{path}: 'partitions' must be a list of partition folder names")
    root = out.resolve()
    for name in parts:
        rel = Path(name)
        if (not name or "\x00" in name or rel.is_absolute() or ".." in rel.parts
                or not (out / rel / OUTPUT_FILE).resolve().is_relative_to(root)):
            raise ValidationError(f"{path}: partition {name!r} is not a folder inside {out}")
    dup = next((p for p in parts if parts.count(p) > 1), None) if len(set(parts)) < len(parts) else None
    if dup is not None:
        raise ValidationError(f"{path}: partition {dup!r} is listed twice")
    return manifest


def iter_output(out: str | os.PathLike):
    """(partition name, Arrow table) of each finished partition of an embed-catalog output."""
    out = Path(out)
    for name in read_manifest(out)["partitions"]:
        f = out / name / OUTPUT_FILE
        if f.exists():
            yield name, _read_output(f, name)


def _read_output(f: Path, part: str):
    import pyarrow.parquet as pq

    try:
        return pq.read_table(f)
    except Exception as exc:
        raise ValidationError(f"partition {part}: {f} is not a readable Parquet file "
                              f"({_one_line(exc)})") from exc


def layer_columns(table) -> list[str]:
    """layer_0 .. layer_L of an output table, in order; anything else named layer_* is an error."""
    import re

    names = [c for c in table.column_names if c.startswith("layer_")]
    bad = [c for c in names if not re.fullmatch(r"layer_(0|[1-9]\d{0,3})", c)]
    if bad:
        raise ValidationError(f"column {bad[0]!r} is not a layer column (layer_0 .. layer_L)")
    names.sort(key=lambda c: int(c[6:]))
    if [int(c[6:]) for c in names] != list(range(len(names))):
        raise ValidationError(f"layer columns {names[:8]} are not layer_0 .. layer_{len(names) - 1}")
    return names


def layers_of(table, shape: tuple[int, int] | None = None) -> np.ndarray:
    """[N, L+1, d] float32 from an output table's layer_<l> columns: each a list of d numbers a row,
    no nulls (`shape` = (L+1, d) when it is known: the encoder's)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = layer_columns(table)
    n = table.num_rows
    if shape is not None and len(names) != shape[0]:
        raise ValidationError(f"{len(names)} layer columns, the encoder has {shape[0]} (layer_0 .. "
                              f"layer_{shape[0] - 1})")
    if n == 0:
        return np.zeros((0, len(names), shape[1] if shape else 0), np.float32)
    mats = []
    for c in names:
        col = table.column(c).combine_chunks()
        typ = col.type
        if not (pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ)) \
                or not (pa.types.is_floating(typ.value_type) or pa.types.is_integer(typ.value_type)):
            raise ValidationError(f"column {c!r} is {typ}, not a list of numbers")
        if col.null_count:
            raise ValidationError(f"column {c!r}: {col.null_count} row(s) have no vector")
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        d = shape[1] if shape is not None else int(lengths[0])
        if (lengths != d).any():
            i = int(np.flatnonzero(lengths != d)[0])
            raise ValidationError(f"column {c!r}: row {i} has {int(lengths[i])} values, expected {d}")
        values = col.flatten() if not pa.types.is_fixed_size_list(typ) else col.values
        if values.null_count:
            raise ValidationError(f"column {c!r}: {values.null_count} missing value(s) in its vectors")
        with np.errstate(over="ignore"):
            mats.append(values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, d))
    return np.stack(mats, 1)


def _weights_of(path: Path) -> str | None:
    from lcdash.store.embeddings import weights_sha256

    return weights_sha256(path)


def _import_encoder(store, name: str, model_dir, manifest: dict, out: Path
                    ) -> tuple[tuple[int, int], Path | None]:
    """((L+1, d) of the encoder, the folder to register or None when `name` is registered), after
    checking that the encoder's weights are the ones that made the output."""
    from lcdash.jsonio import read_encoder_config
    from lcdash.store.embeddings import get_encoder

    made_by = manifest.get("weights_sha256")
    if not isinstance(made_by, str) or len(made_by) != 64:
        raise ValidationError(f"{out / MANIFEST}: no weights_sha256: which encoder made it is unknown")
    try:
        enc = get_encoder(store, name)
    except ModelError:
        enc = None
    if model_dir is not None:
        given = Path(model_dir)
        sha = _weights_of(given)
        if sha is None:
            raise ModelError(f"--model {given}: not an encoder folder (no model.safetensors)")
        if sha != made_by:
            raise ModelError(f"--model {given} has other weights (sha256 {sha[:12]}) than the encoder "
                             f"that made {out} ({made_by[:12]})")
    if enc is not None:
        stored = enc["config"].get("weights_sha256") or _weights_of(Path(enc["path"]))
        if stored != made_by:
            raise ModelError(f"encoder {name!r} in the store has other weights (sha256 "
                             f"{str(stored)[:12]}) than the encoder that made {out} ({made_by[:12]}); "
                             "import under another --name")
        return (int(enc["n_layers"]) + 1, int(enc["d_model"])), None
    folder = Path(model_dir) if model_dir is not None else Path(str(manifest.get("model", "")))
    sha = _weights_of(folder) if str(folder) else None
    if sha is None:
        raise ModelError(f"encoder {name!r} is not in the store and the encoder that made {out} is not at "
                         f"{folder}; give its folder with --model")
    if sha != made_by:
        raise ModelError(f"the encoder at {folder} now has other weights (sha256 {sha[:12]}) than the one "
                         f"that made {out} ({made_by[:12]}); give the right folder with --model")
    cfg = read_encoder_config(folder).get("config")
    if not isinstance(cfg, dict) or not {"n_layers", "d_model"} <= set(cfg):
        raise ModelError(f"{folder}/config.json lacks the model configuration (n_layers, d_model)")
    return (int(cfg["n_layers"]) + 1, int(cfg["d_model"])), folder


@dataclass
class _Checked:
    oids: np.ndarray
    bands: list
    n_windows: np.ndarray
    layers: np.ndarray
    absent: int


def _check_partition(table, part: str, shape, by_id: pd.DataFrame, lc_keys: pd.MultiIndex,
                     survey: str | None, missing: str) -> _Checked:
    """Every row of one output partition, checked against the encoder and the store: the key columns,
    n_windows (whole, >= 0), the vectors (shape, finite), objects the store holds and bands they have."""
    import pyarrow as pa

    for col in ("object_id", "n_windows"):
        if col not in table.column_names:
            raise ValidationError(f"no {col!r} column (columns: {table.column_names[:12]})")
    keys = [c for c in ("object_id", "band", "survey") if c in table.column_names]
    for col in keys:
        if table.column(col).null_count:
            raise ValidationError(f"column {col!r}: {table.column(col).null_count} row(s) are empty")
    nw = table.column("n_windows")
    if not pa.types.is_integer(nw.type):
        raise ValidationError(f"column 'n_windows' is {nw.type}, not whole numbers")
    if nw.null_count:
        raise ValidationError(f"column 'n_windows': {nw.null_count} row(s) are empty")
    n_windows = nw.to_numpy().astype(np.int64)
    if n_windows.size and (n_windows.min() < 0 or n_windows.max() > np.iinfo(np.int32).max):
        i = int(np.flatnonzero((n_windows < 0) | (n_windows > np.iinfo(np.int32).max))[0])
        raise ValidationError(f"row {i}: n_windows {int(n_windows[i])} is not a window count")
    layers = layers_of(table, shape)
    bad = ~np.isfinite(layers).all(axis=(1, 2))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValidationError(f"{int(bad.sum())} vector(s) hold NaN or infinite values (e.g. row {i}, "
                              f"object {table.column('object_id')[i].as_py()!r})")
    df = table.select(keys).to_pandas()  # a source store's oid need not be this store's
    for col in keys:
        df[col] = df[col].astype(str)
    on = ["object_id"] + (["survey"] if "survey" in df.columns and survey is None else [])
    hit = df.merge(by_id, on=on, how="left", validate="many_to_one")
    absent = hit["oid"].isna().to_numpy()
    if absent.any() and missing == "error":
        raise ValidationError(f"{int(absent.sum())} object(s) are not in the store, "
                              f"e.g. {df['object_id'][absent].iloc[0]!r} (use --skip-missing)")
    keep = ~absent
    oids = hit["oid"].to_numpy()[keep].astype(np.int64)
    if "band" in hit.columns:
        bands = hit["band"].to_numpy(object)[keep]
        known = pd.MultiIndex.from_arrays([oids, bands]).isin(lc_keys)
        if not known.all():
            i = int(np.flatnonzero(~known)[0])
            raise ValidationError(f"object {hit['object_id'][keep].iloc[i]!r} has no band {bands[i]!r} in "
                                  f"the store; {int((~known).sum())} such row(s)")
        bands = bands.tolist()
    else:  # no band in the source: each object's first band in the store
        bands = [(list(b)[0] if b is not None and len(b) else "default") for b in hit["bands"][keep]]
    dup = pd.DataFrame({"oid": oids, "band": bands}).duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ValidationError(f"object oid {oids[i]} band {bands[i]!r} is in it twice")
    return _Checked(oids, bands, n_windows[keep].astype(np.int32), layers[keep], int(absent.sum()))


#: import-embeddings commits once up to this many rows (all or nothing); above, once every this many
#: rows (DuckDB holds what a transaction wrote in memory until COMMIT), after checking everything.
IMPORT_COMMIT_ROWS = 200_000


def import_embeddings(store, out: str | os.PathLike, name: str, model_dir: str | os.PathLike | None = None,
                      survey: str | None = None, missing: str = "error",
                      progress: Callable | None = None) -> dict:
    """Bring an embed-catalog output into the store as encoder `name` (registered from the output's
    encoder folder, or `model_dir`, when it is not yet). Objects are matched by (survey, object_id);
    rows replace rows with the same keys, so importing twice adds nothing. missing="skip" leaves out
    objects the store does not hold.

    Everything is checked before anything is written, so a failure leaves the store as it was: the
    manifest (partition names inside OUT), the encoder (its weights are the ones that made OUT: a
    registered name with other weights is refused), and every partition (object_id and n_windows
    columns, n_windows whole and >= 0, layer_0..layer_L as the encoder's shape, finite values, objects
    the store holds, bands they have, no (object, band) twice). Then one transaction writes it all (up
    to IMPORT_COMMIT_ROWS rows; above, one every IMPORT_COMMIT_ROWS rows: an interrupted large import
    is finished by running it again)."""
    from lcdash.store.embeddings import register_encoder, save_embeddings

    out = Path(out)
    manifest = read_manifest(out)
    shape, register = _import_encoder(store, name, model_dir, manifest, out)
    objs = store.objects(survey=survey, columns=["oid", "object_id", "survey", "bands"])
    by_id = objs.assign(object_id=objs["object_id"].astype(str))
    ids_repeat = survey is None and bool(by_id["object_id"].duplicated().any())
    nb = np.array([0 if b is None else len(b) for b in objs["bands"]], np.int64)
    lc_keys = pd.MultiIndex.from_arrays([np.repeat(objs["oid"].to_numpy(np.int64), nb),
                                         [str(b) for bs in objs["bands"] if bs is not None for b in bs]])
    names = manifest["partitions"]
    total = len(names)
    present = [(k, p, out / p / OUTPUT_FILE) for k, p in enumerate(names)
               if (out / p / OUTPUT_FILE).is_file()]

    def check(part: str, f: Path) -> _Checked:
        table = _read_output(f, part)
        if ids_repeat and "survey" not in table.column_names:
            raise ValidationError("object ids repeat across the store's surveys; name one with --survey")
        try:
            return _check_partition(table, part, shape, by_id, lc_keys, survey, missing)
        except ValidationError as exc:
            raise ValidationError(f"partition {part}: {exc}") from exc

    # 1. check everything, write nothing
    seen: dict[tuple, str] = {}
    stamps = {}
    for k, part, f in present:
        stamps[part] = (f.stat().st_size, f.stat().st_mtime_ns)
        c = check(part, f)
        for key in zip(c.oids.tolist(), c.bands, strict=True):
            if key in seen:
                raise ValidationError(f"object oid {key[0]} band {key[1]!r} is in partitions {seen[key]} and "
                                      f"{part}: an object's observations must lie in one partition")
            seen[key] = part
        if progress is not None:
            progress(k + 1, 2 * total, f"checked {k + 1}/{total} partitions")
    n_rows = len(seen)
    del seen
    # 2. write: one transaction (or one per IMPORT_COMMIT_ROWS rows)
    rows = skipped = done = 0
    pending: list[tuple[str, Path]] = []

    def flush(batch) -> None:
        nonlocal rows, skipped, done
        with store.transaction() as cur:
            if register is not None and done == 0:
                register_encoder(store, name, register, cursor=cur)
            for part, f in batch:
                if (f.stat().st_size, f.stat().st_mtime_ns) != stamps[part]:
                    raise ValidationError(f"partition {part}: {f} changed during the import; run it again")
                c = check(part, f)
                if c.oids.size:
                    rows += save_embeddings(store, name, c.oids, c.bands, c.n_windows, c.layers, cursor=cur)
                skipped += c.absent
        done += len(batch)

    batch_rows = 0
    for k, part, f in present:
        pending.append((part, f))
        batch_rows += _rows_in(f)
        if batch_rows >= IMPORT_COMMIT_ROWS and n_rows > IMPORT_COMMIT_ROWS:
            _flush_honestly(flush, pending, done, len(present))
            pending, batch_rows = [], 0
        if progress is not None:
            progress(total + k + 1, 2 * total, f"imported {k + 1}/{total} partitions")
    if pending or (register is not None and done == 0):
        _flush_honestly(flush, pending, done, len(present))
    return {"encoder": name, "rows": rows, "partitions": done, "missing_partitions": total - done,
            "skipped_objects": skipped}


def _rows_in(f: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(f).metadata.num_rows


def _flush_honestly(flush, batch, done: int, total: int) -> None:
    """Write one batch; a failure after earlier batches were committed says so."""
    try:
        flush(batch)
    except LcdashError as exc:
        if done:
            raise type(exc)(f"{exc}; {done} of {total} partitions were imported before it (importing again "
                            "finishes it)") from exc
        raise
