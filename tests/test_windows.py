"""Astromer windows: consecutive / clamped windows, float32 mean subtraction, padding, batching."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lcdash.errors import ModelError
from lcdash.lightcurve import LightCurveBatch
from lcdash.windows import (
    astromer_windows,
    batch_windows,
    batch_windows_full,
    random_window,
    window_starts,
    window_table,
    windows_of_batch,
    windows_per_curve,
)


def curve(n, seed=0):
    rng = np.random.default_rng(seed)
    t = 53_000.0 + np.cumsum(rng.uniform(0.1, 3.0, n))
    m = 15.0 + rng.normal(0, 0.3, n)
    e = rng.uniform(0.01, 0.1, n)
    return t, m, e


@pytest.mark.parametrize(
    "n, starts",
    [
        (1, [0]),
        (57, [0]),
        (200, [0]),
        (201, [0, 1]),
        (400, [0, 200]),
        (450, [0, 200, 250]),
        (600, [0, 200, 400]),
    ],
)
def test_window_starts(n, starts):
    # N = 200 gives ONE window (the reference emits a duplicate; see lcdash/windows.py)
    assert window_starts(n) == starts


def test_window_values_match_the_float32_recipe():
    t, m, e = curve(450)
    w = astromer_windows(t, m, e)
    assert len(w) == 3 and w.start.tolist() == [0, 200, 250] and w.length.tolist() == [200] * 3
    for row, lo in enumerate(w.start):
        a = np.stack([t[lo : lo + 200], m[lo : lo + 200], e[lo : lo + 200]], 1).astype(np.float32)
        a -= a.mean(0, dtype=np.float32)  # golden README section 2, bit-exact recipe
        assert np.array_equal(w.time[row], a[:, 0]) and np.array_equal(w.mag[row], a[:, 1])
        assert np.array_equal(w.err[row], e[lo : lo + 200].astype(np.float32))  # errors stay raw
    assert w.mag.dtype == w.time.dtype == w.mask_in.dtype == np.float32
    assert not w.mask_in.any()


def test_short_curve_is_zero_padded_and_masked():
    t, m, _ = curve(57)
    w = astromer_windows(t, m)
    assert w.mag.shape == (1, 200)
    assert (w.mask_in[0, :57] == 0).all() and (w.mask_in[0, 57:] == 1).all()
    assert (w.mag[0, 57:] == 0).all() and (w.time[0, 57:] == 0).all() and (w.err[0, 57:] == 0).all()
    assert np.isnan(w.err[0, :57]).all()  # no errors given
    assert abs(float(w.mag[0, :57].mean())) < 1e-5 and abs(float(w.time[0, :57].mean())) < 1e-2


def test_float32_cast_happens_before_the_mean():
    # raw MJD in float32 has ~0.004 d spacing; the reference casts first, then takes a float32 mean.
    # numpy's float32 mean(0) of the [n, 3] window is the summation order that matches it bit for bit
    # (a [n, 1] or 1-D mean sums pairwise and can differ in the last bit).
    t, m, _ = curve(200, seed=3)
    w = astromer_windows(t, m)
    a = np.stack([t, m, np.zeros_like(t)], 1).astype(np.float32)
    assert np.array_equal(w.time[0], a[:, 0] - a.mean(0, dtype=np.float32)[0])
    float64_mean = (t - t.mean()).astype(np.float32)
    assert np.abs(w.time[0] - float64_mean).max() > 1e-3


def test_batch_windows_from_lists_arrays_and_batches():
    curves = [curve(n, seed=n) for n in (57, 200, 450)]
    mag, time, mask_in, err, owner = batch_windows(curves)
    assert mag.shape == time.shape == mask_in.shape == err.shape == (5, 200)
    assert owner.dtype == np.int64 and owner.tolist() == [0, 1, 2, 2, 2]
    one = astromer_windows(*curves[2])
    assert np.array_equal(mag[2:], one.mag) and np.array_equal(time[2:], one.time)

    arrays = [np.stack(c, 1) for c in curves]
    assert np.array_equal(batch_windows(arrays)[0], mag)
    assert np.array_equal(batch_windows([c[:2] for c in curves])[1], time)

    # a LightCurveBatch-like object: padded rows, mask True = observed
    L = 450
    pad = lambda a: np.pad(a, (0, L - len(a)))  # noqa: E731
    batch = SimpleNamespace(
        time=np.stack([pad(c[0]) for c in curves]),
        mag=np.stack([pad(c[1]).astype(np.float32) for c in curves]),
        mag_err=np.stack([pad(c[2]).astype(np.float32) for c in curves]),
        mask=np.stack([pad(np.ones(len(c[0]), bool)) for c in curves]),
        length=np.array([len(c[0]) for c in curves], np.int32),
    )
    full = batch_windows_full(batch)
    assert np.array_equal(full.mag, mag) and np.array_equal(full.time, time)
    assert full.start.tolist() == [0, 0, 0, 200, 250]


def test_bad_curves_raise_model_error():
    with pytest.raises(ModelError, match="times but"):
        astromer_windows([1.0, 2.0], [1.0])
    with pytest.raises(ModelError, match="empty"):
        astromer_windows([], [])
    with pytest.raises(ModelError, match=r"\[n, 2\]"):
        batch_windows([np.zeros((5, 4))])


def test_random_window_is_one_contiguous_window_per_curve():
    curves = [curve(n, seed=n) for n in (57, 200, 1000)]
    w = random_window(curves, rng=0)
    assert len(w) == 3 and w.owner.tolist() == [0, 1, 2]
    assert w.start[0] == 0 and w.start[1] == 0 and 0 <= w.start[2] <= 800
    assert w.length.tolist() == [57, 200, 200]
    t, m, _ = curves[2]
    lo = int(w.start[2])
    ref = astromer_windows(t[lo : lo + 200], m[lo : lo + 200])
    assert np.array_equal(w.mag[2], ref.mag[0]) and np.array_equal(w.time[2], ref.time[0])
    starts = {int(random_window(curves[2:], rng=s).start[0]) for s in range(20)}
    assert len(starts) > 10  # it does move
    assert np.array_equal(random_window(curves, rng=7).mag, random_window(curves, rng=7).mag)


def _reference_window(t, m, e, lo, hi, window=200):
    """The per-window recipe of the reference (golden README section 2), one window at a time."""
    n = hi - lo
    a = np.zeros((n, 3), np.float32)
    a[:, 0] = t[lo:hi]
    a[:, 1] = m[lo:hi]
    a -= a.mean(0, dtype=np.float32)
    pad = lambda x: np.pad(x, (0, window - n))  # noqa: E731
    return pad(a[:, 1]), pad(a[:, 0]), np.r_[np.zeros(n), np.ones(window - n)].astype(np.float32)


def test_vectorised_windows_are_bit_exact_with_the_per_window_recipe():
    # many lengths around the window boundaries, large MJDs (float32 spacing ~0.004 d), float64 mags
    rng = np.random.default_rng(11)
    lengths = [1, 2, 57, 199, 200, 201, 399, 400, 401, 599, 600, 601, 1234]
    lengths += rng.integers(1, 900, 40).tolist()
    curves = []
    for i, n in enumerate(lengths):
        t = 45_000.0 + 10_000 * rng.random() + np.cumsum(rng.exponential(2.0, n))
        m = rng.normal(12 + i % 7, rng.uniform(0.01, 2.0), n)  # float64: cast to float32 inside
        curves.append((t, m, rng.uniform(0.01, 0.2, n)))
    w = batch_windows_full(curves)
    row = 0
    for i, (t, m, e) in enumerate(curves):
        for lo in window_starts(len(t)):
            hi = min(lo + 200, len(t))
            mag, time, mask_in = _reference_window(t, m, e, lo, hi)
            assert w.owner[row] == i and w.start[row] == lo and w.length[row] == hi - lo
            assert np.array_equal(w.mag[row], mag) and np.array_equal(w.time[row], time)
            assert np.array_equal(w.mask_in[row], mask_in)
            assert np.array_equal(w.err[row, : hi - lo], e[lo:hi].astype(np.float32))
            row += 1
    assert row == len(w)
    # the same windows from a padded batch (rows of different lengths, padding 0, mask False)
    L = max(lengths)
    batch = SimpleNamespace(
        time=np.stack([np.pad(c[0], (0, L - len(c[0]))) for c in curves]),
        mag=np.stack([np.pad(c[1], (0, L - len(c[1]))).astype(np.float32) for c in curves]),
        mag_err=np.stack([np.pad(c[2], (0, L - len(c[2]))).astype(np.float32) for c in curves]),
        mask=np.stack([np.arange(L) < len(c[0]) for c in curves]),
    )
    wb = batch_windows_full(batch)
    assert np.array_equal(wb.mag, w.mag) and np.array_equal(wb.time, w.time)
    assert np.array_equal(wb.owner, w.owner) and np.array_equal(wb.err, w.err)


def test_window_table_matches_window_starts():
    lengths = np.array([0, 1, 199, 200, 201, 400, 401, 450, 600, 601, 1000])
    owner, start, n_obs = window_table(lengths)
    assert windows_per_curve(lengths).tolist() == [0] + [len(window_starts(int(n))) for n in lengths[1:]]
    for i, n in enumerate(lengths):
        got = start[owner == i].tolist()
        assert got == ([] if n == 0 else window_starts(int(n)))
        assert (n_obs[owner == i] == np.minimum(n - start[owner == i], 200)).all()


def test_empty_rows_raise_and_random_window_keeps_its_draws():
    with pytest.raises(ModelError, match="empty"):
        batch_windows([curve(10), (np.zeros(0), np.zeros(0))])
    # the draws are the ones of the earlier per-curve implementation (scalar integers, long curves only)
    curves = [curve(n, seed=n) for n in (57, 1000, 300, 900)]
    rng = np.random.default_rng(5)
    expected = [0, int(rng.integers(0, 801)), int(rng.integers(0, 101)), int(rng.integers(0, 701))]
    assert random_window(curves, rng=5).start.tolist() == expected


def test_windows_of_batch_gives_one_row_per_window_with_its_raw_observations():
    curves = [curve(450, 1), curve(57, 2), curve(201, 3)]
    batch = LightCurveBatch.from_arrays(*zip(*curves, strict=True), oid=[10, 11, 12])
    out, owner = windows_of_batch(batch, [2, 0])  # objects 12 (201 obs) and 10 (450 obs), in that order
    assert owner.tolist() == [0, 0, 1, 1, 1]
    assert out.oid.tolist() == [12, 12, 10, 10, 10]
    assert out.length.tolist() == [200, 200, 200, 200, 200]
    t, m, e = curves[0]
    for row, lo in zip((2, 3, 4), window_starts(450), strict=True):  # 0, 200, 250: the last window clamped
        assert np.array_equal(out.time[row], t[lo:lo + 200])
        assert np.allclose(out.mag[row], m[lo:lo + 200])  # raw magnitudes, not mean-subtracted
        assert out.mask[row].all()
    short, _ = windows_of_batch(batch, [1])
    assert short.length.tolist() == [57] and short.mask.sum() == 57
