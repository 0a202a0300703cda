"""Masked-magnitude pretraining and fine-tuning of Astromer encoders.

The objective of Donoso-Oliva et al. (2023, A&A 670, A54; 2026, A&A 707, A170): of the valid steps of
each 200-observation window, 50% are probed; of those 20% stay visible with their true magnitude,
20% of the rest get a magnitude from a random step of the same window, the others are hidden; the
loss is the masked RMSE over probed steps (optionally weighted by 1/sigma for Astromer 2). Training
draws one random contiguous window per light curve per epoch; validation uses fixed windows and a
fixed mask, so its RMSE is comparable from epoch to epoch, and drives early stopping.

Inputs are `LightCurveBatch`es or sequences of (time, mag[, err]) arrays (`lcdash.windows.iter_curves`)
so a worker process can train without the store. Everything is written as safetensors + JSON (never
pickle) into `out_dir`:

* `model.safetensors` + `config.json`: the best encoder so far (`lcdash.weights.load_encoder` reads it);
* `checkpoint.safetensors` + `checkpoint.json`: the last completed epoch (model, Adam state, RNG
  states, history) from which `resume=True` continues exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from lcdash.ddp import context as ddp_context
from lcdash.device import pick_device
from lcdash.errors import ModelError
from lcdash.lightcurve import fold_curves
from lcdash.periods import folding_periods
from lcdash.progress import is_cancelled
from lcdash.weights import load_encoder, read_encoder_config, save_encoder
from lcdash.windows import iter_curves, random_window

PRETRAIN_LR = 1e-3
FINETUNE_LR = 1e-5
CHECKPOINT = "checkpoint.safetensors"
CHECKPOINT_META = "checkpoint.json"

ProgressFn = Callable[..., None]


@dataclass
class TrainConfig:
    """Settings of one masked-reconstruction run. `lr=None` means 1e-3 for pretraining and 1e-5 for
    fine-tuning (the paper's values)."""

    epochs: int = 100
    batch_size: int = 256
    lr: float | None = None
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9
    patience: int = 20  # epochs without a better validation loss before stopping
    min_delta: float = 0.0  # an improvement must beat the best by more than this
    val_fraction: float = 0.1  # used only when no validation set is given
    error_weighted: bool = False  # Astromer 2's 1/sigma loss weights
    probed: float = 0.5
    same: float = 0.2
    random: float = 0.2
    seed: int = 0
    device: str | None = None  # None: CUDA, then MPS, then CPU
    amp: bool = True  # bf16 autocast on CUDA (CPU and MPS always train in float32)
    num_threads: int | None = None  # torch CPU threads; None leaves torch's default
    max_minutes: float | None = None  # wall-clock budget; the epoch in progress ends early
    val_batch_size: int = 512

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ModelError(f"unknown training settings: {sorted(unknown)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)

    def validate(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.val_batch_size < 1:
            raise ModelError("epochs must be >= 0 and batch sizes >= 1")
        if self.lr is not None and not self.lr > 0:
            raise ModelError(f"learning rate must be positive, got {self.lr}")
        if not 0 < self.val_fraction < 1:
            raise ModelError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0 < self.probed <= 1 or not 0 <= self.same <= 1 or not 0 <= self.random <= 1:
            raise ModelError("masking fractions must lie in [0, 1] (probed in (0, 1])")


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def _curves(data) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(time float64, mag float32, err float32 | None) of each light curve with at least 2 points."""
    out = []
    for t, m, e in iter_curves(data):
        t = np.asarray(t, np.float64)
        if len(t) < 2:
            continue
        out.append((t, np.asarray(m, np.float32), None if e is None else np.asarray(e, np.float32)))
    return out


def _fold_for_training(curves: list) -> list:
    """Each curve folded at its found period (`lcdash.periods.folding_periods`), phase-sorted,
    time = phase x period: the input of the folded variants."""
    periods = folding_periods(curves)
    subs, _ = fold_curves(curves, periods, window=max(len(c[0]) for c in curves))  # one sub-curve each
    return subs


def _random_cycle_window(curves: list, window: int, rng):
    """Training windows of folded curves: one random sub-curve of the k = ceil(n / window) interleaved
    ones that inference uses (`fold_curves`), so each window spans the whole cycle."""
    subs = []
    for c in curves:
        k = -(-len(c[0]) // window)
        j = int(rng.integers(k)) if k > 1 else 0
        subs.append(tuple(None if a is None else a[j::k] for a in c))
    return random_window(subs, window, rng)


def _split(curves: list, fraction: float, seed: int) -> tuple[list, list]:
    if len(curves) < 2:
        raise ModelError(f"need at least 2 light curves to split off a validation set, got {len(curves)}")
    perm = np.random.default_rng(seed).permutation(len(curves))
    n_val = min(max(1, round(fraction * len(curves))), len(curves) - 1)
    return [curves[i] for i in perm[n_val:]], [curves[i] for i in perm[:n_val]]


def _masked_inputs(win, cfg: TrainConfig, generator):
    """Tensors (input_mag, time, mask_in, target, probed, weights | None) for a Windows object, masked
    on the CPU with `generator` so that a run is reproducible whatever the device."""
    import torch

    from lcdash.models.astromer import error_weights, mask_for_pretraining

    mag = torch.from_numpy(win.mag)
    tim = torch.from_numpy(win.time)
    valid = 1.0 - torch.from_numpy(win.mask_in)
    mask_in, probed, inp = mask_for_pretraining(
        valid, generator, probed=cfg.probed, same=cfg.same, random=cfg.random, mag=mag
    )
    weights = None
    if cfg.error_weighted:
        err = torch.from_numpy(win.err)
        weights = error_weights(err, valid)
        no_err = weights.sum(1) == 0  # windows without usable errors fall back to equal weights
        weights[no_err] = valid[no_err]
    return inp, tim, mask_in, mag, probed, weights


def _per_sample_sq(pred, target, probed, weights=None):
    """Per-window mean (weighted) squared error over probed steps [B] (masked_rmse before its batch
    mean), so validation RMSE is exact over the whole set rather than a mean of batch RMSEs."""
    sq = (pred.float() - target) ** 2 * probed
    if weights is not None:
        sq = sq * weights
    return sq.sum(1) / probed.sum(1).clamp(min=1.0)


# ------------------------------------------------------------------------------------------------
# checkpoints (safetensors + JSON)
# ------------------------------------------------------------------------------------------------
def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _save_checkpoint(out: Path, model, opt, meta: dict, rng: np.random.Generator, gen) -> None:
    import torch
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    sd = opt.state_dict()
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if not torch.is_tensor(v):
                raise ModelError(f"unexpected non-tensor optimizer state {k!r}")
            tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
    tensors["rng.mask"] = gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {
        **meta,
        "param_groups": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
                         for g in sd["param_groups"]],
        "numpy_rng": rng.bit_generator.state,
    }
    tmp = out / (CHECKPOINT + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, out / CHECKPOINT)
    _atomic_write_text(out / CHECKPOINT_META, json.dumps(meta, indent=1))


def _load_checkpoint(out: Path, model, opt, gen) -> tuple[dict, np.random.Generator]:
    import torch
    from safetensors.torch import load_file

    meta = json.loads((out / CHECKPOINT_META).read_text())
    tensors = load_file(str(out / CHECKPOINT))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})
    gen.set_state(tensors["rng.mask"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["numpy_rng"]
    return meta, rng


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------
def pretrain(
    train,
    val,
    cfg: TrainConfig | None = None,
    model_cfg=None,
    out_dir: str | os.PathLike | None = None,
    init_from: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    resume: bool = False,
) -> dict:
    """Masked-reconstruction training of an Astromer encoder; returns a summary dict.

    train, val: LightCurveBatch or sequences of (time, mag[, err]); val=None splits `cfg.val_fraction`
    of train off. model_cfg: an AstromerConfig (or its dict) for a fresh model (default Astromer 2);
    init_from: an encoder folder to start from instead (its config wins). out_dir: the new encoder's
    folder (`pretrain(train, val, cfg, out_dir=...)` for the default model).
    progress(step, total, message, metrics=None) is called as training goes; the run stops, keeping
    the last completed epoch's checkpoint, once `progress.cancelled` is true.

    Returns {history, best_val_rmse, baseline_val_rmse (predicting each window's mean), best_epoch,
    epochs, stopped, path, device, windows_per_s, ...}."""
    import torch

    from lcdash.models.astromer import Astromer, AstromerConfig

    if isinstance(model_cfg, str | os.PathLike):
        raise ModelError("pretrain's model_cfg is an AstromerConfig or a dict; give the folder as out_dir=")
    if out_dir is None:
        raise ModelError("pretrain needs an output folder (out_dir)")
    cfg = cfg or TrainConfig()
    cfg.validate()
    lr = cfg.lr if cfg.lr is not None else (FINETUNE_LR if init_from else PRETRAIN_LR)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))

    curves = _curves(train)
    if val is None:
        curves, val_curves = _split(curves, cfg.val_fraction, cfg.seed)
    else:
        val_curves = _curves(val)
    if not curves or not val_curves:
        raise ModelError(
            f"need light curves with >= 2 observations for training ({len(curves)}) and validation "
            f"({len(val_curves)})"
        )

    # the model: from an encoder folder, a given config, or the Astromer 2 default
    torch.manual_seed(cfg.seed)
    source = None
    if init_from is not None:
        model, mcfg = load_encoder(init_from)
        source = str(init_from)
        init_meta = read_encoder_config(init_from)
    else:
        if isinstance(model_cfg, dict):
            model_cfg = AstromerConfig.from_dict(model_cfg)
        mcfg = model_cfg or AstromerConfig.astromer2()
        model = Astromer(mcfg)
        init_meta = {}
    dd = ddp_context(cfg.device)  # None unless launched by torchrun with several processes
    lead = dd is None or dd.rank == 0  # the process that reports and writes files
    device = dd.device if dd is not None else pick_device(cfg.device)
    model.to(device)
    window = mcfg.window
    draw = random_window
    if getattr(mcfg, "fold", False):  # lcdash's folded variants: whole-cycle windows of folded curves
        curves, val_curves = _fold_for_training(curves), _fold_for_training(val_curves)
        draw = _random_cycle_window
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=tuple(cfg.betas), eps=cfg.eps)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    use_amp = bool(cfg.amp and device.type == "cuda")

    # fixed validation windows and masks: drawn once from their own seeds
    vwin = draw(val_curves, window, np.random.default_rng(cfg.seed + 1))
    vdata = _masked_inputs(vwin, cfg, torch.Generator().manual_seed(cfg.seed + 1))

    # the RMSE of predicting every probed magnitude as its window's mean (0 after mean subtraction):
    # a model below this has learned more than the mean
    baseline = math.sqrt(_per_sample_sq(torch.zeros_like(vdata[3]), vdata[3], vdata[4]).mean().item())

    def evaluate() -> tuple[float, float]:
        """(validation RMSE unweighted, validation loss = the training objective)."""
        model.eval()
        sq, sqw = [], []
        v_lo, v_hi = (0, len(vwin)) if dd is None else dd.shard(len(vwin))  # DDP: each rank a share
        with torch.inference_mode():
            for lo in range(v_lo, v_hi, cfg.val_batch_size):
                hi = min(lo + cfg.val_batch_size, v_hi)
                inp, tim, mi, tgt, prb, w = (None if x is None else x[lo:hi].to(device) for x in vdata)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    pred = model(inp, tim, mi)
                sq.append(_per_sample_sq(pred, tgt, prb).cpu())
                sqw.append(_per_sample_sq(pred, tgt, prb, w).cpu() if w is not None else sq[-1])
        model.train()
        if dd is not None:  # the exact mean over every rank's share
            s, sw, c = dd.all_sum([float(sum(x.sum() for x in sq)), float(sum(x.sum() for x in sqw)),
                                   float(v_hi - v_lo)])
            return math.sqrt(s / c), math.sqrt(sw / c)
        return math.sqrt(torch.cat(sq).mean().item()), math.sqrt(torch.cat(sqw).mean().item())

    n = len(curves)
    n_local = n if dd is None else math.ceil(n / dd.world)  # DistributedSampler pads to equal shares
    steps_per_epoch = math.ceil(n_local / cfg.batch_size)
    history: list[dict] = []
    best, best_epoch, bad_epochs, start_epoch = math.inf, 0, 0, 1
    meta_base = {
        "train_config": cfg.to_dict(), "model_config": mcfg.to_dict(), "init_from": source,
        "n_train": n, "n_val": len(val_curves), "lr": lr,
    }
    if resume and (out / CHECKPOINT_META).exists():
        saved_cfg = json.loads((out / CHECKPOINT_META).read_text()).get("model_config")
        if saved_cfg != mcfg.to_dict():
            raise ModelError(f"cannot resume from {out}: its checkpoint is of another model configuration")
        meta, rng = _load_checkpoint(out, model, opt, gen)
        history = meta["history"]
        best, best_epoch, bad_epochs = meta["best_val_loss"], meta["best_epoch"], meta["bad_epochs"]
        start_epoch = meta["epoch"] + 1
        if meta.get("stopped") == "early_stopping":
            start_epoch = cfg.epochs + 1  # nothing left to do
        for g in opt.param_groups:
            g["lr"] = lr
    net = model if dd is None else dd.wrap(model)  # DDP broadcasts rank 0's weights

    def report(step, message, metrics=None):
        if progress is not None and lead:
            progress(step, total_steps, message, metrics)

    def cancelled() -> bool:
        return is_cancelled(progress)

    def save_best(epoch, val_rmse):
        extra = {
            "source": f"trained by lcdash ({'fine-tuned from ' + source if source else 'pretrained'})",
            "training": {**meta_base, "best_epoch": epoch, "best_val_rmse": val_rmse,
                         "baseline_val_rmse": baseline,
                         # how long it trained up to the saved epoch (epochs before a resume included)
                         "train_seconds": round(sum(h.get("seconds") or 0.0 for h in history), 1),
                         "train_windows": int(sum(h.get("windows") or 0 for h in history))},
        }
        if init_meta.get("source") is not None:
            extra["init_source"] = init_meta.get("source")
        if lead:
            save_encoder(model, mcfg, out, extra=extra)

    total_steps = max(cfg.epochs - start_epoch + 1, 0) * steps_per_epoch
    if not history:  # epoch 0: the starting point of the validation curve
        v_rmse, v_loss = evaluate()
        history.append({"epoch": 0, "train_rmse": None, "val_rmse": v_rmse, "val_loss": v_loss,
                        "seconds": 0.0})
        best, best_epoch = v_loss, 0
        save_best(0, v_rmse)
        report(0, f"initial validation RMSE {v_rmse:.4f} (window mean: {baseline:.4f})",
               {"val_rmse": v_rmse, "baseline_val_rmse": baseline})

    t_start = time.monotonic()
    stopped = "max_epochs"
    step = 0
    train_windows, train_seconds = 0, 0.0
    model.train()
    last_report = 0.0
    for epoch in range(start_epoch, cfg.epochs + 1):
        perm = rng.permutation(n)
        win_rng, mask_gen = rng, gen
        if dd is not None:  # this rank's share of the (shared) permutation, its own windows and masks
            perm = dd.shard_perm(perm)
            win_rng, mask_gen = dd.epoch_rngs(cfg.seed, epoch)
        t_epoch = time.monotonic()
        sum_sq, n_seen, out_of_time = 0.0, 0, False
        for s in range(steps_per_epoch):
            if cancelled() if dd is None else dd.any(cancelled()):
                stopped = "cancelled"
                break
            idx = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            win = draw([curves[i] for i in idx], window, win_rng)
            inp, tim, mi, tgt, prb, w = (None if x is None else x.to(device, non_blocking=True)
                                         for x in _masked_inputs(win, cfg, mask_gen))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                pred = net(inp, tim, mi)
            per = _per_sample_sq(pred, tgt, prb, w)
            loss = torch.sqrt(per.mean())  # = masked_rmse(pred, tgt, prb, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sum_sq += float(per.detach().sum())
            n_seen += len(idx)
            step += 1
            now = time.monotonic()
            if now - last_report > 0.5 or s == steps_per_epoch - 1:
                last_report = now
                report(step, f"epoch {epoch}/{cfg.epochs} step {s + 1}/{steps_per_epoch}",
                       {"epoch": epoch, "train_rmse": math.sqrt(sum_sq / n_seen)})
            over = cfg.max_minutes is not None and now - t_start > cfg.max_minutes * 60
            if over if dd is None or cfg.max_minutes is None else dd.any(over):
                out_of_time = True
                break
        if stopped == "cancelled":
            break
        seconds = time.monotonic() - t_epoch
        if dd is not None:  # every rank's windows and squared errors
            sum_sq, n_seen = dd.all_sum([sum_sq, float(n_seen)])
            n_seen = int(n_seen)
        train_windows += n_seen
        train_seconds += seconds
        v_rmse, v_loss = evaluate()
        history.append({"epoch": epoch, "train_rmse": math.sqrt(sum_sq / max(n_seen, 1)), "val_rmse": v_rmse,
                        "val_loss": v_loss, "seconds": round(seconds, 3), "windows": n_seen})
        if v_loss < best - cfg.min_delta:
            best, best_epoch, bad_epochs = v_loss, epoch, 0
            save_best(epoch, v_rmse)
        else:
            bad_epochs += 1
        if bad_epochs >= cfg.patience:
            stopped = "early_stopping"
        elif out_of_time:
            stopped = "max_minutes"
        if lead:
            _save_checkpoint(out, model, opt, {
                **meta_base, "epoch": epoch, "history": history, "best_val_loss": best,
                "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                "stopped": stopped if stopped != "max_epochs" else None,
            }, rng, gen)
        report(step, f"epoch {epoch}: val RMSE {v_rmse:.4f} (best epoch {best_epoch})",
               {"epoch": epoch, "train_rmse": history[-1]["train_rmse"], "val_rmse": v_rmse,
                "best_val_rmse": _best_rmse(history, best_epoch)})
        if stopped != "max_epochs":
            break
    if dd is not None:  # no rank leaves before rank 0 has written the last checkpoint
        dd.barrier()
        dd.close()

    return {
        "history": history,
        "best_val_rmse": _best_rmse(history, best_epoch),
        "baseline_val_rmse": baseline,
        "best_epoch": best_epoch,
        "epochs": history[-1]["epoch"] if history else 0,
        "stopped": stopped,
        "path": str(out),
        "device": str(device),
        "lr": lr,
        "n_train": n,
        "n_val": len(val_curves),
        "windows_per_s": train_windows / train_seconds if train_seconds > 0 else None,
        "n_params": sum(p.numel() for p in model.parameters()),
        "world_size": 1 if dd is None else dd.world,
    }


def _best_rmse(history: list[dict], best_epoch: int) -> float | None:
    return next((h["val_rmse"] for h in history if h["epoch"] == best_epoch), None)


def finetune(
    train,
    val,
    cfg: TrainConfig | None = None,
    from_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    resume: bool = False,
) -> dict:
    """The pretraining objective continued from the encoder in `from_dir` (lr 1e-5 unless cfg.lr is
    set); labels, if the data has any, are not used. Same return value as `pretrain`."""
    if from_dir is None or out_dir is None:
        raise ModelError("finetune needs the encoder folder to start from and an output folder")
    if Path(from_dir).resolve() == Path(out_dir).resolve():
        raise ModelError("finetune would overwrite its starting encoder: choose another output folder")
    cfg = cfg or TrainConfig()
    if cfg.lr is None:
        cfg = replace(cfg, lr=FINETUNE_LR)
    return pretrain(train, val, cfg, None, out_dir, init_from=from_dir, progress=progress, resume=resume)
