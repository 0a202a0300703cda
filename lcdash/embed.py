"""Encoder inference: per-object, per-layer mean embeddings.

For every light curve: its consecutive 200-observation windows (`lcdash.windows`), the encoder's L+1
hidden states for each window (0 = input embedding), each averaged over the window's valid steps,
then averaged over the object's windows -> [L+1, d]. Windows of many light curves are packed into
fixed-size model batches and per-object sums are accumulated, so memory stays bounded by one model
batch plus the [N, L+1, d] result whatever the light curves' lengths.

Precision: float32 by default (the official weights' parity holds in float32). `precision="bf16"`
runs the encoder under bfloat16 autocast. Its error is not small: on the golden Catalina windows
with macho_a0, bf16 moves the last layer's pooled embedding by up to 0.5 (mean 0.004, values ~0.8;
cosine >= 0.9993). It only pays on hardware with native bf16 (CUDA, CPUs with avx512_bf16 / AMX);
on a CPU without it (avx512f + vnni only) bf16 matrix products ran about 3x slower than float32.
bench/encoder_throughput.py measures both.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from lcdash.errors import JobError, ModelError, ValidationError

ProgressFn = Callable[..., None]
PRECISIONS = ("float32", "bf16")


def _cancelled(progress) -> bool:
    return bool(getattr(progress, "cancelled", False))


def _curves(batch) -> list[tuple[np.ndarray, np.ndarray, None]]:
    from lcdash.windows import iter_curves

    return [(np.asarray(t, np.float64), np.asarray(m), None) for t, m, _ in iter_curves(batch)]


def _window_chunks(curves, window: int, batch_size: int) -> Iterator:
    """Yield Windows objects of exactly `batch_size` windows (the last one may be smaller), owner =
    the curve's index in `curves`; empty curves are skipped."""
    from lcdash.windows import batch_windows_full, window_starts

    pending, pending_n, group, group_idx, group_n = [], 0, [], [], 0

    def flush_group():
        nonlocal group, group_idx, group_n, pending_n
        if group:
            w = batch_windows_full(group, window)
            w.owner = np.asarray(group_idx, np.int64)[w.owner]
            pending.append(w)
            pending_n += len(w)
        group, group_idx, group_n = [], [], 0

    def take(k: int):
        """Pop the first k pending windows as one Windows object."""
        nonlocal pending_n
        from lcdash.windows import Windows

        parts, need = [], k
        while need:
            w = pending[0]
            if len(w) <= need:
                parts.append(w)
                pending.pop(0)
                need -= len(w)
            else:
                parts.append(_slice(w, 0, need))
                pending[0] = _slice(w, need, len(w))
                need = 0
        pending_n -= k
        return Windows(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS})

    for i, (t, m, e) in enumerate(curves):
        if len(t) == 0:
            continue
        group.append((t, m, e))
        group_idx.append(i)
        group_n += len(window_starts(len(t), window))
        if group_n >= batch_size:
            flush_group()
            while pending_n >= batch_size:
                yield take(batch_size)
    flush_group()
    while pending_n:
        yield take(min(batch_size, pending_n))


_FIELDS = ("mag", "time", "mask_in", "err", "start", "length", "owner")


def _slice(w, lo: int, hi: int):
    from lcdash.windows import Windows

    return Windows(**{f: getattr(w, f)[lo:hi] for f in _FIELDS})


def count_windows(batch, window: int = 200) -> int:
    """How many encoder windows `batch` makes (what embed_batch's progress counts)."""
    from lcdash.windows import window_starts

    return sum(len(window_starts(len(t), window)) for t, _, _ in _curves(batch) if len(t))


def _resolve_device(model, device):
    import torch

    from lcdash.device import pick_device

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
    # one batched matrix product per layer: [B, 1, T] @ [B, T, d] -> [B, 1, d]
    means = [torch.bmm(valid.to(h.dtype), h).squeeze(1).float() / count for h in hidden]
    return torch.stack(means, 1)


def default_batch_size(device) -> int:
    """Windows per model call: 64 on CPU, where a batch's attention maps (B x heads x 200 x 200)
    then stay in cache (macho_a0 on 2 cores: 431 LC/s at 64 against 322 at 256,
    bench/encoder_throughput.py), 256 on a GPU."""
    return 64 if getattr(device, "type", str(device)) == "cpu" else 256


