"""Streaming ingest of a partitioned Parquet dataset: one partition in memory at a time.

A survey of a million light curves is hundreds of millions of observations: reading it whole into
pandas (as `lcdash.io.read_inputs` does for ordinary inputs) needs tens of GB. A dataset is instead
read with pyarrow one partition at a time (a hive folder `part=3/`, or one file), validated
(`lcdash.io.prepare`) and written INSERT_ROWS light curves at a time (DuckDB writes an INSERT of a
full row group straight to the file; smaller ones stay in memory until COMMIT). Up to COMMIT_ROWS
observations it is all one transaction; above, one transaction per batch, because DuckDB holds what a
transaction wrote in memory until COMMIT (8.6 GB measured for a million light curves in one), with an
undo log (`lcdash.store.undo`) that a failure, or the next open of the store after the process was
killed, plays back: either way the whole dataset goes in or nothing does, and a partition that cannot
be read or validated is named in the error.

Layout (what `lcdash demo --out-parquet` writes and `lcdash embed-catalog` reads):
`DIR/observations/<partition>/*.parquet` (+ `DIR/objects.parquet`, the catalogue), or a folder of
Parquet files / hive folders directly. An object's rows should lie in one partition; an object
split over several is merged (the ingest's merge rule), not duplicated.

DuckDB's own Parquet reader is not used: store connections have external access switched off
(`lcdash.store.duckdb_config`).
"""

from __future__ import annotations

import time as _time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from lcdash.errors import LcdashError, ValidationError, one_line
from lcdash.store import undo
from lcdash.store.ingest import IngestReport, _objects_table, _series_table, _transaction, _write

SUFFIXES = (".parquet", ".parq", ".pq")
#: Light curves per INSERT: DuckDB writes an INSERT of at least one row group (122,880 rows) to the
#: file before COMMIT; smaller ones stay in memory until COMMIT (a million light curves: > 6 GB).
INSERT_ROWS = 131_072
#: Above this many observations (Parquet footers) an ingest that is not part of a caller's transaction
#: commits every INSERT_ROWS light curves: DuckDB keeps what a transaction wrote in memory until its
#: COMMIT, ~35 bytes an observation (8.6 GB for a million light curves of 230 observations in one).
COMMIT_ROWS = 20_000_000


def is_dataset(path: str | Path) -> bool:
    """True for a folder holding an `observations/` folder of Parquet files."""
    obs = Path(path) / "observations"
    return obs.is_dir() and bool(_files(obs))


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in SUFFIXES
                  and not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts))


def partitions(path: str | Path) -> tuple[list[tuple[str, list[Path]]], Path | None]:
    """([(partition name, files)], catalogue file or None) of a dataset folder. Files in one hive
    folder are one partition; loose files are one each."""
    root = Path(path)
    obs = root / "observations" if (root / "observations").is_dir() else root
    catalogue = next((root / f"objects{s}" for s in SUFFIXES if (root / f"objects{s}").is_file()), None)
    files = [f for f in _files(obs) if f != catalogue]
    if not files:
        raise ValidationError(f"{obs}: no Parquet files")
    groups: dict[str, list[Path]] = {}
    for f in files:
        rel = f.relative_to(obs)
        hive = [p for p in rel.parts[:-1] if "=" in p]
        name = "/".join(hive) if hive and len(hive) == len(rel.parts) - 1 else str(rel)
        groups.setdefault(name, []).append(f)
    return sorted(groups.items()), catalogue


