"""Data commands: demo, ingest, sql, info."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lcdash.errors import LcdashError
from lcdash.progress import TqdmProgress


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="create a store holding a synthetic demo survey")
    p.add_argument("--db", help="store file (created if missing)")
    p.add_argument("--out-parquet", metavar="DIR",
                   help="instead of a store, stream the survey to a partitioned Parquet dataset in DIR "
                   "(bounded memory, any --n-objects; input for embed-catalog)")
    p.add_argument("--out-hats", metavar="DIR",
                   help="instead, stream it to a HATS catalogue (nested lightcurve column; needs hats)")
    p.add_argument("--partition-size", type=int, default=10_000,
                   help="objects per Parquet partition (about per HEALPix pixel for --out-hats)")
    p.add_argument("--n-objects", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bands", nargs="+", default=None, help="band names (default: the simulator's)")
    p.set_defaults(func=cmd_demo)

    p = subparsers.add_parser(
        "ingest",
        help="validate and add light curves to a store",
        description="PATH: a folder holding observations.* (+ objects.*), a long table, or files / a "
        "folder / a zip of one file per object (id from the file name). "
        "Formats: CSV, Parquet, FITS, VOTable, ECSV. "
        "One command is one transaction: if any PATH fails, nothing is ingested. "
        "Limits on input size are listed in the README (Ingestion rules).",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--db", required=True, help="store file (created if missing)")
    p.add_argument("--objects", help="objects/labels table (object id, label, period, ra, dec, ...)")
    p.add_argument(
        "--survey",
        help="survey name (default: the objects table's survey column, else the name of the folder or file)",
    )
    p.add_argument(
        "--map",
        nargs="+",
        action="extend",
        default=[],
        metavar="ROLE=COLUMN",
        help="column for a role: object_id, time, mag, mag_err, band, label, period, ra, dec, "
        "survey (e.g. --map time=HJD mag=Vmag); ROLE= switches a role off",
    )
    p.add_argument("--band", help="band name for files without a band column (default: 'default')")
    p.add_argument("--min-obs", type=int, default=5, help="drop light curves with fewer points (default 5)")
    p.add_argument(
        "--duplicates",
        choices=("average", "error"),
        default="average",
        help="rows sharing (object, band, time) with other values: average them or fail",
    )
    p.add_argument(
        "--allow-merge",
        action="store_true",
        help="files without an id column are one object each even when their times repeat or go "
        "backwards, and files of the same name in different folders are one object "
        "(by default both stop the ingest: they are usually several stars)",
    )
    p.add_argument("--dry-run", action="store_true", help="validate and report, write nothing")
    p.set_defaults(func=cmd_ingest)

    p = subparsers.add_parser("sql", help="run one read-only SELECT on a store")
    p.add_argument("query")
    p.add_argument("--db", required=True)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--limit", type=int, default=10_000)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    p.set_defaults(func=cmd_sql)

    p = subparsers.add_parser("info", help="counts of objects, observations, classes and surveys in a store")
    p.add_argument("--db", required=True)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)


def cmd_demo(args) -> int:
    from lcdash.store.demo import create_demo_store

    if sum(map(bool, (args.db, args.out_parquet, args.out_hats))) != 1:
        raise LcdashError("give one of --db (a store), --out-parquet (a Parquet dataset) or --out-hats")
    if args.out_parquet or args.out_hats:
        from lcdash import simulate

        write, path = ((simulate.write_survey_parquet, args.out_parquet) if args.out_parquet
                       else (simulate.write_survey_hats, args.out_hats))
        progress = TqdmProgress("demo", leave=False)
        try:
            kw = {"bands": tuple(args.bands)} if args.bands else {}
            res = write(path, args.n_objects, seed=args.seed, objects_per_partition=args.partition_size,
                        progress=progress, **kw)
        finally:
            progress.close()
        print(f"{path}: {res['objects']:,} objects, {res['observations']:,} observations in "
              f"{res['partitions']} partitions")
        return 0
    progress = TqdmProgress("demo", leave=False)
    try:
        store = create_demo_store(
            args.db, n_objects=args.n_objects, seed=args.seed, bands=args.bands, progress=progress
        )
    finally:
        progress.close()
    with store:
        info = store.info()
    print(
        f"{args.db}: {info['objects']:,} objects, {info['observations']:,} observations "
        f"({', '.join(info['surveys'])})"
    )
    return 0


def _dataset_files(folder: Path) -> tuple[Path, Path | None] | None:
    """(observations file, objects file) when a folder is a tidy dataset like ../shared/data/*."""
    from lcdash.io import table_format

    def find(stem):
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.name.split(".")[0] == stem:
                try:
                    table_format(f.name)
                    return f
                except LcdashError:
                    continue
        return None

    obs = find("observations")
    return (obs, find("objects")) if obs is not None else None


def _plan(args) -> list[dict]:
    """Group the PATHs into ingest units: each dataset folder alone, all other paths together."""
    units, loose = [], []
    for raw in args.paths:
        path = Path(raw)
        if not path.exists():
            raise LcdashError(f"{path}: no such file or folder")
        ds = _dataset_files(path) if path.is_dir() else None
        if ds is None and path.is_dir() and _is_parquet_dataset(path):  # streamed, partition by partition
            units.append({"paths": [], "objects": None, "name": path.name, "source": str(path),
                          "dataset": path})
        elif ds is not None:
            units.append({"paths": [ds[0]], "objects": ds[1], "name": path.name, "source": str(path)})
        else:
            loose.append(path)
    if loose:
        name = loose[0].name if len(loose) == 1 else (loose[0].parent.name or loose[0].stem)
        units.append(
            {
                "paths": loose,
                "objects": None,
                "name": Path(name).stem if Path(name).suffix else name,
                "source": ", ".join(map(str, loose)),
            }
        )
    if args.objects:
        if len(units) > 1:
            raise LcdashError("--objects applies to one ingest; give one dataset at a time")
        units[0]["objects"] = Path(args.objects)
    return units


def cmd_ingest(args) -> int:
    """Every PATH in one transaction: a failure in any of them leaves the store as it was, and the
    message names the dataset that failed."""
    from lcdash.io import parse_mapping, split_mapping

    obs_map, obj_map = split_mapping(parse_mapping(args.map))
    units = _plan(args)
    store, created = None, False
    results = []
    try:
        if not args.dry_run:
            from lcdash.store import Store

            created = not Path(args.db).exists()
            store = Store(args.db)
        alone = len(units) == 1 and units[0].get("dataset") is not None  # a large one commits in chunks
        with store.transaction() if store is not None and not alone else _nothing() as cur:
            for unit in units:
                try:
                    results.append(_ingest_unit(args, unit, obs_map, obj_map, store, cur))
                except LcdashError as exc:
                    where = unit["source"] if len(units) > 1 else ""
                    done = store is not None and not getattr(exc, "undo_pending", False)
                    note = "; nothing was ingested" if done else ""
                    raise type(exc)(f"{where + ': ' if where else ''}{exc}{note}") from exc
                except Exception as exc:  # a reader or DuckDB failure: one line, the dataset named
                    from lcdash.io import one_line

                    raise LcdashError(
                        f"{unit['source']}: {one_line(exc)}"
                        + ("; nothing was ingested" if store is not None else "")
                    ) from exc
    except BaseException:
        if store is not None:
            store.close()
            if created:
                _remove_store(Path(args.db))
            store = None
        raise
    finally:
        if store is not None:
            for result in results:
                print(result.summary())
            info = store.info()
            print(
                f"{args.db}: {info['objects']:,} objects, {info['observations']:,} observations, "
                f"{len(info['classes'])} classes, {len(info['surveys'])} survey(s)"
            )
            store.close()
    return 0


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _remove_store(path: Path) -> None:
    """Delete a store this command created and could not fill (it was not there before)."""
    import shutil

    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)
    shutil.rmtree(path.with_name(path.name + ".tmp"), ignore_errors=True)


def _is_parquet_dataset(path: Path) -> bool:
    from lcdash.store.ingest_dataset import is_dataset

    return is_dataset(path)


def _ingest_unit(args, unit, obs_map, obj_map, store, cur):
    from lcdash.io import guess_mapping, prepare, read_inputs, read_table

    if unit.get("dataset") is not None:
        return _ingest_dataset_unit(args, unit, obs_map, obj_map, store, cur)

    frames = read_inputs(unit["paths"])
    objects = read_table(unit["objects"]) if unit["objects"] else None
    guess = {**guess_mapping(frames[0][1].columns), **obs_map}
    print(
        f"{unit['name']}: {len(frames)} file(s); columns "
        + ", ".join(f"{r}={c}" for r, c in guess.items() if c),
        file=sys.stderr,
    )
    obs, objs, report = prepare(
        frames,
        obs_map,
        objects=objects,
        objects_mapping=obj_map,
        objects_name=unit["objects"].name if unit["objects"] else "objects table",
        band=args.band,
        min_obs=args.min_obs,
        duplicates=args.duplicates,
        allow_merge=args.allow_merge,
    )
    print(report.summary(), file=sys.stderr)
    report.raise_if_errors()
    # an object's survey: --survey, else the objects table's survey column, else the name
    if args.survey is not None:
        objs = objs.assign(survey=args.survey)
    if store is None:
        print(
            f"{unit['name']}: dry run, {len(objs):,} objects and {len(obs):,} observations would be ingested",
            file=sys.stderr,
        )
        return None
    progress = TqdmProgress(f"ingest {unit['name']}", leave=False)
    try:
        return store.ingest(
            obs, objs, survey=args.survey or unit["name"], validation=report, progress=progress, cursor=cur
        )
    finally:
        progress.close()


def _ingest_dataset_unit(args, unit, obs_map, obj_map, store, cur):
    """A Parquet dataset (DIR/observations/<partition>/*.parquet [+ DIR/objects.parquet]): one partition
    in memory at a time, all of it in the command's transaction (`lcdash.store.ingest_dataset`)."""
    from lcdash.io import read_table
    from lcdash.store.ingest_dataset import ingest_dataset

    objects = read_table(unit["objects"]) if unit["objects"] else None
    progress = TqdmProgress(f"ingest {unit['name']} (partitions)", leave=False)
    try:
        report = ingest_dataset(store, unit["dataset"], survey=args.survey or unit["name"],
                                objects=objects, mapping=obs_map, objects_mapping=obj_map, band=args.band,
                                min_obs=args.min_obs, duplicates=args.duplicates, progress=progress,
                                set_survey=args.survey, cursor=cur)
    finally:
        progress.close()
    if store is None:
        print(f"{unit['name']}: dry run, {report.objects_new:,} objects and {report.observations_new:,} "
              "observations would be ingested", file=sys.stderr)
        return None
    return report


def cmd_sql(args) -> int:
    from lcdash.store import Store

    with Store(args.db, read_only=True) as store:
        df = store.sql(args.query, limit=args.limit, timeout_s=args.timeout)
    if args.format == "csv":
        df.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(df.to_json(orient="records", date_format="iso", default_handler=str))
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
            print(df.to_string(index=False) if len(df.columns) else "(no columns)")
    if df.attrs.get("truncated"):
        print(f"(showing the first {args.limit:,} rows; raise --limit to see more)", file=sys.stderr)
    return 0


def cmd_info(args) -> int:
    from lcdash.store import Store

    if not Path(args.db).exists():
        raise LcdashError(f"{args.db}: no such store")
    with Store(args.db, read_only=True) as store:
        info = store.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"store {info['path']} (schema {info['schema_version']})")
    print(
        f"  objects       {info['objects']:>12,}  "
        f"({info['labelled']:,} labelled, {info['synthetic']:,} synthetic)"
    )
    print(f"  light curves  {info['lightcurves']:>12,}")
    print(f"  observations  {info['observations']:>12,}")
    print(f"  classes       {len(info['classes']):>12,}")
    for name, s in info["surveys"].items():
        print(
            f"  survey {name}: {s['objects']:,} objects, {s['observations']:,} observations, "
            f"{s['classes']} classes"
        )
    for band, b in info["bands"].items():
        print(f"  band {band}: {b['lightcurves']:,} light curves, {b['observations']:,} observations")
    if info["classes"]:
        print("  classes: " + ", ".join(f"{k} {v:,}" for k, v in info["classes"].items()))
    return 0
