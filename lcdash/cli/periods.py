"""`lcdash periods`: find each light curve's period once and keep it in the store (lcdash.periods)."""

from __future__ import annotations

from pathlib import Path

from lcdash.errors import LcdashError
from lcdash.progress import TqdmProgress


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "periods",
        help="find the period of every light curve of a store from the light curve alone and store it",
        description="Find each light curve's period (lcdash.periods: Lomb-Scargle candidates judged "
        "by multi-harmonic fits, P against 2P and cadence aliases decided) and store it in the "
        "store's `periods` table beside the catalogue period, which is never changed. Light curves "
        "that already have a period of this finder version are skipped unless --overwrite.",
    )
    p.add_argument("--db", required=True, help="the store")
    p.add_argument("--survey", help="only this survey's objects")
    p.add_argument("--band", help="only light curves in this band")
    p.add_argument("--overwrite", action="store_true", help="recompute periods already stored")
    p.add_argument(
        "--out", type=Path, help="also write a Parquet table (object_id, survey, band, period, ...)"
    )
    p.add_argument("--threads", type=int, default=None, help="threads (default: every CPU)")
    p.set_defaults(func=cmd_periods)


def cmd_periods(args) -> int:
    from lcdash.periods import FINDER_VERSION, store_periods
    from lcdash.store import Store
    from lcdash.store.periods import read_periods

    if not Path(args.db).exists():
        raise LcdashError(f"{args.db}: no such store")
    if args.out is not None and args.out.is_dir():
        raise LcdashError(f"--out {args.out} is a folder; give a file name such as periods.parquet")
    with Store(args.db) as store:
        if args.survey is not None and args.survey not in store.surveys():
            raise LcdashError(
                f"no survey {args.survey!r} in {args.db}; surveys: {', '.join(store.surveys())}"
            )
        if args.band is not None and args.band not in store.bands():
            raise LcdashError(f"no band {args.band!r} in {args.db}; bands: {', '.join(store.bands())}")
        bar = TqdmProgress("periods", unit="lc")
        try:
            res = store_periods(store, survey=args.survey, band=args.band, overwrite=args.overwrite,
                                n_jobs=args.threads, progress=bar)  # fmt: skip
        finally:
            bar.close()
        if res["light_curves"] == 0:
            print(f"{args.db}: every light curve selected already has a period of {FINDER_VERSION} "
                  "(--overwrite recomputes them)")  # fmt: skip
        else:
            print(f"{args.db}: periods of {res['light_curves']:,} light curves found and stored "
                  f"({res['lc_per_s']:.0f} light curves/s); {res['light_curves'] - res['found']:,} "
                  "without a period (the table's reason column says why)")  # fmt: skip
        if args.out is not None:
            objs = store.objects(
                survey=args.survey, band=args.band, columns=["oid", "object_id", "survey", "period"]
            )
            found = read_periods(store, oids=objs["oid"], band=args.band, finder=FINDER_VERSION)
            table = found.merge(objs.rename(columns={"period": "catalogue_period"}), on="oid")
            cols = ["object_id", "survey", "band", "period", "catalogue_period", "score", "n_harmonics",
                    "reason", "candidates", "finder"]  # fmt: skip
            args.out.parent.mkdir(parents=True, exist_ok=True)
            table[cols].to_parquet(args.out, index=False)
            print(f"wrote {len(table):,} rows to {args.out}")
    return 0
