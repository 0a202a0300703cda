"""Astromer input windows: 200 observations, per-window mean subtraction in float32, zero padding.

Reproduces the official Astromer 1 inference preprocessing (python-library `load_numpy` with
`sampling=False`; ../shared/golden/README.md section 2) bit-exactly: the raw columns are cast to
float32 *before* the mean is taken (raw MJD in float32 has ~0.004 d spacing, and a float64 mean moves
the times by up to 0.05 d), and the mean is numpy's float32 `mean(0)` of the [n, 3] window, the same
summation the reference's tensors match.

Windows start at 0, 200, 400, ...; the last one is clamped to the final 200 observations (it may
overlap its predecessor). Reference quirk NOT reproduced: its pivots are cumsum([0] + [200] * (N // 200)),
so a light curve of exactly N = 200 (or any multiple of 200) gets a duplicate of its last window; here
every distinct window appears once (N = 200 -> one window, N = 400 -> two).

Errors are not encoder inputs; they are returned raw (not mean-subtracted, unlike the reference,
which subtracts the mean from all three columns) because they serve as loss weights (1/sigma).

Everything is vectorised over windows (no Python loop per light curve): the light curves are
concatenated into flat arrays (`FlatCurves`), a window table (owner, start, length) is computed from
the lengths alone (`window_table`), and `gather_windows` builds any subset of windows with one
fancy-indexing gather. The mean keeps the reference's summation order: numpy's float32 `mean(0)`
of an [n, 3] array adds the rows one after the other and divides in float64, which
`_sequential_mean` does for all windows at once (adding the zero padding changes no sum).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from lcdash.errors import ModelError
from lcdash.lightcurve import LightCurveBatch

WINDOW = 200


@dataclass
class Windows:
    """Windows of one or more light curves, each row padded to `window` steps."""

    mag: np.ndarray  # float32 [W, T] window-mean subtracted, 0 on padding
    time: np.ndarray  # float32 [W, T] window-mean subtracted, 0 on padding
    # float32 [W, T] 1 = padding: Astromer's polarity (1 = a step attention ignores), the opposite of
    # LightCurveBatch.mask (True = observed)
    mask_in: np.ndarray
    err: np.ndarray  # float32 [W, T] raw errors (NaN if missing), 0 on padding
    start: np.ndarray  # int64 [W] index of the window's first observation in its light curve
    length: np.ndarray  # int32 [W] observations in the window
    owner: np.ndarray  # int64 [W] index of the light curve the window came from

    def __len__(self) -> int:
        return len(self.mag)

    def as_tuple(self):
        return self.mag, self.time, self.mask_in, self.err, self.owner


@dataclass
class FlatCurves:
    """Light curves concatenated: curve i is [offset[i], offset[i] + length[i]) of the flat arrays."""

    time: np.ndarray  # float64 [N]
    mag: np.ndarray  # float32 [N]
    err: np.ndarray  # float32 [N], NaN where missing
    length: np.ndarray  # int64 [B]
    offset: np.ndarray  # int64 [B]

    def __len__(self) -> int:
        return len(self.length)


def group_curves(frame, keys: list[str], keep=()) -> tuple:
    """The light curves of a long table (one observation a row: `keys`, time, mag, `keep`...; times
    and magnitudes finite): sorted by time, a repeated (keys, time) keeps its first row, as the store
    does. -> (heads: one row per curve with `keys` and the `keep` columns present, FlatCurves)."""
    df = frame.sort_values(keys + ["time"], kind="stable").drop_duplicates(keys + ["time"], keep="first")
    # the rows are sorted by key: one light curve per run of equal keys, flattened without a loop
    first = np.zeros(len(df), bool)
    first[:1] = True
    for k in keys:
        v = df[k].to_numpy()
        first[1:] |= v[1:] != v[:-1]
    starts = np.flatnonzero(first)
    curves = FlatCurves(
        time=df["time"].to_numpy(np.float64),
        mag=df["mag"].to_numpy(np.float32),
        err=np.full(len(df), np.nan, np.float32),
        length=np.diff(np.r_[starts, len(df)]).astype(np.int64),
        offset=starts.astype(np.int64),
    )
    heads = df.iloc[starts][keys + [k for k in keep if k in df.columns]].reset_index(drop=True)
    return heads, curves


def window_starts(n: int, window: int = WINDOW) -> list[int]:
    """Starts of the consecutive windows of an n-observation light curve (last clamped to n - window)."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window, window))
    starts.append(n - window)
    return starts


