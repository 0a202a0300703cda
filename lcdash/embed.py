"""Encoder inference: per-object, per-layer mean embeddings.

For every light curve: its consecutive 200-observation windows (`lcdash.windows`), the encoder's L+1
hidden states for each window (0 = input embedding), each averaged over the window's valid steps,
then averaged over the object's windows -> [L+1, d]. Windows of many light curves are packed into
fixed-size model batches and per-object sums are accumulated, so memory stays bounded by one model
batch plus the [N, L+1, d] result whatever the light curves' lengths.

Streaming: the window table of a whole batch comes from the light curves' lengths alone, and each
model batch is gathered and standardised in one vectorised step (about 150k windows per CPU-second,
against about 1k for the model on 2 cores). On a GPU a background thread gathers the next batch while
the device computes (numpy releases the GIL); `embed_store` reads the next chunk of light curves from
the store while the current one is embedded. Full windows are batched apart from padded ones, so most model
batches need no attention bias (`Astromer.fused_bias`); the per-object sums do not depend on the
order.

Precision: `precision="auto"` (the default) resolves with `lcdash.device.resolve_precision`: bf16
autocast only once the probe's F1 on bf16 embeddings is verified unchanged, on hardware with native
bf16 (CUDA, CPUs with avx512_bf16 / AMX) and where a timed call shows it faster; float32 otherwise
(today: everywhere). `"float32"` / `"bf16"` force one. bf16's error is not small: on the golden
Catalina windows with macho_a0 the relative error of the pooled embeddings is 2.5e-2 at the middle
layer and 9.3e-3 at the last (elements up to 0.46 off, values ~0.8; tests/test_device.py); on a CPU
without native bf16 (avx512f + vnni only) it ran 0.77-1.01x as fast as float32.
bench/encoder_throughput.py measures both.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from lcdash.device import pick_device, resolve_precision
from lcdash.errors import JobError, ModelError, ValidationError
from lcdash.lightcurve import fold_curves
from lcdash.periods import FOLD_PERIODS, fold_periods_of, folding_periods
from lcdash.progress import is_cancelled
from lcdash.weights import load_encoder
from lcdash.windows import (
    flatten_curves,
    gather_windows,
    group_curves,
    iter_curves,
    window_table,
    windows_per_curve,
)

ProgressFn = Callable[..., None]
PRECISIONS = ("auto", "float32", "bf16")


def prefetch(items: Iterable, depth: int = 2) -> Iterator:
    """Iterate `items` in a background thread, up to `depth` items ahead (I/O and numpy release the
    GIL, so producing the next item overlaps the consumer's work). An exception in the producer is
    raised in the consumer; leaving the loop early stops the producer."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run():
        try:
            for x in items:
                if not put((None, x)):
                    return
        except BaseException as exc:  # handed to the consumer
            put((exc, None))
            return
        put((None, done))

    thread = threading.Thread(target=run, name="lcdash-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            exc, x = q.get()
            if exc is not None:
                raise exc
            if x is done:
                return
            yield x
    finally:
        stop.set()
        thread.join(timeout=5)


def count_windows(batch, window: int = 200) -> int:
    """How many encoder windows `batch` makes (what embed_batch's progress counts)."""
    return int(windows_per_curve(flatten_curves(batch).length, window).sum())


def _resolve_device(model, device):
    import torch

    if device is None:
        try:
            return next(model.parameters()).device
        except StopIteration:
            return pick_device()
    return device if isinstance(device, torch.device) else pick_device(device)


def window_layer_means(model, mag, time, mask_in):
    """Per-window means over valid steps of every hidden state: [B, L+1, d] float32.
    mag/time/mask_in: tensors [B, T] on the model's device (mask_in 1 = padding)."""
    import torch

    valid = (1.0 - mask_in.float()).unsqueeze(1)  # [B, 1, T]
    count = valid.sum(-1).clamp(min=1.0)  # [B, 1]
    hidden = model.encode(mag, time, mask_in)
    # one batched matrix product per layer: [B, 1, T] @ [B, T, d] -> [B, 1, d]; in float32 under
    # bf16 autocast too (a bf16 sum of 200 steps alone moved the pooled input embedding by 1%)
    with torch.autocast(mag.device.type, enabled=False):
        means = [torch.bmm(valid, h.float()).squeeze(1) / count for h in hidden]
    return torch.stack(means, 1)


def default_batch_size(device) -> int:
    """Windows per model call: 64 on CPU, where a batch's attention maps (B x heads x 200 x 200)
    then stay in cache (macho_a0 on 2 cores: 431 LC/s at 64 against 322 at 256,
    bench/encoder_throughput.py), 256 on a GPU."""
    return 64 if getattr(device, "type", str(device)) == "cpu" else 256


def _gather_in_background(device) -> bool:
    """On a GPU the next batch is gathered while the device computes. On a CPU the model already
    keeps every core busy and the gather is ~0.3% of its time, so a thread only competes with it
    (2 cores: end to end / model alone 0.91 with the thread, 1.07 without, one torch thread)."""
    return getattr(device, "type", str(device)) != "cpu"


def _model_batches(curves, owner, start, n_obs, window: int, batch_size: int, pin: bool) -> Iterator:
    """(mag, time, mask_in, owner) tensors of consecutive `batch_size` slices of the window table."""
    import torch

    for lo in range(0, len(owner), batch_size):
        hi = min(lo + batch_size, len(owner))
        w = gather_windows(curves, owner[lo:hi], start[lo:hi], n_obs[lo:hi], window)
        xs = [torch.from_numpy(x) for x in (w.mag, w.time, w.mask_in)]
        if pin:
            xs = [x.pin_memory() for x in xs]
        yield (*xs, torch.from_numpy(w.owner))


def embed_batch(
    model,
    batch,
    batch_size: int | None = None,
    device=None,
    progress: ProgressFn | None = None,
    precision: str = "auto",
    periods: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-object per-layer mean embeddings of the light curves in `batch` (a LightCurveBatch or a
    sequence of (time, mag[, err]) arrays; mag in magnitudes, time in days).

    A folded encoder (`cfg.fold`) reads each curve folded at `periods` (days; Lomb-Scargle where a
    period is missing or None is given, see `folding_periods`) as whole-cycle sub-curves
    (`lcdash.lightcurve.fold_curves`); n_windows then counts those sub-curves.

    Returns (n_windows int32[N], layers float32[N, L+1, d]); a light curve without observations gets
    n_windows 0 and zeros. `batch_size` counts windows per model call (default: `default_batch_size`
    of the device). `precision`: "auto" (see `lcdash.device.resolve_precision`), "float32" or "bf16".
    `progress(done, total, message)` counts windows; a cancelled progress (progress.cancelled)
    raises JobError."""
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if getattr(model.cfg, "fold", False):
        return _embed_folded(model, batch, periods, batch_size=batch_size, device=device,
                             progress=progress, precision=precision)
    return _embed_windows(model, batch, batch_size, device, progress, precision)


def _embed_windows(model, batch, batch_size, device, progress, precision) -> tuple[np.ndarray, np.ndarray]:
    """embed_batch's work: the encoder's consecutive windows of each curve, as they are."""
    import torch

    cfg = model.cfg
    device = _resolve_device(model, device)
    batch_size = default_batch_size(device) if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ModelError(f"batch_size must be >= 1, got {batch_size}")
    if next(model.parameters()).device != device:
        model.to(device)
    curves = flatten_curves(batch)
    n = len(curves)
    owner, start, n_obs = window_table(curves.length, cfg.window)
    order = np.argsort(n_obs < cfg.window, kind="stable")  # full windows first: bias-free batches
    owner, start, n_obs = owner[order], start[order], n_obs[order]
    n_windows = np.bincount(owner, minlength=n).astype(np.int32)
    total = len(owner)
    sums = torch.zeros(n, cfg.n_layers + 1, cfg.d_model, dtype=torch.float64)
    was_training = model.training
    model.eval()
    use_bf16 = total > 0 and resolve_precision(precision, device, model) == "bf16"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
    batches = _model_batches(curves, owner, start, n_obs, cfg.window, batch_size, device.type == "cuda")
    done = 0
    try:
        with torch.inference_mode(), autocast:
            for mag, tim, mi, own in (prefetch(batches) if _gather_in_background(device) else batches):
                if is_cancelled(progress):
                    raise JobError("embedding cancelled")
                mag, tim, mi = (x.to(device, non_blocking=True) for x in (mag, tim, mi))
                means = window_layer_means(model, mag, tim, mi)
                sums.index_add_(0, own, means.to("cpu", torch.float64))
                done += len(own)
                if progress is not None:
                    progress(done, total, f"embedded {done}/{total} windows")
    finally:
        model.train(was_training)
    layers = (sums / torch.from_numpy(np.maximum(n_windows, 1)).to(torch.float64)[:, None, None]).float()
    return n_windows, layers.numpy()


def _embed_folded(model, batch, periods, **kw) -> tuple[np.ndarray, np.ndarray]:
    """embed_batch for folded encoders: embed the whole-cycle sub-curves, then average them per object."""
    curves = list(iter_curves(batch))
    subs, owner = fold_curves(curves, folding_periods(curves, periods), model.cfg.window)
    nw_sub, layers_sub = _embed_windows(model, subs, **kw)  # each sub-curve is one plain window
    n = len(curves)
    n_windows = np.bincount(owner, weights=nw_sub, minlength=n).astype(np.int32)
    sums = np.zeros((n,) + layers_sub.shape[1:], np.float64)
    np.add.at(sums, owner, layers_sub.astype(np.float64) * nw_sub[:, None, None])
    return n_windows, (sums / np.maximum(n_windows, 1)[:, None, None]).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# the store
# ------------------------------------------------------------------------------------------------
def embed_store(
    store,
    encoder_name: str,
    band: str | None = None,
    batch_size: int | None = None,
    progress: ProgressFn | None = None,
    oids=None,
    chunk_size: int = 1024,
    overwrite: bool = False,
    device=None,
    precision: str = "auto",
    fold_periods: str = "catalogue",
) -> dict:
    """Embed objects of the store with a registered encoder into the embeddings table.

    A folded encoder folds each curve at its catalogue period, the found one where it has none
    (`fold_periods="catalogue"`), or at the period found from the light curve always ("found": the
    map then depends on the light curves alone). Found periods come from the store's periods table
    (`lcdash periods`); those missing are found here and stored (`periods_of_store`).

    band=None embeds every band; oids=None all objects. Objects that already have embeddings for
    the encoder (and band) are skipped unless overwrite. Light curves stream from the store in chunks
    of `chunk_size` objects, each chunk saved in its own transaction, so an interrupted run keeps
    what it finished. Returns {"encoder", "objects", "rows", "windows", "seconds", "lc_per_s"}."""
    from lcdash.store.embeddings import embedded_keys, get_encoder, save_embeddings

    fold_periods = "found" if fold_periods == "lomb-scargle" else fold_periods  # the name before issue 26
    if fold_periods not in FOLD_PERIODS:
        raise ModelError(f"fold_periods must be one of {', '.join(FOLD_PERIODS)}, got {fold_periods!r}")
    enc = get_encoder(store, encoder_name)
    model, cfg = load_encoder(enc["path"])
    sel_all = None if oids is None else np.asarray(oids, np.int64)
    bands = [band] if band is not None else list(store.bands(sel_all))
    todo: list[tuple[str, np.ndarray]] = []
    for b in bands:  # the objects observed in band b (read_batch refuses an oid without it)
        sel = store.objects(band=b, oids=sel_all, columns=["oid"])["oid"].to_numpy(np.int64)
        if not overwrite:
            sel = sel[~np.isin(sel, embedded_keys(store, encoder_name, b)[0])]
        if len(sel):
            todo.append((b, sel))
    total = int(sum(len(s) for _, s in todo))
    t0 = time.monotonic()
    done = rows = windows = 0
    reads = ((b, batch) for b, sel in todo
             for batch in store.iter_batches(sel, batch_size=chunk_size, band=b))
    for b, batch in prefetch(reads, depth=1):  # the next chunk is read while this one is embedded
        if is_cancelled(progress):
            raise JobError("embedding cancelled")
        periods = fold_periods_of(store, batch.oid, b, fold_periods, batch=batch) if cfg.fold else None
        nw, layers = embed_batch(model, batch, batch_size=batch_size, device=device, precision=precision,
                                 periods=periods)
        keep = nw > 0  # objects without observations in this band
        if keep.any():
            kept_bands = [bb for bb, k in zip(batch.band, keep, strict=True) if k]
            save_embeddings(store, encoder_name, np.asarray(batch.oid)[keep], kept_bands, nw[keep],
                            layers[keep])
        done += len(nw)
        rows += int(keep.sum())
        windows += int(nw.sum())
        if progress is not None:
            progress(done, total, f"embedded {done}/{total} light curves (band {b})")
    seconds = time.monotonic() - t0
    return {"encoder": encoder_name, "objects": done, "rows": rows, "windows": windows,
            "seconds": seconds, "lc_per_s": done / seconds if seconds > 0 else None,
            "precision": _resolved_precision(model, device, precision)}


def _resolved_precision(model, device, precision: str) -> str:
    return resolve_precision(precision, _resolve_device(model, device), model)


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
def embed_frame(
    observations: pd.DataFrame,
    model_dir: str | os.PathLike,
    batch_size: int | None = None,
    device=None,
    progress: ProgressFn | None = None,
    precision: str = "auto",
) -> pd.DataFrame:
    """Embed a table of observations (object_id, time, mag[, mag_err][, band]; any row order).

    Returns one row per object (and band, when the input has a band column) with object_id, [band,]
    n_windows and layer_0..layer_L (float32 arrays of d values: the mean of that layer's output over
    valid steps and windows; layer_0 is the input embedding). Rows with a missing time or magnitude
    are dropped; a duplicated (object, band, time) keeps its first row, as the store does."""
    missing = [c for c in ("object_id", "time", "mag") if c not in observations.columns]
    if missing:
        raise ValidationError(
            f"the light-curve table lacks column(s) {', '.join(missing)}; it has {list(observations.columns)}"
        )
    has_band = "band" in observations.columns
    cols = ["object_id", "time", "mag"] + (["band"] if has_band else [])
    df = observations[cols].copy()
    for c in ("time", "mag"):
        try:
            df[c] = pd.to_numeric(df[c])
        except (ValueError, TypeError) as exc:
            raise ValidationError(f"column {c!r} is not numeric: {exc}") from exc
    df = df[np.isfinite(df["time"].to_numpy(float)) & np.isfinite(df["mag"].to_numpy(float))]
    if df.empty:
        raise ValidationError("the light-curve table has no rows with a finite time and magnitude")
    df = df[df["object_id"].notna()]  # as groupby did: no light curve for a missing id
    if df.empty:
        raise ValidationError("the light-curve table has no rows with an object_id")
    keys = ["object_id", "band"] if has_band else ["object_id"]
    if has_band:
        df["band"] = df["band"].astype(str)
    heads, curves = group_curves(df, keys)
    index = heads["object_id"].tolist()

    model, cfg = load_encoder(model_dir)
    n_windows, layers = embed_batch(model, curves, batch_size=batch_size, device=device, progress=progress,
                                    precision=precision)
    out = {}
    out["object_id"] = index
    if has_band:
        out["band"] = heads["band"].tolist()
    out["n_windows"] = n_windows
    for layer in range(layers.shape[1]):
        out[f"layer_{layer}"] = list(layers[:, layer])
    return pd.DataFrame(out)


def write_embeddings_parquet(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write embed_frame's result with explicit Arrow types (layer columns list<float32>)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays, names = [], []
    for c in frame.columns:
        if c.startswith("layer_"):
            mat = np.stack(frame[c].to_numpy()).astype(np.float32, copy=False)
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(mat.ravel()), mat.shape[1])
                          .cast(pa.list_(pa.float32())))
        elif c == "n_windows":
            arrays.append(pa.array(frame[c].to_numpy(np.int32)))
        else:
            arrays.append(pa.array(frame[c].tolist()))
        names.append(c)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(arrays, names=names), path)
    return path
