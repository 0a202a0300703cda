"""LightCurve: construction, frames, band selection, folding, periodograms, aliases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lcdash.errors import LcdashError, ValidationError
from lcdash.lightcurve import LightCurve, period_aliases


def _sinusoid(period=0.37, n=300, baseline=900.0, noise=0.05, seed=0, amp=0.4):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, baseline, n))
    mag = 15 + amp * np.sin(2 * np.pi * t / period) + rng.normal(0, noise, n)
    return t, mag, np.full(n, noise)


def test_construction_sorts_and_validates():
    lc = LightCurve(time=[3.0, 1.0, 2.0], mag=[13, 11, 12], mag_err=[0.3, 0.1, 0.2], band=["g", "r", "g"])
    assert lc.time.tolist() == [1.0, 2.0, 3.0]
    assert lc.mag.tolist() == [11, 12, 13] and lc.mag_err.tolist() == [0.1, 0.2, 0.3]
    assert lc.band.tolist() == ["r", "g", "g"] and lc.bands == ["g", "r"]
    assert len(lc) == 3 and lc.baseline == 2.0
    with pytest.raises(ValidationError, match="3 times but 2 magnitudes"):
        LightCurve(time=[1, 2, 3], mag=[1, 2])
    assert LightCurve(time=[1, 2], mag=[1, 2], mag_err=[np.nan, np.nan]).mag_err is None
    assert LightCurve(time=[1, 2], mag=[1, 2], period=-1.0).period is None


def test_frame_round_trip_and_select():
    df = pd.DataFrame({"object_id": "X1", "band": ["g", "r", "g", "r"], "time": [1.0, 1.5, 2.0, 2.5],
                       "mag": [15.0, 14.5, 15.2, 14.6], "mag_err": [0.1, 0.1, np.nan, 0.1]})
    lc = LightCurve.from_frame(df, period=0.5, label="RRab")
    assert lc.object_id == "X1" and lc.period == 0.5 and lc.label == "RRab"
    pd.testing.assert_frame_equal(lc.to_frame(), df, check_dtype=False)
    g = lc.select("g")
    assert g.time.tolist() == [1.0, 2.0] and g.bands == ["g"] and g.period == 0.5
    with pytest.raises(LcdashError, match="no band 'i'"):
        lc.select("i")
    with pytest.raises(ValidationError, match="lacks column"):
        LightCurve.from_frame(df.drop(columns="mag"))
    with pytest.raises(ValidationError, match="2 objects"):
        LightCurve.from_frame(df.assign(object_id=["a", "b", "a", "b"]))
    bare = LightCurve.from_frame(df[["time", "mag"]])
    assert bare.mag_err is None and bare.band is None and bare.bands == []
    assert bare.to_frame()["mag_err"].isna().all()


def test_fold():
    t, mag, err = _sinusoid(period=2.0, noise=0.0)
    lc = LightCurve(t, mag, err)
    phase = lc.fold(2.0)
    assert phase.min() >= 0 and phase.max() < 1
    # Default epoch = maximum brightness: phase 0 at the smallest magnitude.
    assert phase[np.argmin(mag)] == 0.0
    # The folded curve is the template: mag depends on phase only.
    model = 15 + 0.4 * np.sin(2 * np.pi * (phase * 2.0 + lc.epoch_of_maximum()) / 2.0)
    np.testing.assert_allclose(mag, model, atol=1e-8)
    np.testing.assert_allclose(lc.fold(2.0, epoch=t[0])[0], 0.0)
    # Folding at an exact multiple of the step yields phases in [0, 1) even with rounding.
    edge = LightCurve(time=[0.0, 0.3, 0.6, 0.9], mag=[1, 2, 3, 4]).fold(0.3, epoch=0.0)
    assert (edge >= 0).all() and (edge < 1).all()
    with pytest.raises(LcdashError, match="positive"):
        lc.fold(0)


def test_periodogram_known_sinusoid():
    t, mag, err = _sinusoid(period=0.37)
    lc = LightCurve(t, mag, err)
    periods, power = lc.periodogram()
    assert np.all(np.diff(periods) > 0)
    assert periods[0] == pytest.approx(0.05, rel=1e-3)  # lightcurve.MIN_PERIOD, shared with features
    assert periods[-1] == pytest.approx(lc.baseline / 2, rel=1e-3)
    assert periods[np.argmax(power)] == pytest.approx(0.37, rel=1e-3)
    assert power.max() > 0.9
    assert lc.best_period() == pytest.approx(0.37, rel=1e-4)
    # A restricted range away from the true period finds something else.
    assert not lc.best_period(min_period=1.0, max_period=10.0) == pytest.approx(0.37, rel=0.01)


def test_periodogram_grid_options():
    t, mag, err = _sinusoid(period=5.0, baseline=400)
    lc = LightCurve(t, mag, err)
    f = lc.frequency_grid(min_period=1.0, max_period=50.0, samples_per_peak=5)
    assert f[0] == pytest.approx(1 / 50) and f[-1] >= 1.0 - 1e-9
    np.testing.assert_allclose(np.diff(f), 1 / (5 * lc.baseline))
    assert lc.best_period(min_period=1.0, max_period=50.0) == pytest.approx(5.0, rel=1e-3)
    with pytest.raises(LcdashError, match="period range"):
        lc.periodogram(min_period=10, max_period=1)
    with pytest.raises(LcdashError, match="at least 3"):
        LightCurve([1.0, 2.0], [1.0, 2.0]).periodogram()


def test_multiband_periodogram():
    rng = np.random.default_rng(5)
    n, period = 150, 0.61
    tg, tr = np.sort(rng.uniform(0, 600, n)), np.sort(rng.uniform(0, 600, n))
    # Few noisy points per band; different means and amplitudes per band.
    mg = 16.0 + 0.5 * np.sin(2 * np.pi * tg / period) + rng.normal(0, 0.15, n)
    mr = 15.4 + 0.35 * np.sin(2 * np.pi * tr / period) + rng.normal(0, 0.15, n)
    lc = LightCurve(np.r_[tg, tr], np.r_[mg, mr], np.full(2 * n, 0.15), np.array(["g"] * n + ["r"] * n))
    assert lc.bands == ["g", "r"]
    periods, power = lc.periodogram(min_period=0.1, max_period=10)
    assert periods[np.argmax(power)] == pytest.approx(period, rel=2e-3)
    assert lc.best_period(min_period=0.1, max_period=10) == pytest.approx(period, rel=1e-3)
    # One band on its own works too.
    assert lc.best_period(min_period=0.1, max_period=10, band="r") == pytest.approx(period, rel=1e-3)


def test_period_aliases():
    assert period_aliases(2.0) == {"P/2": 1.0, "P": 2.0, "2P": 4.0}
    lc = LightCurve([1, 2, 3], [1, 2, 3], period=0.5)
    assert lc.period_aliases()["2P"] == 1.0
    assert lc.period_aliases(3.0)["P/2"] == 1.5
    with pytest.raises(LcdashError):
        period_aliases(0)
    with pytest.raises(LcdashError, match="no period"):
        LightCurve([1, 2, 3], [1, 2, 3]).period_aliases()


def test_fold_batch_orders_by_phase_and_keeps_the_period_scale():
    from types import SimpleNamespace

    from lcdash.lightcurve import fold_batch

    rng = np.random.default_rng(0)
    period = 0.57
    t = np.sort(rng.uniform(0, 900, 80))
    m = 15 + 0.5 * np.sin(2 * np.pi * t / period)
    b = SimpleNamespace(
        oid=np.array([1, 2]), band=["V", "V"], time=np.zeros((2, 80)), mag=np.zeros((2, 80), np.float32),
        mag_err=np.full((2, 80), 0.01, np.float32), mask=np.zeros((2, 80), bool), length=np.array([80, 50]),
    )  # fmt: skip
    for i, n in enumerate(b.length):
        b.time[i, :n], b.mag[i, :n], b.mask[i, :n] = t[:n], m[:n], True
    f = fold_batch(b, np.array([period, 2.0]))
    t0 = f.time[0]
    assert np.all(np.diff(t0) >= 0) and t0.min() >= 0 and t0.max() < period  # phase x period, sorted
    # folded at the true period, neighbours in phase have neighbouring magnitudes: a smooth curve
    assert np.abs(np.diff(f.mag[0])).max() < 0.15 < np.abs(np.diff(b.mag[0])).max()
    assert sorted(f.mag[0]) == sorted(b.mag[0])  # the same observations, reordered
    assert np.all(f.time[1, 50:] == 0) and np.all(f.time[1, :50] < 2.0)  # padding untouched
    assert b.time[0, 1] == t[1]  # the input batch is not modified
    with pytest.raises(ValidationError, match="no positive period"):
        fold_batch(b, np.array([period, np.nan]))