def windows_per_curve(length, window: int = WINDOW) -> np.ndarray:
    """How many windows each light curve of `length` observations makes (0 for an empty one). int64"""
    n = np.asarray(length, np.int64)
    return np.where(n > window, -(-(n - window) // window) + 1, (n > 0).astype(np.int64))


def window_table(length, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(owner, start, n_obs) int64 of every window of curves with these lengths, curve by curve in
    `window_starts` order; empty curves make none."""
    n = np.asarray(length, np.int64)
    k = windows_per_curve(n, window)
    owner = np.repeat(np.arange(len(n), dtype=np.int64), k)
    first = np.cumsum(k) - k  # index of each curve's first window
    j = np.arange(len(owner), dtype=np.int64) - first[owner]  # window number within its curve
    start = np.minimum(j * window, np.maximum(n[owner] - window, 0))
    return owner, start, np.minimum(n[owner] - start, window)


def _sequential_mean(x: np.ndarray, count: np.ndarray) -> np.ndarray:
    """float32 mean over axis 0 of x [T, W] (zeros beyond each column's count), summed row after row
    in float32 and divided in float64 like numpy's `mean(0, dtype=float32)` of an [n, 3] window."""
    s = x[0].copy()
    for row in x[1:]:  # a loop over the T steps, vectorised over all windows
        s += row
    return (s.astype(np.float64) / np.maximum(count, 1)).astype(np.float32)


def gather_windows(curves: FlatCurves, owner, start, n_obs, window: int = WINDOW) -> Windows:
    """The windows (owner, start, n_obs) of `curves`, standardised as the reference does: raw time
    and magnitude cast to float32 first, then the window's float32 mean subtracted."""
    owner = np.asarray(owner, np.int64)
    start = np.asarray(start, np.int64)
    n_obs = np.asarray(n_obs, np.int64)
    steps = np.arange(window, dtype=np.int64)[:, None]  # [T, 1]: time-major for the sums
    valid = steps < n_obs[None, :]  # [T, W]
    pos = np.where(valid, curves.offset[owner][None, :] + start[None, :] + steps, 0)
    out = {}
    for name, values in (("time", curves.time), ("mag", curves.mag)):
        x = np.where(valid, values[pos].astype(np.float32), np.float32(0))  # cast before the mean
        x -= _sequential_mean(x, n_obs)[None, :]
        out[name] = np.ascontiguousarray(np.where(valid, x, np.float32(0)).T)
    err = np.where(valid, curves.err[pos], np.float32(0)).astype(np.float32, copy=False)
    return Windows(
        mag=out["mag"],
        time=out["time"],
        mask_in=np.ascontiguousarray((~valid).T, dtype=np.float32),
        err=np.ascontiguousarray(err.T),
        start=start,
        length=n_obs.astype(np.int32),
        owner=owner,
    )


def flatten_curves(batch) -> FlatCurves:
    """`batch` (see `iter_curves`) as FlatCurves. A LightCurveBatch-like object (padded rows and a
    `mask`) is flattened with one boolean gather; a sequence is checked item by item and
    concatenated. FlatCurves pass through."""
    if isinstance(batch, FlatCurves):
        return batch
    if hasattr(batch, "time") and hasattr(batch, "mask"):
        mask = np.asarray(batch.mask, bool)
        length = mask.sum(1).astype(np.int64) if mask.ndim == 2 else np.zeros(0, np.int64)
        time = np.asarray(batch.time, np.float64)[mask] if mask.size else np.zeros(0)
        mag = (
            np.asarray(batch.mag)[mask].astype(np.float32, copy=False)
            if mask.size
            else np.zeros(0, np.float32)
        )
        errs = getattr(batch, "mag_err", None)
        if errs is None or not mask.size:
            err = np.full(len(time), np.nan, np.float32)
        else:
            err = np.asarray(errs)[mask].astype(np.float32, copy=False)
    else:
        curves = [_check_curve(*c, allow_empty=True) for c in iter_curves(batch)]
        length = np.array([len(t) for t, _, _ in curves], np.int64)
        if curves:
            time = np.concatenate([t for t, _, _ in curves])
            mag = np.concatenate([np.asarray(m, np.float32) for _, m, _ in curves])
            nan = np.float32(np.nan)
            err = np.concatenate(
                [np.full(len(t), nan) if e is None else np.asarray(e, np.float32) for t, _, e in curves]
            )
        else:
            time, mag, err = np.zeros(0), np.zeros(0, np.float32), np.zeros(0, np.float32)
    offset = np.cumsum(length) - length
    return FlatCurves(time=time, mag=mag, err=err, length=length, offset=offset)


def _check_curve(time, mag, err, allow_empty: bool = False):
    time = np.asarray(time, dtype=np.float64).ravel()
    mag = np.asarray(mag).ravel()
    if len(time) != len(mag):
        raise ModelError(f"light curve has {len(time)} times but {len(mag)} magnitudes")
    if err is not None:
        err = np.asarray(err).ravel()
        if len(err) != len(time):
            raise ModelError(f"light curve has {len(time)} times but {len(err)} errors")
    if len(time) == 0 and not allow_empty:
        raise ModelError("cannot make a window from an empty light curve")
    return time, mag, err


def astromer_windows(time, mag, err=None, window: int = WINDOW) -> Windows:
    """All consecutive windows of one light curve (time-sorted arrays; time in days, float64 ok)."""
    return batch_windows_full([_check_curve(time, mag, err)], window)


def iter_curves(batch) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(time, mag, err) of each light curve in FlatCurves (what `group_curves` gives embed-file and
    embed-catalog), in a LightCurveBatch-like object (fields time, mag, mag_err, mask: True =
    observed) or in a sequence whose items are (time, mag[, err]) tuples or [n, 2 | 3] arrays."""
    if isinstance(batch, FlatCurves):  # views of the flat arrays, no copy
        for lo, n in zip(batch.offset.tolist(), batch.length.tolist(), strict=True):
            yield batch.time[lo : lo + n], batch.mag[lo : lo + n], batch.err[lo : lo + n]
        return
    if hasattr(batch, "time") and hasattr(batch, "mask"):
        errs = getattr(batch, "mag_err", None)
        for i in range(len(batch.time)):
            m = np.asarray(batch.mask[i], bool)
            yield (
                np.asarray(batch.time[i])[m],
                np.asarray(batch.mag[i])[m],
                None if errs is None else np.asarray(errs[i])[m],
            )
        return
    for item in batch:
        if isinstance(item, np.ndarray) and item.ndim == 2:
            if item.shape[1] not in (2, 3):
                raise ModelError(f"a light-curve array must be [n, 2] or [n, 3], got {item.shape}")
            yield item[:, 0], item[:, 1], item[:, 2] if item.shape[1] == 3 else None
        else:
            item = tuple(item)
            if len(item) not in (2, 3):
                raise ModelError("each light curve must be (time, mag) or (time, mag, err)")
            yield item[0], item[1], item[2] if len(item) == 3 else None


def batch_windows(batch, window: int = WINDOW):
    """Consecutive windows of every light curve in `batch` (see `iter_curves` for what it may be).

    Returns (mag [W, T], time [W, T], mask_in [W, T], err [W, T], owner int64[W]) with owner = the
    index of the light curve each window came from. `batch_windows_full` also gives starts/lengths."""
    return batch_windows_full(batch, window).as_tuple()


def _nonempty(curves: FlatCurves) -> FlatCurves:
    if (curves.length == 0).any():
        raise ModelError("cannot make a window from an empty light curve")
    return curves


def batch_windows_full(batch, window: int = WINDOW) -> Windows:
    curves = _nonempty(flatten_curves(batch))
    return gather_windows(curves, *window_table(curves.length, window), window)


def random_window(batch, window: int = WINDOW, rng: np.random.Generator | int | None = None) -> Windows:
    """One random contiguous `window`-observation window per light curve (pretraining sampling);
    shorter light curves give their whole length, padded. owner = arange(B)."""
    rng = np.random.default_rng(rng)
    curves = _nonempty(flatten_curves(batch))
    n = curves.length
    # one scalar draw per long curve, in order: the same windows for a seed as before vectorising
    start = np.array(
        [int(rng.integers(0, k - window + 1)) if k > window else 0 for k in n.tolist()], np.int64
    )
    return gather_windows(curves, np.arange(len(n), dtype=np.int64), start, np.minimum(n, window), window)


def windows_of_batch(batch: LightCurveBatch, idx, window: int = WINDOW) -> tuple[LightCurveBatch, np.ndarray]:
    """The Astromer windows (`window_starts`) of the objects `idx` of `batch` as a new batch, one row
    per window with its raw observations (no mean subtraction; window scoring feeds every model the
    same samples), and the position in `idx` each row came from: (batch, owner int64[rows])."""
    rows, owner = [], []
    for pos, i in enumerate(idx):
        n = int(batch.length[i])
        for lo in window_starts(n, window):
            rows.append((i, lo, min(lo + window, n)))
            owner.append(pos)
    width = max((hi - lo for _, lo, hi in rows), default=0)
    B = len(rows)
    out = {
        "oid": np.zeros(B, np.int64),
        "band": [],
        "time": np.zeros((B, width)),
        "mag": np.zeros((B, width), np.float32),
        "mag_err": np.full((B, width), np.nan, np.float32),
        "mask": np.zeros((B, width), bool),
        "length": np.zeros(B, np.int32),
    }
    for r, (i, lo, hi) in enumerate(rows):
        obs = np.flatnonzero(batch.mask[i])[lo:hi]
        n = len(obs)
        out["oid"][r] = batch.oid[i]
        out["band"].append(batch.band[i])
        out["time"][r, :n] = batch.time[i][obs]
        out["mag"][r, :n] = batch.mag[i][obs]
        out["mag_err"][r, :n] = batch.mag_err[i][obs]
        out["mask"][r, :n] = True
        out["length"][r] = n
    return LightCurveBatch(**out), np.asarray(owner, dtype=np.int64)
