"""Model commands: pretrain, finetune, embed, embed-file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lcdash.errors import LcdashError, ModelError
from lcdash.progress import TqdmProgress


def register(subparsers) -> None:
    p = subparsers.add_parser("pretrain", help="masked-reconstruction pretraining of an Astromer encoder")
    _data_args(p)
    p.add_argument("--arch", choices=["astromer1", "astromer2"], default="astromer2")
    p.add_argument("--out", required=True,
                   help="output folder (model.safetensors + config.json + checkpoint)")
    p.add_argument("--n-layers", type=int, default=None, help="attention blocks (default: the arch's)")
    p.add_argument("--d-model", type=int, default=None, help="model width (default 256)")
    p.add_argument("--n-heads", type=int, default=None, help="attention heads (default 4)")
    p.add_argument("--d-ff", type=int, default=None, help="feed-forward width (default: the arch's)")
    p.add_argument("--window", type=int, default=None, help="observations per window (default 200)")
    p.add_argument("--pe", choices=["astromer", "log-period"], default="astromer",
                   help="positional encoding: the published one, or lcdash's log-spaced periods "
                        "(0.05 d to --pe-max-period)")
    p.add_argument("--pe-max-period", type=float, default=None,
                   help="longest period of --pe log-period (days)")
    p.add_argument("--fold", action="store_true",
                   help="lcdash's folded variant: windows of curves folded at their Lomb-Scargle period")
    p.add_argument("--init-from", default=None,
                   help="start from this encoder folder instead of random weights")
    _train_args(p, lr_default="1e-3")
    p.set_defaults(func=cmd_pretrain)

    p = subparsers.add_parser("finetune",
                              help="continue the masked objective from an encoder (labels unused)")
    p.add_argument("--from", dest="from_dir", required=True,
                   help="encoder to start from: a folder, or a name registered in --db (its folder is never "
                        "written); the result is registered in --db beside it, as --register or the --out "
                        "folder's name, with its lineage")
    _data_args(p)
    p.add_argument("--out", required=True, help="output folder for the fine-tuned encoder")
    _train_args(p, lr_default="1e-5")
    p.set_defaults(func=cmd_finetune)

    p = subparsers.add_parser("embed", help="compute per-object per-layer embeddings into the store")
    p.add_argument("--db", required=True, help="store file")
    p.add_argument("--model", default="astromer2-logpe-folded-demo",
                   help="a registered encoder name or an encoder folder (registered under --name or the "
                        "folder's name); default: the shipped astromer2-logpe-folded-demo")
    p.add_argument("--name", default=None, help="register a folder under this name")
    p.add_argument("--band", default=None, help="only this band (default: every band)")
    p.add_argument("--survey", default=None, help="only objects of this survey")
    p.add_argument("--batch-size", type=int, default=None,
                   help="windows per model call (default: 64 on CPU, 256 on a GPU)")
    p.add_argument("--overwrite", action="store_true", help="recompute embeddings that already exist")
    p.add_argument("--fold-periods", choices=["catalogue", "found", "lomb-scargle"], default="catalogue",
                   help="folded encoders: fold at the catalogue period (the one found from the light curve "
                        "where none), or always at the found period (lcdash periods; 'lomb-scargle' is "
                        "its old name)")
    p.add_argument("--precision", choices=["auto", "float32", "bf16"], default="auto",
                   help="auto: bf16 autocast only where the device has native bf16 and it times faster, "
                        "else float32 (bf16 is less exact)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.set_defaults(func=cmd_embed)

    p = subparsers.add_parser(
        "embed-file", help="embed light curves from a file into a Parquet table (no store)",
        description="Reads observations (object_id, time, mag[, mag_err][, band]; other names are guessed or "
        "given with --map) and writes one row per object (and band) with object_id, [band,] n_windows and "
        "layer_0..layer_L: float32 lists, the mean of each layer's output over valid steps and windows "
        "(layer_0 = input embedding).",
    )
    p.add_argument("path", help="observations table (Parquet, CSV, ...)")
    p.add_argument("--model", required=True, help="encoder folder, or the shipped one's name")
    p.add_argument("--out", required=True, help="output Parquet file")
    p.add_argument("--map", nargs="+", action="extend", default=[], metavar="ROLE=COLUMN",
                   help="column for a role: object_id, time, mag, mag_err, band")
    p.add_argument("--batch-size", type=int, default=None,
                   help="windows per model call (default: 64 on CPU, 256 on a GPU)")
    p.add_argument("--precision", choices=["auto", "float32", "bf16"], default="auto")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_embed_file)


def _data_args(p) -> None:
    p.add_argument("--db", required=True, help="store file with the light curves (opened read-only)")
    p.add_argument("--survey", default=None, help="only objects of this survey")
    p.add_argument("--band", default=None,
                   help="this band (default: each object's first band; 'all': every band, each a curve)")
    p.add_argument("--max-objects", type=int, default=None, help="a random subset of at most N objects")
    p.add_argument("--min-obs", type=int, default=10, help="skip light curves with fewer observations")


def _train_args(p, lr_default: str) -> None:
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=None, help=f"learning rate (default {lr_default})")
    p.add_argument("--patience", type=int, default=20, help="early stopping: epochs without improvement")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--error-weighted", action="store_true", help="weight the loss by 1/sigma (Astromer 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much wall-clock time")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--register", default=None, metavar="NAME",
                   help="register the result in the store under NAME when done")


def _load_training_data(args):
    """The light curves named by --db/--survey/--band/--max-objects as one LightCurveBatch."""
    import numpy as np

    from lcdash.store import Store

    store = Store(args.db, read_only=True)
    try:
        band = None if args.band == "all" else args.band
        objs = store.objects(survey=args.survey, band=band, n_obs=(args.min_obs, None), columns=["oid"])
        oids = objs["oid"].to_numpy(np.int64)
        if args.max_objects is not None and len(oids) > args.max_objects:
            oids = np.sort(np.random.default_rng(args.seed).choice(oids, args.max_objects, replace=False))
        if len(oids) < 2:
            what = f" of survey {args.survey!r}" if args.survey else ""
            raise LcdashError(f"{args.db}: fewer than 2 light curves{what} to train on")
        if args.band == "all":  # every (object, band) light curve is a training curve
            from lcdash.windows import iter_curves

            curves = []
            for b in store.bands(oids):
                sel = store.objects(band=b, oids=oids, columns=["oid"])["oid"].to_numpy(np.int64)
                curves += [c for c in iter_curves(store.read_batch(sel, band=b)) if len(c[0]) >= args.min_obs]
            return curves
        batch = store.read_batch(oids, band=args.band)
    finally:
        store.close()
    keep = batch.length >= args.min_obs  # n_obs counts all bands; the band's own count decides
    return batch[keep] if not keep.all() else batch


def _train_config(args):
    from lcdash.train import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                       val_fraction=args.val_fraction, error_weighted=args.error_weighted, seed=args.seed,
                       device=args.device, num_threads=args.threads, max_minutes=args.max_minutes)


def _run_training(args, init_from=None, model_cfg=None) -> int:
    from lcdash.train import pretrain

    batch = _load_training_data(args)
    cfg = _train_config(args)
    if init_from is not None and cfg.lr is None:
        from lcdash.train import FINETUNE_LR

        cfg.lr = FINETUNE_LR
    from lcdash.ddp import is_rank_zero, world_size

    if not is_rank_zero():  # under torchrun the other ranks train silently; rank 0 reports and registers
        pretrain(batch, None, cfg, model_cfg, args.out, init_from=init_from, resume=args.resume)
        return 0
    on = f" on {world_size()} processes (DistributedDataParallel)" if world_size() > 1 else ""
    print(f"training on {len(batch)} light curves from {args.db} -> {args.out}{on}", file=sys.stderr)
    bar = TqdmProgress("pretrain" if init_from is None else "finetune", "step")
    try:
        result = pretrain(batch, None, cfg, model_cfg, args.out, init_from=init_from, progress=bar,
                          resume=args.resume)
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted: the last completed epoch is saved in {args.out}; continue with --resume",
              file=sys.stderr)
        raise
    bar.close()
    for h in result["history"]:
        tr = "-" if h["train_rmse"] is None else f"{h['train_rmse']:.4f}"
        print(f"epoch {h['epoch']:3d}  train RMSE {tr:>7}  val RMSE {h['val_rmse']:.4f}")
    print(f"best validation RMSE {result['best_val_rmse']:.4f} at epoch {result['best_epoch']} "
          f"({result['stopped']}; {result['n_params']:,} parameters, device {result['device']}"
          + (f", {result['windows_per_s']:.0f} windows/s" if result["windows_per_s"] else "") + ")")
    print(f"(predicting each window's mean magnitude gives {result['baseline_val_rmse']:.4f})")
    print(f"wrote {result['path']}")
    if args.register:
        from lcdash.store import Store
        from lcdash.store.embeddings import register_encoder

        source = None
        if init_from is not None:  # lineage, as the Models page's fine-tune job writes it
            parent = getattr(args, "parent_name", None) or str(init_from)
            source = (f"fine-tuned from {parent} on {args.survey or 'all surveys'} "
                      f"({result['n_train']} light curves, labels unused)")
        with Store(args.db) as store:
            register_encoder(store, args.register, args.out, source=source)
        print(f"registered encoder {args.register!r} in {args.db}" + (f": {source}" if source else ""))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from lcdash.models.astromer import AstromerConfig

    shape = (("n_layers", args.n_layers), ("d_model", args.d_model), ("n_heads", args.n_heads),
             ("d_ff", args.d_ff), ("window", args.window), ("pe_max_period", args.pe_max_period))
    over = {k: v for k, v in shape if v is not None}
    if args.pe != "astromer":
        over["pe"] = args.pe
    if args.fold:
        over["fold"] = True
    if args.init_from and over:
        raise ModelError("--init-from takes the model's shape from that encoder; "
                         "drop --n-layers/--d-model/--n-heads/--d-ff/--window/--pe/--fold")
    model_cfg = getattr(AstromerConfig, args.arch)(**over)
    return _run_training(args, init_from=args.init_from, model_cfg=None if args.init_from else model_cfg)


def cmd_finetune(args: argparse.Namespace) -> int:
    if not Path(args.from_dir, "model.safetensors").exists():  # a registered name
        from lcdash.store import Store
        from lcdash.store.embeddings import get_encoder

        with Store(args.db, read_only=True) as store:
            try:
                enc = get_encoder(store, args.from_dir)
            except ModelError:
                raise ModelError(f"--from {args.from_dir!r} is neither an encoder folder (no "
                                 f"model.safetensors) nor an encoder registered in {args.db}") from None
        args.parent_name, args.from_dir = enc["name"], str(enc["path"])
    args.register = args.register or Path(args.out).name
    if Path(args.from_dir).resolve() == Path(args.out).resolve():
        raise ModelError("--out must differ from --from: fine-tuning would overwrite its starting encoder")
    return _run_training(args, init_from=args.from_dir)


def _resolve_encoder(store, model: str, name: str | None) -> str:
    """The registered name for --model (a name, a folder, or the shipped default)."""
    from lcdash.store.embeddings import (
        DEFAULT_ENCODER,
        get_encoder,
        register_default_encoder,
        register_encoder,
    )

    path = Path(model)
    if (path / "model.safetensors").exists():
        enc_name = name or path.resolve().name
        register_encoder(store, enc_name, path)
        return enc_name
    try:
        get_encoder(store, model)
        return model
    except ModelError:
        if model == DEFAULT_ENCODER and register_default_encoder(store) is not None:
            return model
        raise


def cmd_embed(args: argparse.Namespace) -> int:
    from lcdash.embed import embed_store
    from lcdash.store import Store

    with Store(args.db) as store:
        name = _resolve_encoder(store, args.model, args.name)
        oids = None
        if args.survey:
            oids = store.objects(survey=args.survey, columns=["oid"])["oid"].to_numpy()
            if len(oids) == 0:
                raise LcdashError(f"{args.db}: no objects of survey {args.survey!r}")
        bar = TqdmProgress(f"embed ({name})", "LC")
        try:
            res = embed_store(store, name, band=args.band, batch_size=args.batch_size, progress=bar,
                              oids=oids, overwrite=args.overwrite, device=args.device,
                              precision=args.precision, fold_periods=args.fold_periods)
        finally:
            bar.close()
    rate = f", {res['lc_per_s']:.0f} LC/s" if res["lc_per_s"] else ""
    print(f"encoder {name!r}: embedded {res['rows']} light curves ({res['windows']} windows) in "
          f"{res['seconds']:.1f} s{rate}" + ("" if res["objects"] else " (all were already embedded)"))
    return 0


def cmd_embed_file(args: argparse.Namespace) -> int:
    from lcdash.embed import embed_frame, write_embeddings_parquet
    from lcdash.io import guess_mapping, parse_mapping, read_table
    from lcdash.store.embeddings import DEFAULT_ENCODER, default_encoder_dir

    model_dir = Path(args.model)
    if not (model_dir / "model.safetensors").exists():
        if args.model == DEFAULT_ENCODER:
            model_dir = default_encoder_dir()
        else:
            raise ModelError(f"{args.model} is not an encoder folder (no model.safetensors)")
    df = read_table(args.path)
    roles = ("object_id", "time", "mag", "mag_err", "band")
    mapping = {r: c for r, c in guess_mapping(df.columns).items() if r in roles}
    mapping.update({r: c for r, c in parse_mapping(args.map).items() if r in roles})
    rename = {}
    for role in roles:
        col = role if role in df.columns else mapping.get(role)
        if col is not None and col in df.columns:
            rename[col] = role
    df = df[list(rename)].rename(columns=rename)
    bar = TqdmProgress("embed-file", "window")
    try:
        out = embed_frame(df, model_dir, batch_size=args.batch_size, device=args.device, progress=bar,
                          precision=args.precision)
    finally:
        bar.close()
    path = write_embeddings_parquet(out, args.out)
    n_layers = sum(c.startswith("layer_") for c in out.columns)
    print(json.dumps({"out": str(path), "rows": len(out), "layers": n_layers,
                      "d_model": int(len(out["layer_0"].iloc[0])) if len(out) else None}))
    return 0
