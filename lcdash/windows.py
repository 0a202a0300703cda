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
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from lcdash.errors import ModelError

WINDOW = 200


@dataclass
class Windows:
    """Windows of one or more light curves, each row padded to `window` steps."""

    mag: np.ndarray  # float32 [W, T] window-mean subtracted, 0 on padding
    time: np.ndarray  # float32 [W, T] window-mean subtracted, 0 on padding
    mask_in: np.ndarray  # float32 [W, T] 1 = padding
    err: np.ndarray  # float32 [W, T] raw errors (NaN if missing), 0 on padding
    start: np.ndarray  # int64 [W] index of the window's first observation in its light curve
    length: np.ndarray  # int32 [W] observations in the window
    owner: np.ndarray  # int64 [W] index of the light curve the window came from

    def __len__(self) -> int:
        return len(self.mag)

    def as_tuple(self):
        return self.mag, self.time, self.mask_in, self.err, self.owner


def window_starts(n: int, window: int = WINDOW) -> list[int]:
    """Starts of the consecutive windows of an n-observation light curve (last clamped to n - window)."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window, window))
    starts.append(n - window)
    return starts


def _standardize(time, mag, err, lo: int, hi: int, window: int, out, row: int) -> None:
    """Write window [lo, hi) of one light curve into row `row` of the output arrays."""
    n = hi - lo
    a = np.zeros((n, 3), np.float32)
    a[:, 0] = time[lo:hi]  # float64 -> float32 cast first, as the reference does
    a[:, 1] = mag[lo:hi]
    a -= a.mean(0, dtype=np.float32)
    out.time[row, :n] = a[:, 0]
    out.mag[row, :n] = a[:, 1]
    out.mask_in[row, n:window] = 1.0
    out.err[row, :n] = err[lo:hi] if err is not None else np.nan
    out.start[row] = lo
    out.length[row] = n


def _empty(n_windows: int, window: int) -> Windows:
    return Windows(
        mag=np.zeros((n_windows, window), np.float32),
        time=np.zeros((n_windows, window), np.float32),
        mask_in=np.zeros((n_windows, window), np.float32),
        err=np.zeros((n_windows, window), np.float32),
        start=np.zeros(n_windows, np.int64),
        length=np.zeros(n_windows, np.int32),
        owner=np.zeros(n_windows, np.int64),
    )


def _check_curve(time, mag, err):
    time = np.asarray(time, dtype=np.float64).ravel()
    mag = np.asarray(mag).ravel()
    if len(time) != len(mag):
        raise ModelError(f"light curve has {len(time)} times but {len(mag)} magnitudes")
    if err is not None:
        err = np.asarray(err).ravel()
        if len(err) != len(time):
            raise ModelError(f"light curve has {len(time)} times but {len(err)} errors")
    if len(time) == 0:
        raise ModelError("cannot make a window from an empty light curve")
    return time, mag, err


def astromer_windows(time, mag, err=None, window: int = WINDOW) -> Windows:
    """All consecutive windows of one light curve (time-sorted arrays; time in days, float64 ok)."""
    time, mag, err = _check_curve(time, mag, err)
    starts = window_starts(len(time), window)
    out = _empty(len(starts), window)
    for row, lo in enumerate(starts):
        _standardize(time, mag, err, lo, min(lo + window, len(time)), window, out, row)
    return out


def iter_curves(batch) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(time, mag, err) of each light curve in a LightCurveBatch-like object (fields time, mag,
    mag_err, mask: True = observed) or in a sequence whose items are (time, mag[, err]) tuples or
    [n, 2 | 3] arrays."""
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


def batch_windows_full(batch, window: int = WINDOW) -> Windows:
    curves = [_check_curve(*c) for c in iter_curves(batch)]
    starts = [window_starts(len(t), window) for t, _, _ in curves]
    out = _empty(sum(len(s) for s in starts), window)
    row = 0
    for i, ((t, m, e), ss) in enumerate(zip(curves, starts, strict=True)):
        for lo in ss:
            _standardize(t, m, e, lo, min(lo + window, len(t)), window, out, row)
            out.owner[row] = i
            row += 1
    return out


def random_window(batch, window: int = WINDOW, rng: np.random.Generator | int | None = None) -> Windows:
    """One random contiguous `window`-observation window per light curve (pretraining sampling);
    shorter light curves give their whole length, padded. owner = arange(B)."""
    rng = np.random.default_rng(rng)
    curves = [_check_curve(*c) for c in iter_curves(batch)]
    out = _empty(len(curves), window)
    for i, (t, m, e) in enumerate(curves):
        n = len(t)
        lo = int(rng.integers(0, n - window + 1)) if n > window else 0
        _standardize(t, m, e, lo, min(lo + window, n), window, out, i)
        out.owner[i] = i
    return out
