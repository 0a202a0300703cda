"""Per-light-curve features (the `light-curve` package) for the classical Random Forest baseline.

The set follows the usual variable-star feature baselines (Richards et al. 2011, the ALeRCE
light-curve classifier): Lomb-Scargle peaks (period and S/N of the 3 strongest), the period found
by lcdash's period finder (`lcdash.periods`: the one every fold of lcdash uses) with its Fourier
decomposition (R21, R31, phi21, phi31; Simon & Lee 1981) and features of the curve folded at it,
amplitude and percentile ranges, moments, Stetson K, eta (von Neumann), beyond-n-std fractions,
linear trend, maximum slope, and the like.

The periodogram runs on a fixed frequency grid (`lcdash.periods`), not the package's default
"average Nyquist" grid: survey cadences cluster in nights and seasons, so the average interval
(days to weeks) would hide the sub-day periods of RR Lyrae, delta Scuti and contact binaries.
Missing errors are replaced by the curve's median error, or by its magnitude standard deviation
when it has none at all (error-weighted features then reduce to unweighted ones).
"""

from __future__ import annotations

import numpy as np

from lcdash.lightcurve import fold_phase
from lcdash.periods import curve_items, default_threads, find_periods, fourier_parameters

#: Features of the curve folded at the found period (phase 0 at maximum light, phase as time).
FOLDED_PREFIX = "period_folded_"
#: From the period finder: its LS peaks, the found period, its score and Fourier decomposition.
PERIOD_NAMES = [
    *(f"periodogram_period{s}_{k}" for k in range(3) for s in ("", "_s_to_n")),
    "period_found",
    "period_found_score",
    "period_found_n_harmonics",
    "fourier_R21",
    "fourier_R31",
    "fourier_phi21",
    "fourier_phi31",
]


def _folded_extractor():
    import light_curve as lc

    return lc.Extractor(
        lc.Amplitude(), lc.Skew(), lc.Kurtosis(), lc.StandardDeviation(), lc.Eta(), lc.MaximumSlope()
    )


def _extractor():
    import light_curve as lc

    return lc.Extractor(
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
    folded = [FOLDED_PREFIX + n for n in _folded_extractor().names]
    return PERIOD_NAMES[:6] + folded + list(_extractor().names) + PERIOD_NAMES[6:]


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


def _period_features(curve, res) -> np.ndarray:
    """PERIOD_NAMES of one curve from its PeriodResult."""
    out = np.full(len(PERIOD_NAMES), np.nan)
    for k, (p, snr) in enumerate(res.ls_peaks[:3]):
        out[2 * k : 2 * k + 2] = p, snr
    if res.found:
        amp, phase = fourier_parameters(*curve, res.period, 3)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[6:] = (
                res.period,
                res.delta_bic_constant,
                (len(res.coefficients) - 1) // 2,
                amp[1] / amp[0],
                amp[2] / amp[0],
                np.mod(phase[1] - 2 * phase[0], 2 * np.pi),
                np.mod(phase[2] - 3 * phase[0], 2 * np.pi),
            )
    return out


def _fold_for_features(curve, period: float):
    """(phase, mag, err) sorted by phase with unique phases, phase 0 at maximum light."""
    t, m, e = curve
    phase = fold_phase(t, period, t[np.argmin(m)])
    order = np.argsort(phase, kind="stable")
    phase, m, e = phase[order], m[order], e[order]
    keep = np.r_[True, np.diff(phase) > 0]
    return np.ascontiguousarray(phase[keep]), np.ascontiguousarray(m[keep]), np.ascontiguousarray(e[keep])


def _many(curves, n_jobs: int | None) -> np.ndarray:
    """Every feature of many light curves -> float64 [N, len(feature_names())]; NaN rows for curves
    with fewer than 4 unique times (too few for every feature), NaN period features where the
    finder found no period."""
    prepared = [_prepare(*c) for c in curve_items(curves)]
    ext, folded_ext = _extractor(), _folded_extractor()
    n_fold = len(folded_ext.names)
    names = feature_names()
    out = np.full((len(prepared), len(names)), np.nan)
    ok = [i for i, (t, _, _) in enumerate(prepared) if len(t) >= 4]
    if not ok:
        return out
    threads = n_jobs or default_threads()
    opts = {"n_jobs": threads, "sorted": True, "check": False, "fill_value": np.nan}
    results = find_periods([prepared[i] for i in ok], n_jobs=threads)
    per = np.array([_period_features(prepared[i], r) for i, r in zip(ok, results, strict=True)])
    out[np.ix_(ok, range(6))] = per[:, :6]
    out[np.ix_(ok, range(6 + n_fold + len(ext.names), len(names)))] = per[:, 6:]
    rest = np.asarray(ext.many([prepared[i] for i in ok], **opts), dtype=np.float64)
    out[np.ix_(ok, range(6 + n_fold, 6 + n_fold + len(ext.names)))] = rest
    found = [(i, r.period) for i, r in zip(ok, results, strict=True) if r.found]
    folds = [(i, _fold_for_features(prepared[i], p)) for i, p in found]
    folds = [(i, f) for i, f in folds if len(f[0]) >= 4]
    if folds:
        values = np.asarray(folded_ext.many([f for _, f in folds], **opts), dtype=np.float64)
        out[np.ix_([i for i, _ in folds], range(6, 6 + n_fold))] = values
    return out


def extract_features(curves, n_jobs: int | None = None) -> np.ndarray:
    """Features of many light curves -> float32 [N, F] (NaN where a feature is undefined).

    `curves`: a LightCurveBatch, or a list of (time, mag) / (time, mag, err) tuples.
    `n_jobs`: threads for the Rust extractor (default: all CPUs).
    """
    return _many(curves, n_jobs).astype(np.float32)
