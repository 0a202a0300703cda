"""RNN commands: rnn-train (fit, save and register a Becker RNN) and update (ingest new
observations, then bring every object's saved RNN read up to date in O(new observations))."""

from __future__ import annotations

import argparse
import sys

from lcdash.progress import TqdmProgress


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rnn-train",
        help="fit a Becker RNN on the catalogue labels, save it and register it in the store",
    )
    p.add_argument("--db", required=True, help="store file")
    p.add_argument("--out", required=True, help="folder for model.safetensors + config.json")
    p.add_argument("--name", default=None, help="name in the store (default: the folder's name)")
    p.add_argument("--survey", default=None, help="only objects of this survey")
    p.add_argument("--band", default=None, help="band (default: the only band of the objects)")
    p.add_argument("--max-per-class", type=int, default=None, help="subsample larger classes")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None, help="GRU units per layer (default 25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=cmd_rnn_train)

    p = subparsers.add_parser(
        "update",
        help="ingest new observations of known objects and update a trained RNN's states and classes",
        description="Ingests PATHs as `lcdash ingest` does (the store merges them into the stored light "
        "curves), then updates every stale saved RNN read of --model in --band: objects without one are "
        "read in full, grown ones continue from their saved GRU state with only the new observations "
        "(Becker et al. 2020), and ones whose earlier observations changed are read again. Without PATHs "
        "it only updates (e.g. the first time, to read every object).",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="new observations (any format `ingest` reads)")
    p.add_argument("--db", required=True, help="store file")
    p.add_argument("--model", required=True, help="name of a registered RNN (see rnn-train)")
    p.add_argument("--band", default=None, help="band the RNN reads (default: the only band)")
    p.add_argument("--survey", default=None, help="survey of the new observations, and only its objects")
    p.add_argument("--objects", default=None, help="objects table for the ingest")
    p.add_argument("--map", nargs="+", action="extend", default=[], metavar="ROLE=COLUMN",
                   help="column mapping for the ingest, as in `ingest`")  # fmt: skip
    p.add_argument("--min-obs", type=int, default=1,
                   help="ingest: drop series with fewer new points (1 keeps single ones)")  # fmt: skip
    p.add_argument("--duplicates", choices=("average", "error"), default="average")
    p.add_argument("--allow-merge", action="store_true",
                   help="as for ingest: let repeated or unsorted times within one object through")
    p.add_argument("--show", type=int, default=20, help="list up to this many changed classes")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=cmd_update)


def _threads(n) -> None:
    if n:
        import torch

        torch.set_num_threads(int(n))


def cmd_rnn_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lcdash.rnn_update import train_rnn
    from lcdash.store import Store

    _threads(args.threads)
    params = {
        k: v for k, v in {"max_epochs": args.max_epochs, "hidden": args.hidden}.items() if v is not None
    }
    name = args.name or Path(args.out).name
    with Store(args.db) as store:
        info = train_rnn(store, name, args.out, survey=args.survey, band=args.band,
                         max_per_class=args.max_per_class, seed=args.seed, **params)  # fmt: skip
    print(
        f"RNN {name!r} ({info['path']}): classes {', '.join(info['classes'])}; band {info['band']}; "
        f"{info['n_train']:,} training / {info['n_val']:,} validation curves, {info['epochs']} epochs, "
        f"{info['fit_seconds']:.1f} s"
    )
    print(f"next: python -m lcdash update --db {args.db} --model {name} --band {info['band']}")
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from lcdash.cli.data import cmd_ingest
    from lcdash.rnn_update import update_states
    from lcdash.store import Store

    _threads(args.threads)
    if args.paths:
        ingest = argparse.Namespace(paths=args.paths, db=args.db, objects=args.objects, survey=args.survey,
                                    map=args.map, band=args.band, min_obs=args.min_obs,
                                    duplicates=args.duplicates, allow_merge=args.allow_merge,
                                    dry_run=False)  # fmt: skip
        cmd_ingest(ingest)
    with Store(args.db) as store:
        progress = TqdmProgress(f"update {args.model}", leave=False)
        try:
            report = update_states(store, args.model, band=args.band, survey=args.survey, progress=progress)
        finally:
            progress.close()
        if report.changed and args.show:
            ids = store.objects(oids=list(report.changed), columns=["oid", "object_id", "survey"])
            names = dict(zip(ids["oid"], ids["object_id"], strict=True))
            for oid, (old, new) in list(report.changed.items())[: args.show]:
                print(f"  {names.get(oid, oid)}: {old} -> {new}")
    print(report.summary())
    if report.new + report.incremental + report.recomputed == 0:
        print("nothing to update: every saved state matches its light curve", file=sys.stderr)
    return 0
