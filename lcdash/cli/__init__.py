"""`python -m lcdash`: one subcommand a function, grouped in modules by topic.

Each module in COMMAND_MODULES has `register(subparsers)` that adds its subcommands and sets
`func` on each; heavy imports (torch, umap) happen inside the command functions so that
`python -m lcdash info` stays fast. Any error becomes a one-line message on stderr and exit
status 1 (LCDASH_DEBUG=1 adds the traceback of unexpected ones).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from lcdash.errors import LcdashError, user_message

COMMAND_MODULES = [
    "lcdash.cli.data",  # demo, ingest, sql, info
    "lcdash.cli.periods",  # periods
    "lcdash.cli.weights",  # weights import, weights download
    "lcdash.cli.models",  # pretrain, finetune, embed, embed-file
    "lcdash.cli.evaluate",  # evaluate
    "lcdash.cli.jobs",  # jobs list / cancel
    "lcdash.cli.rnn",  # rnn-train, update (Becker 2020 incremental update)
    "lcdash.cli.scale",  # embed-catalog, import-embeddings
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lcdash",
        description="lcdash: store, embed, probe and compare variable-star light curves.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:  # noqa: BLE001 - a one-line reason, never a traceback
        print(f"lcdash {args.command}: {user_message(exc)}", file=sys.stderr)
        if os.environ.get("LCDASH_DEBUG") and not isinstance(exc, LcdashError):
            traceback.print_exc()
        return 1
    except KeyboardInterrupt:
        print(f"lcdash {args.command}: interrupted", file=sys.stderr)
        return 130
