"""Scale-out commands: embed-catalog (Dask distributed), import-embeddings, project (maps of any size).

Distributed pretraining needs no command of its own: `torchrun --nproc-per-node N -m lcdash pretrain ...`
runs the ordinary pretrain / finetune commands under DistributedDataParallel (lcdash.ddp).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lcdash.errors import LcdashError, ModelError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "embed-catalog",
        help="embed a HATS catalogue, a Parquet dataset or a store on a Dask cluster",
        description="SOURCE: a HATS catalogue (one object a row, the light curve in a nested column, e.g. "
        "ZTF's lightcurve), a Parquet dataset of observations (hive folders or files; one observation or "
        "one light curve a row) or a store (exported to OUT/_export first). Writes OUT/<partition>/"
        "part-0.parquet (object_id, [band,] n_windows, layer_0..layer_L) one partition at a time: a "
        "killed run resumes, a re-run adds nothing. Without --scheduler a local cluster of --workers "
        "processes (one thread each) runs it.",
    )
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("--model", required=True, help="encoder folder (or the shipped encoder's name)")
    p.add_argument("--out", required=True, help="output folder (partitioned Parquet)")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: one per GPU, else one per core)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="attach to an existing Dask cluster (e.g. tcp://host:8786) instead")
    p.add_argument("--map", nargs="+", action="extend", default=[], metavar="ROLE=COLUMN",
                   help="column (or nested field) for a role: object_id, time, mag, mag_err, band")
    p.add_argument("--nested", default=None, help="the HATS catalogue's light-curve column (default: "
                   "lightcurve, or its only nested column)")
    p.add_argument("--survey", default=None, help="store only: objects of this survey")
    p.add_argument("--band", default=None, help="store only: this band (default: every band)")
    p.add_argument("--chunk-size", type=int, default=5000, help="store only: light curves per partition")
    p.add_argument("--batch-size", type=int, default=None,
                   help="windows per model call (default: 64 on CPU, 256 on a GPU)")
    p.add_argument("--precision", choices=["float32", "bf16"], default="float32")
    p.add_argument("--device", default=None, help="cuda, mps or cpu on every worker (default: the best)")
    p.add_argument("--retries", type=int, default=2, help="retries of a failing partition (default 2)")
    p.set_defaults(func=cmd_embed_catalog)

    p = subparsers.add_parser("import-embeddings",
                              help="bring an embed-catalog output into a store")
    p.add_argument("path", metavar="DIR", help="the --out folder of embed-catalog")
    p.add_argument("--db", required=True, help="store file")
    p.add_argument("--name", required=True, help="encoder name in the store (registered if new)")
    p.add_argument("--model", default=None,
                   help="encoder folder to register (default: the one embed-catalog used)")
    p.add_argument("--survey", default=None, help="match object ids within this survey")
    p.add_argument("--skip-missing", action="store_true",
                   help="leave out objects the store does not hold (default: fail)")
    p.set_defaults(func=cmd_import_embeddings)

    p = subparsers.add_parser(
        "project", help="compute and store a 2-D map (UMAP) of an encoder's embeddings",
        description="The Explore page's `project` job, run here with a progress bar. Above "
        "--sampled-fit-above points (default 100,000) UMAP is fitted on --fit-sample random points "
        "(default 30,000) and the rest are placed by the fitted model in batches: bounded time and memory "
        "at a million points; the sampling is stored with the projection's parameters.")
    p.add_argument("--db", required=True, help="store file")
    p.add_argument("--encoder", default="astromer2-logpe-folded-demo", help="registered encoder name")
    p.add_argument("--embedding", default="weighted", help="weighted | last | layer_<l> (default weighted)")
    p.add_argument("--band", default=None, help="only this band's embeddings")
    p.add_argument("--run-id", default=None, help="probe run whose learned layer weights to use")
    p.add_argument("--n-neighbors", type=int, default=15)
    p.add_argument("--min-dist", type=float, default=0.1)
    p.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-sample", type=int, default=None, help="points in a sampled fit")
    p.add_argument("--sampled-fit-above", type=int, default=None,
                   help="fit on a sample above this many points")
    p.set_defaults(func=cmd_project)


def _model_dir(model: str) -> Path:
    from lcdash.store.embeddings import DEFAULT_ENCODER, default_encoder_dir

    path = Path(model)
    if (path / "model.safetensors").exists():
        return path
    if model == DEFAULT_ENCODER:
        return default_encoder_dir()
    raise ModelError(f"{model} is not an encoder folder (no model.safetensors)")


def cmd_embed_catalog(args: argparse.Namespace) -> int:
    from lcdash.io import parse_mapping
    from lcdash.scale import embed_catalog

    if args.workers is not None and args.workers < 1:
        raise LcdashError("--workers must be at least 1")
    if args.workers is not None and args.scheduler:
        raise LcdashError("--workers sizes a local cluster; an existing one (--scheduler) has its own")
    mapping = parse_mapping(args.map)
    res = embed_catalog(
        args.source, _model_dir(args.model), args.out, workers=args.workers, scheduler=args.scheduler,
        mapping=mapping, nested=args.nested, survey=args.survey, band=args.band,
        batch_size=args.batch_size, device=args.device, precision=args.precision, retries=args.retries,
        chunk_size=args.chunk_size, show_progress=True, log=lambda s: print(s, file=sys.stderr),
    )
    print(json.dumps({"out": res.out, "partitions": res.partitions, "embedded": len(res.done),
                      "already_done": len(res.skipped), "failed": sorted(res.failed),
                      "light_curves": res.rows, "windows": res.windows, "workers": res.workers,
                      "lc_per_s": round(res.lc_per_s, 1) if res.lc_per_s else None}))
    if res.failed:
        for name, msg in sorted(res.failed.items()):
            print(f"failed partition {name}: {msg}", file=sys.stderr)
        raise LcdashError(f"{len(res.failed)} of {res.partitions} partitions failed "
                          f"({', '.join(sorted(res.failed))}); the others are in {res.out}; "
                          "run the same command again to retry them")
    return 0


def cmd_import_embeddings(args: argparse.Namespace) -> int:
    from lcdash.progress import TqdmProgress
    from lcdash.scale import import_embeddings
    from lcdash.store import Store

    if not Path(args.db).is_file():  # an import into a store that is not there: refused, none created
        raise LcdashError(f"{args.db}: no such store (create it with lcdash ingest or lcdash demo)")
    with Store(args.db) as store:
        bar = TqdmProgress(f"import ({args.name})", "partition")
        try:
            res = import_embeddings(store, args.path, args.name, model_dir=args.model, survey=args.survey,
                                    missing="skip" if args.skip_missing else "error", progress=bar)
        finally:
            bar.close()
    print(json.dumps(res))
    if res["missing_partitions"]:
        print(f"{res['missing_partitions']} partition(s) of {args.path} are not embedded yet "
              "(failed or still running): import again once they are", file=sys.stderr)
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    import tempfile
    import time

    from lcdash import tasks
    from lcdash.progress import TqdmProgress
    from lcdash.store import Store

    params = {"encoder": args.encoder, "embedding": args.embedding, "band": args.band, "run_id": args.run_id,
              "n_neighbors": args.n_neighbors, "min_dist": args.min_dist, "metric": args.metric,
              "seed": args.seed, "fit_sample": args.fit_sample, "sampled_fit_above": args.sampled_fit_above}
    params = {k: v for k, v in params.items() if v is not None}
    t0 = time.perf_counter()
    with Store(args.db) as store, tempfile.TemporaryDirectory(prefix="lcdash-project-") as folder:
        folder = Path(folder)
        params.update(tasks.project_prepare(store, params, folder))
        bar = TqdmProgress(f"project ({args.encoder})", "point")
        try:
            result = tasks.project_run(folder, params, bar)
        finally:
            bar.close()
        done = tasks.project_finalize(store, folder, params, result)
    print(json.dumps({**done, "sampled_fit": result.get("sampled_fit"),
                      "seconds": round(time.perf_counter() - t0, 1)}))
    return 0