def _read(files: list[Path]) -> pd.DataFrame:
    """One partition as pandas; its size is checked from the footers first (`lcdash.io.MAX_ROWS`, the
    limit of one ingest, applies to each partition: what one step holds in memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lcdash.io import MAX_ROWS

    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if rows > MAX_ROWS:
        raise ValidationError(f"{rows:,} rows, more than {MAX_ROWS:,} in one partition; split it")
    tables = [pq.read_table(f) for f in files]
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")
    return table.to_pandas()


def _read_catalogue(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        cat = pq.read_table(path).to_pandas()
    except Exception as exc:
        raise ValidationError(f"{path}: cannot read the objects table ({one_line(exc)})") from exc
    return cat


def ingest_dataset(
    store,
    path: str | Path,
    survey: str | None = None,
    *,
    objects: pd.DataFrame | None = None,
    mapping: Mapping[str, str | None] | None = None,
    objects_mapping: Mapping[str, str | None] | None = None,
    band: str | None = None,
    min_obs: int = 5,
    duplicates: str = "average",
    synthetic: bool = False,
    set_survey: str | None = None,
    progress=None,
    cursor=None,
    commit_rows: int | None = None,
) -> IngestReport:
    """Ingest the Parquet dataset at `path` partition by partition: in one transaction (the caller's,
    `cursor`, or a new one) up to `commit_rows` observations (default COMMIT_ROWS), else in
    several transactions of about INSERT_ROWS light curves each, undone on failure (see COMMIT_ROWS).
    `objects`: the catalogue (default: `path/objects.parquet` when present); `mapping` etc. as for
    `lcdash.io.prepare`; `survey` as for `Store.ingest`; `set_survey`: every object's survey,
    replacing the catalogue's survey column (`lcdash ingest --survey`). A failure leaves the store as
    it was and names the partition. store=None validates without writing (a dry run).
    progress(done partitions, partitions, message)."""
    t0 = _time.perf_counter()
    parts, cat_file = partitions(path)
    if objects is None and cat_file is not None:
        objects = _read_catalogue(cat_file)
    batches = _batches(parts, cat_file, objects, mapping, objects_mapping, band, min_obs, duplicates,
                       synthetic, survey, set_survey, dry_run=store is None, progress=progress)
    total = IngestReport()
    if store is None:
        for objs, obs in batches:  # a dry run: validated, not written
            total.objects_new += objs
            total.observations_new += obs
        total.surveys = [set_survey or survey] if (set_survey or survey) else []
    elif cursor is not None or _footer_rows(parts) <= (COMMIT_ROWS if commit_rows is None else commit_rows):
        with _transaction(store, cursor) as cur:
            for batch, where in batches:
                _add(total, _write_batch(store, batch, where, objects is not None, cur))
    else:
        _chunked(store, batches, objects is not None, total, source=str(path))
    if progress is not None:
        progress(len(parts), len(parts), "done")
    total.seconds = _time.perf_counter() - t0
    return total


def _footer_rows(parts) -> int:
    import pyarrow.parquet as pq

    rows = 0
    for _, files in parts:
        for f in files:
            try:
                rows += pq.ParquetFile(f).metadata.num_rows
            except Exception:  # a corrupt file: its partition fails, named, when it is read
                pass
    return rows


def _chunked(store, batches, catalogue: bool, total: IngestReport, source: str = "") -> None:
    """One transaction per batch, so memory stays bounded (DuckDB holds what a transaction wrote until
    its COMMIT: measured 8.6 GB for a million light curves in one). All or nothing still, also when the
    process is killed: a first transaction commits an undo log (`lcdash.store.undo`: the largest oid
    before, and the stored rows each batch changes, saved before it changes them), the last one drops
    it. A failure here undoes the committed batches at once; a killed process leaves the log, and the
    next read-write open of the store (`Store`) undoes them."""
    log = undo.begin(store, source)
    try:
        for batch, where in batches:
            with store.transaction() as cur:
                _add(total, _write_batch(store, batch, where, catalogue, cur, log))
        undo.finish(store, log)
    except BaseException as exc:
        try:
            undo.undo(store, log)
        except Exception as undo_exc:  # the store is left with its undo log: the next open undoes it
            if isinstance(exc, LcdashError):
                err = type(exc)(f"{exc}; the batches written before the failure could not be undone now "
                                f"({one_line(undo_exc)}): the next read-write open of the store undoes them")
                err.undo_pending = True  # the CLI must not say "nothing was ingested" yet
                raise err from exc
            raise exc from undo_exc
        raise


def _add(total: IngestReport, rep: IngestReport) -> None:
    total.surveys = sorted(set(total.surveys) | set(rep.surveys))
    for field in ("objects_new", "objects_existing", "lightcurves_new", "lightcurves_merged",
                  "observations_new", "observations_present"):
        setattr(total, field, getattr(total, field) + getattr(rep, field))


def _write_batch(store, batch, where: str, catalogue: bool, cur, log=None) -> IngestReport:
    try:
        series = pa.concat_tables([b[0] for b in batch])
        objs = pa.concat_tables([b[2] for b in batch])
        return _write(store, series, sum(b[1] for b in batch), objs, catalogue=catalogue, cursor=cur,
                      undo=log)
    except LcdashError as exc:
        raise type(exc)(f"{where}: {exc}") from exc
    except Exception as exc:  # a DuckDB failure: one line, the partitions named
        raise LcdashError(f"{where}: {one_line(exc)}") from exc


def _batches(parts, cat_file, objects, mapping, objects_mapping, band, min_obs, duplicates, synthetic,
             survey, set_survey, dry_run: bool, progress):
    """Read and validate partition by partition; yield ([(series, observations, objects)], where) of
    at least INSERT_ROWS light curves (or the rest), or, for a dry run, (objects, observations) counts
    per partition. An object met again in a later partition starts a new batch (it is merged there)."""
    from lcdash.io import prepare

    cat_index = None
    if objects is not None:
        id_col = dict(objects_mapping or {}).get("object_id") or "object_id"
        if id_col not in objects.columns:
            from lcdash.io import guess_mapping

            id_col = guess_mapping(objects.columns).get("object_id")
        if id_col is None or id_col not in objects.columns:
            raise ValidationError(f"{cat_file or 'objects table'}: no object id column "
                                  f"(columns: {list(objects.columns)})")
        cat_index = pd.Index(objects[id_col].astype(str))
    pending: list[tuple[pa.Table, int, pa.Table]] = []
    pending_ids: set = set()
    first = None
    for k, (name, files) in enumerate(parts):
        if progress is not None:
            progress(k, len(parts), f"partition {name}")
        where = f"partition {name} ({files[0].parent if len(files) > 1 else files[0]})"
        try:
            frame = _read(files)
            sub = None
            if objects is not None:
                ids = _ids(frame, mapping)
                pos = cat_index.get_indexer(pd.unique(ids)) if ids is not None else np.zeros(0, int)
                sub = objects.iloc[pos[pos >= 0]]
            obs, objs, report = prepare(frame, mapping, objects=sub, objects_mapping=objects_mapping,
                                        objects_name=str(cat_file or "objects table"), band=band,
                                        min_obs=min_obs, duplicates=duplicates, name=name)
            report.raise_if_errors()
            del frame
            if set_survey is not None:
                objs = objs.assign(survey=set_survey)
            if dry_run:
                yield len(objs), len(obs)
                continue
            series, n_rows = _series_table(obs)
            obj_table = _objects_table(series, objs, survey, synthetic)
            del obs
        except LcdashError as exc:
            raise type(exc)(f"{where}: {exc}") from exc
        except Exception as exc:  # a corrupt file: one line, the partition named
            raise LcdashError(f"{where}: {one_line(exc)}") from exc
        keys = set(zip(obj_table.column("survey").to_pylist(), obj_table.column("object_id").to_pylist(),
                       strict=True))
        if pending and not pending_ids.isdisjoint(keys):  # an object split over partitions: merged next
            yield pending, _span(first, name)
            pending, pending_ids = [], set()
        if not pending:
            first = name
        pending.append((series, n_rows, obj_table))
        pending_ids.update(keys)
        if sum(p[0].num_rows for p in pending) >= INSERT_ROWS:
            yield pending, _span(first, name)
            pending, pending_ids = [], set()
    if pending:
        yield pending, _span(first, parts[-1][0])


def _span(first: str, last: str) -> str:
    return f"partition {first}" if first == last else f"partitions {first} to {last}"


def _ids(frame: pd.DataFrame, mapping) -> pd.Series | None:
    from lcdash.io import guess_mapping

    col = dict(mapping or {}).get("object_id") or guess_mapping(frame.columns).get("object_id")
    return frame[col].astype(str) if col in frame.columns else None
