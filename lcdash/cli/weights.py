"""`python -m lcdash weights import|download`: official Astromer weights -> lcdash encoder folders."""

from __future__ import annotations

import argparse

from lcdash.errors import ModelError
from lcdash.weights import OFFICIAL, download, import_official, read_encoder_config


def register(subparsers) -> None:
    p = subparsers.add_parser("weights", help="import or download official Astromer weights")
    sub = p.add_subparsers(dest="weights_command", required=True, metavar="ACTION")

    imp = sub.add_parser("import", help="convert an official archive (zip / tar.gz), folder or checkpoint")
    imp.add_argument("path", help="macho_a0.zip, atlas.zip, an extracted folder, a .index or .h5 file")
    imp.add_argument("--out", required=True, help="output folder (model.safetensors + config.json)")
    imp.add_argument("--name", default=None, help="name recorded in config.json (default: the file name)")
    imp.set_defaults(func=cmd_import)

    dl = sub.add_parser("download", help="download official weights, check sha256, convert")
    dl.add_argument("name", help="one of: macho_a0, atlas")
    dl.add_argument("--out", default=None, help="output folder (default: ./models/<name>)")
    dl.add_argument(
        "--url", default=None, help="fetch from this URL instead (a mirror); sha256 still checked"
    )
    dl.add_argument("--cache-dir", default=None, help="keep / reuse the verified archive here")
    dl.set_defaults(func=cmd_download)


def _describe(out) -> str:
    meta = read_encoder_config(out)
    c = meta["config"]
    return (
        f"{c['arch']}: {c['n_layers']} layers, d_model {c['d_model']}, d_ff {c['d_ff']}, "
        f"{meta['n_params']:,} parameters"
    )


def cmd_import(args: argparse.Namespace) -> int:
    out = import_official(args.path, args.out, name=args.name)
    print(f"wrote {out} ({_describe(out)})")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.name not in OFFICIAL:
        raise ModelError(f"unknown official weights {args.name!r}; known: {', '.join(OFFICIAL)}")
    out = args.out or f"models/{args.name}"
    bars: list = []  # created on the first progress call, so early errors print cleanly

    def progress(done, total, message):
        if not bars:
            bars.append(tqdm(unit="B", unit_scale=True, desc=args.name, leave=False))
        bars[0].total = total or None
        bars[0].n = done
        bars[0].refresh()

    try:
        path = download(args.name, out, url=args.url, cache_dir=args.cache_dir, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    print(f"wrote {path} ({_describe(path)})")
    return 0
