"""Light-curve features for the Random Forest."""

from __future__ import annotations

import os

import numpy as np

from lcdash import features


def test_features_shape_names_and_period():
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0, 300, 150))
    period = 0.61
    m = 15 + 0.4 * np.sin(2 * np.pi * t / period) + rng.normal(0, 0.02, t.size)
    e = np.full(t.size, 0.02)
    X = features.extract_features([(t, m, e), (t[::-1], m[::-1], None)], n_jobs=1)
    names = features.feature_names()
    assert X.shape == (2, len(names)) and X.dtype == np.float32
    p = X[:, names.index("periodogram_period_0")]
    np.testing.assert_allclose(p, period, rtol=0.01)  # unsorted input and missing errors handled
    amp = X[0, names.index("amplitude")]
    assert 0.35 < amp < 0.5


def test_too_short_curves_give_nan_rows():
    X = features.extract_features([(np.arange(2.0), np.zeros(2))], n_jobs=1)
    assert np.isnan(X).all()


def test_duplicate_times_are_dropped():
    t = np.array([0.0, 1.0, 1.0, 2.0, 3.5, 4.0, 7.0, 9.0])
    m = np.array([1.0, 2.0, 2.5, 1.0, 3.0, 0.5, 1.5, 2.0])
    X = features.extract_features([(t, m)], n_jobs=1)
    names = features.feature_names()
    assert X[0, names.index("observation_count")] == 7


def test_extractor_threads_follow_the_process_budget(monkeypatch):
    """A Dask worker gets OMP_NUM_THREADS=1: its periodograms must not take the other cores."""
    from lcdash.features import default_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert default_threads() == (os.cpu_count() or 1)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_threads() == (os.cpu_count() or 1)
