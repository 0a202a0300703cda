"""Streaming ingest of a partitioned Parquet dataset: one partition in memory at a time.

A survey of a million light curves is hundreds of millions of observations: reading it whole into
pandas (as `lcdash.io.read_inputs` does for ordinary inputs) needs tens of GB. A dataset is instead
read with pyarrow one partition at a time (a hive folder `part=3/`, or one file), validated
(`lcdash.io.prepare`) and written (`lcdash.store.ingest.ingest`) inside ONE transaction, so the
project's rule holds at any size: the whole dataset goes in or nothing does, and a partition that
cannot be read or validated is named in the error. DuckDB writes the transaction's rows to the file
as it goes (its memory limit bounds the rest), so memory is one partition plus the catalogue.

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
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd

from lcdash.errors import LcdashError, ValidationError, one_line
from lcdash.store.ingest import IngestReport, _transaction

SUFFIXES = (".parquet", ".parq", ".pq")


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
) -> IngestReport:
    """Ingest the Parquet dataset at `path` partition by partition in one transaction (the caller's,
    `cursor`, or a new one). `objects`: the catalogue (default: `path/objects.parquet` when present);
    `mapping` etc. as for `lcdash.io.prepare`; `survey` as for `Store.ingest`. Any failure rolls
    everything back and names the partition. `set_survey`: every object's survey, replacing the
    catalogue's survey column (`lcdash ingest --survey`). store=None validates without writing (a dry run).
    progress(done partitions, partitions, message)."""
    from lcdash.io import prepare

    t0 = _time.perf_counter()
    parts, cat_file = partitions(path)
    if objects is None and cat_file is not None:
        objects = _read_catalogue(cat_file)
    cat_index = None
    if objects is not None:
        id_col = (dict(objects_mapping or {}).get("object_id") or "object_id")
        if id_col not in objects.columns:
            from lcdash.io import guess_mapping

            id_col = guess_mapping(objects.columns).get("object_id")
        if id_col is None or id_col not in objects.columns:
            raise ValidationError(f"{cat_file or 'objects table'}: no object id column "
                                  f"(columns: {list(objects.columns)})")
        cat_index = pd.Index(objects[id_col].astype(str))
    total = IngestReport()
    surveys: set[str] = set()
    with _transaction(store, cursor) if store is not None else nullcontext() as cur:
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
                if store is None:  # a dry run: validated, not written
                    rep = IngestReport(surveys=[survey] if survey else [], objects_new=len(objs),
                                       observations_new=len(obs))
                else:
                    rep = store.ingest(obs, objs, survey=survey, synthetic=synthetic, validation=report,
                                       cursor=cur)
            except LcdashError as exc:
                raise type(exc)(f"{where}: {exc}") from exc
            except Exception as exc:  # a corrupt file, a DuckDB failure: one line, the partition named
                raise LcdashError(f"{where}: {one_line(exc)}") from exc
            surveys.update(rep.surveys)
            for field in ("objects_new", "objects_existing", "lightcurves_new", "lightcurves_merged",
                          "observations_new", "observations_present"):
                setattr(total, field, getattr(total, field) + getattr(rep, field))
    if progress is not None:
        progress(len(parts), len(parts), "done")
    total.surveys = sorted(surveys)
    total.seconds = _time.perf_counter() - t0
    return total


def _ids(frame: pd.DataFrame, mapping) -> pd.Series | None:
    from lcdash.io import guess_mapping

    col = dict(mapping or {}).get("object_id") or guess_mapping(frame.columns).get("object_id")
    return frame[col].astype(str) if col in frame.columns else None
