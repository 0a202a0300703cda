"""Per-light-curve features (the `light-curve` package) for the classical Random Forest baseline.

The set follows the usual variable-star feature baselines (Richards et al. 2011, the ALeRCE
light-curve classifier): Lomb-Scargle peaks (period and S/N of the 3 strongest), features of the
curve folded at the best period, amplitude and percentile ranges, moments, Stetson K, eta (von
Neumann), beyond-n-std fractions, linear trend, maximum slope, and the like.

The periodogram runs on a fixed frequency grid, not the package's default "average Nyquist" grid:
survey cadences cluster in nights and seasons, so the average interval (days to weeks) would hide
the sub-day periods of RR Lyrae, delta Scuti and contact binaries. The grid spans periods from
MIN_PERIOD days to the baseline. Missing errors are replaced by the curve's median error, or by
its magnitude standard deviation when it has none at all (error-weighted features then reduce to
unweighted ones).
"""

from __future__ import annotations

import numpy as np

from lcdash.lightcurve import MIN_PERIOD
from lcdash.periods import default_threads

FREQ_POWER = 17  # 2**17 + 1 grid points: ~1 / (7 x 3000 days) resolution up to 1 / MIN_PERIOD


def _periodogram(peaks: int = 3, phase_features=()):
    import light_curve as lc

    max_freq = 2 * np.pi / MIN_PERIOD  # angular frequency
    return lc.Periodogram(
        peaks=peaks,
        freqs=np.linspace(0.0, max_freq, 2**FREQ_POWER + 1),
        fast=True,
        phase_features=list(phase_features),
    )


def _extractor():
    import light_curve as lc

    phase = [lc.Amplitude(), lc.Skew(), lc.Kurtosis(), lc.StandardDeviation(), lc.Eta(), lc.MaximumSlope()]
    periodogram = _periodogram(3, phase)
    return lc.Extractor(
        periodogram,
        lc.Amplitude(),
        lc.AndersonDarlingNormal(),
        lc.BeyondNStd(1.0),
        lc.BeyondNStd(2.0),
        lc.Cusum(),
        lc.Eta(),
        lc.EtaE(),
        lc.ExcessVariance(),
        lc.InterPercentileRange(0.02),
        lc.InterPercentileRange(0.1),
        lc.InterPercentileRange(0.25),
        lc.Kurtosis(),
        lc.LinearFit(),
        lc.LinearTrend(),
        lc.MagnitudePercentageRatio(0.4, 0.05),
        lc.MagnitudePercentageRatio(0.2, 0.1),
        lc.MaximumSlope(),
        lc.MedianAbsoluteDeviation(),
        lc.MedianBufferRangePercentage(0.1),
        lc.PercentAmplitude(),
        lc.PercentDifferenceMagnitudePercentile(0.1),
        lc.ReducedChi2(),
        lc.Skew(),
        lc.StandardDeviation(),
        lc.StetsonK(),
        lc.WeightedMean(),
        lc.Duration(),
        lc.ObservationCount(),
    )


def feature_names() -> list[str]:
    """Names of the columns `extract_features` returns."""
    return list(_extractor().names)


def _prepare(time, mag, err) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64, sorted, unique times (the extractors require strictly increasing time), errors filled."""
    t = np.asarray(time, dtype=np.float64)
    m = np.asarray(mag, dtype=np.float64)
    e = np.full(len(t), np.nan) if err is None else np.asarray(err, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    t, m, e = t[order], m[order], e[order]
    keep = np.ones(len(t), dtype=bool)
    keep[1:] = np.diff(t) > 0
    t, m, e = t[keep], m[keep], e[keep]
    bad = ~np.isfinite(e) | (e <= 0)
    if bad.any():
        fill = np.median(e[~bad]) if (~bad).any() else (np.std(m) if len(m) > 1 and np.std(m) > 0 else 1.0)
        e = np.where(bad, fill, e)
    return np.ascontiguousarray(t), np.ascontiguousarray(m), np.ascontiguousarray(e)


def _many(ext, curves, n_jobs: int | None) -> np.ndarray:
    """`ext` over many light curves -> float64 [N, len(ext.names)]; NaN rows for curves with fewer
    than 4 unique times (too few for every feature)."""
    if hasattr(curves, "mask"):
        b = curves
        items = [
            (b.time[i][b.mask[i]], b.mag[i][b.mask[i]], b.mag_err[i][b.mask[i]]) for i in range(len(b.length))
        ]
    else:
        items = [(c[0], c[1], c[2] if len(c) > 2 else None) for c in curves]
    prepared = [_prepare(*c) for c in items]
    out = np.full((len(prepared), len(ext.names)), np.nan)
    ok = [i for i, (t, _, _) in enumerate(prepared) if len(t) >= 4]
    if ok:
        values = ext.many(
            [prepared[i] for i in ok],
            n_jobs=n_jobs or default_threads(),
            sorted=True,
            check=False,
            fill_value=np.nan,
        )
        out[ok] = np.asarray(values, dtype=np.float64)
    return out


def best_periods(curves, n_jobs: int | None = None) -> np.ndarray:
    """The strongest Lomb-Scargle period (days) of each light curve on the features' grid; NaN
    for curves with fewer than 4 observations. For folding curves that have no catalogue period."""
    import light_curve as lc

    return _many(lc.Extractor(_periodogram(1)), curves, n_jobs)[:, 0]


def extract_features(curves, n_jobs: int | None = None) -> np.ndarray:
    """Features of many light curves -> float32 [N, F] (NaN where a feature is undefined).

    `curves`: a LightCurveBatch, or a list of (time, mag) / (time, mag, err) tuples.
    `n_jobs`: threads for the Rust extractor (default: all CPUs).
    """
    return _many(_extractor(), curves, n_jobs).astype(np.float32)