def embed_batch(
    model,
    batch,
    batch_size: int | None = None,
    device=None,
    progress: ProgressFn | None = None,
    precision: str = "float32",
    periods: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-object per-layer mean embeddings of the light curves in `batch` (a LightCurveBatch or a
    sequence of (time, mag[, err]) arrays; mag in magnitudes, time in days).

    A folded encoder (`cfg.fold`) reads each curve folded at `periods` (days; Lomb-Scargle where a
    period is missing or None is given, see `folding_periods`) as whole-cycle sub-curves
    (`lcdash.lightcurve.fold_curves`); n_windows then counts those sub-curves.

    Returns (n_windows int32[N], layers float32[N, L+1, d]); a light curve without observations gets
    n_windows 0 and zeros. `batch_size` counts windows per model call (default: `default_batch_size`
    of the device). `progress(done, total, message)`
    counts windows; a cancelled progress (progress.cancelled) raises JobError."""
    import torch

    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    cfg = model.cfg
    if getattr(cfg, "fold", False):
        return _embed_folded(model, batch, periods, batch_size=batch_size, device=device,
                             progress=progress, precision=precision)
    device = _resolve_device(model, device)
    batch_size = default_batch_size(device) if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ModelError(f"batch_size must be >= 1, got {batch_size}")
    if next(model.parameters()).device != device:
        model.to(device)
    was_training = model.training
    model.eval()
    curves = _curves(batch)
    n = len(curves)
    sums = torch.zeros(n, cfg.n_layers + 1, cfg.d_model, dtype=torch.float64)
    n_windows = np.zeros(n, np.int32)
    total = count_windows(curves, cfg.window) if progress is not None else 0
    done = 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    try:
        with torch.inference_mode(), autocast:
            for w in _window_chunks(curves, cfg.window, batch_size):
                if _cancelled(progress):
                    raise JobError("embedding cancelled")
                mag, tim, mi = (torch.from_numpy(x).to(device, non_blocking=True)
                                for x in (w.mag, w.time, w.mask_in))
                means = window_layer_means(model, mag, tim, mi)
                owner = torch.from_numpy(w.owner)
                sums.index_add_(0, owner, means.to("cpu", torch.float64))
                np.add.at(n_windows, w.owner, 1)
                done += len(w)
                if progress is not None:
                    progress(done, total, f"embedded {done}/{total} windows")
    finally:
        model.train(was_training)
    layers = (sums / torch.from_numpy(np.maximum(n_windows, 1)).to(torch.float64)[:, None, None]).float()
    return n_windows, layers.numpy()


def folding_periods(curves, periods=None) -> np.ndarray:
    """The period (days) each curve is folded at: the given one where finite and positive, else the
    strongest Lomb-Scargle peak on the Random Forest features' grid (`lcdash.features.best_periods`),
    else 1 day for curves too short for a periodogram (so no curve is ever refused)."""
    from lcdash.features import best_periods

    curves = list(curves)
    p = np.full(len(curves), np.nan) if periods is None else np.array(periods, dtype=np.float64)
    missing = np.flatnonzero(~(np.isfinite(p) & (p > 0)))
    if len(missing):
        p[missing] = best_periods([curves[i][:2] for i in missing])
    return np.where(np.isfinite(p) & (p > 0), p, 1.0)


def _embed_folded(model, batch, periods, **kw) -> tuple[np.ndarray, np.ndarray]:
    """embed_batch for folded encoders: embed the whole-cycle sub-curves, then average them per object."""
    from dataclasses import replace

    from lcdash.lightcurve import fold_curves

    curves = _curves(batch)
    subs, owner = fold_curves(curves, folding_periods(curves, periods), model.cfg.window)
    cfg = model.cfg
    model.cfg = replace(cfg, fold=False)  # the sub-curves are already folded: plain windows from here
    try:
        nw_sub, layers_sub = embed_batch(model, subs, **kw)
    finally:
        model.cfg = cfg
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
    precision: str = "float32",
    fold_periods: str = "catalogue",
) -> dict:
    """Embed objects of the store with a registered encoder into the embeddings table.

    A folded encoder folds each curve at its catalogue period, Lomb-Scargle where it has none
    (`fold_periods="catalogue"`), or at its Lomb-Scargle period always ("lomb-scargle": the map
    then depends on the light curves alone).

    band=None embeds every band; oids=None all objects. Objects that already have embeddings for
    the encoder (and band) are skipped unless overwrite. Light curves stream from the store in chunks
    of `chunk_size` objects, each chunk saved in its own transaction, so an interrupted run keeps
    what it finished. Returns {"encoder", "objects", "rows", "windows", "seconds", "lc_per_s"}."""
    import time

    from lcdash.store.embeddings import get_encoder, save_embeddings
    from lcdash.weights import load_encoder

    if fold_periods not in ("catalogue", "lomb-scargle"):
        raise ModelError(f"fold_periods must be 'catalogue' or 'lomb-scargle', got {fold_periods!r}")
    enc = get_encoder(store, encoder_name)
    model, cfg = load_encoder(enc["path"])
    sel_all = None if oids is None else np.asarray(oids, np.int64)
    bands = [band] if band is not None else list(store.bands(sel_all))
    todo: list[tuple[str, np.ndarray]] = []
    for b in bands:  # the objects observed in band b (read_batch refuses an oid without it)
        sel = store.objects(band=b, oids=sel_all, columns=["oid"])["oid"].to_numpy(np.int64)
        if not overwrite:
            sel = sel[~np.isin(sel, _embedded_oids(store, encoder_name, b))]
        if len(sel):
            todo.append((b, sel))
    total = int(sum(len(s) for _, s in todo))
    t0 = time.monotonic()
    done = rows = windows = 0
    for b, sel in todo:
        for batch in store.iter_batches(sel, batch_size=chunk_size, band=b):
            if _cancelled(progress):
                raise JobError("embedding cancelled")
            nw, layers = embed_batch(model, batch, batch_size=batch_size, device=device, precision=precision,
                                     periods=catalogue_periods(store, batch.oid)
                                     if cfg.fold and fold_periods == "catalogue" else None)
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
            "seconds": seconds, "lc_per_s": done / seconds if seconds > 0 else None}


def catalogue_periods(store, oids) -> np.ndarray:
    """The store's catalogue period (days) of each object, NaN where it has none: what a folded
    encoder folds at before falling back to Lomb-Scargle (the rule of the folded RNN / CNN)."""
    oids = np.asarray(oids, np.int64)
    cat = store.objects(oids=oids, columns=["oid", "period"]).set_index("oid")["period"]
    return cat.reindex(oids).to_numpy(dtype=np.float64, na_value=np.nan)


def _embedded_oids(store, encoder: str, band: str) -> np.ndarray:
    cur = store.cursor()
    try:
        rows = cur.execute("SELECT oid FROM embeddings WHERE encoder = ? AND band = ?",
                           [encoder, band]).fetchnumpy()
    finally:
        cur.close()
    return np.asarray(rows["oid"], np.int64)


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
def embed_frame(
    observations: pd.DataFrame,
    model_dir: str | os.PathLike,
    batch_size: int | None = None,
    device=None,
    progress: ProgressFn | None = None,
    precision: str = "float32",
) -> pd.DataFrame:
    """Embed a table of observations (object_id, time, mag[, mag_err][, band]; any row order).

    Returns one row per object (and band, when the input has a band column) with object_id, [band,]
    n_windows and layer_0..layer_L (float32 arrays of d values: the mean of that layer's output over
    valid steps and windows; layer_0 is the input embedding). Rows with a missing time or magnitude
    are dropped; a duplicated (object, band, time) keeps its first row, as the store does."""
    from lcdash.weights import load_encoder

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
    keys = ["object_id", "band"] if has_band else ["object_id"]
    if has_band:
        df["band"] = df["band"].astype(str)
    df = df.sort_values(keys + ["time"], kind="stable").drop_duplicates(keys + ["time"], keep="first")
    groups = df.groupby(keys, sort=False)
    index = list(groups.groups.keys())
    curves = [(g["time"].to_numpy(np.float64), g["mag"].to_numpy(np.float32)) for _, g in groups]

    model, cfg = load_encoder(model_dir)
    n_windows, layers = embed_batch(model, curves, batch_size=batch_size, device=device, progress=progress,
                                    precision=precision)
    out = {}
    if has_band:
        out["object_id"] = [k[0] for k in index]
        out["band"] = [k[1] for k in index]
    else:
        out["object_id"] = [k[0] if isinstance(k, tuple) else k for k in index]
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
