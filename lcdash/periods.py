"""The one period finder of lcdash: every fold, feature and map asks it for a light curve's period.

A user's own survey has no catalogue periods, so what is found here is what the folded encoders,
the folded RNN / CNN inputs, the Random Forest's phase features and the viewer get. The method
follows what Graham et al. 2013 (arXiv 1307.2209) found to work on CRTS light curves: candidates
from a periodogram, judged by a multi-harmonic model, with the harmonic (P against 2P) and cadence
aliases decided explicitly rather than left to the highest single-sine peak.

1. Candidates: the CANDIDATES strongest peaks of a Lomb-Scargle periodogram (the `light-curve`
   package's fast Rust periodogram, on every thread) on a grid from 0 to 1 / MIN_PERIOD.
   Cadence aliases (f +- k / day, f +- 1 / year) are peaks of that periodogram and compete here.
2. Refine: each candidate's frequency is refined by least squares of a REFINE_HARMONICS-term
   Fourier series on a local grid, to |df| x baseline well under 0.1 cycle: a fixed grid step
   of 1.5e-4 / day smears a fold by up to 0.2 cycle over Catalina's 8-year baseline.
3. Decide: at each refined frequency f, Fourier series with 1..MAX_HARMONICS terms at P = 1 / f,
   with 1..2 x MAX_HARMONICS terms at 2P and 1..MAX_HARMONICS at P / 2 (the model at 2P nests the
   one at P: its odd terms are what differs between the two halves of the cycle, e.g. the unequal
   minima of an eclipsing binary). The model with the lowest Bayesian information criterion wins:
   N_eff ln(RSS / N) + k ln N_eff, a penalised likelihood that does not depend on the scale of the
   errors, N_eff the independent observations left by correlated residuals (`_effective_n`); a
   doubled period must win by DOUBLE_MARGIN.
4. Binary half-orbits: a winner whose fold is symmetric with minima sharper than maxima is one
   half of a binary's orbit and is doubled (`_eclipse_like`).
No class label is ever consulted. Measured: bench/period_recovery.py, docs/results/periods.md.

`find_period` takes one curve, `find_periods` a batch; both return `PeriodResult`s (best period,
ranked candidates with a score each, the reason, the Fourier model to draw over the fold). A batch
of 1,000 curves or more makes its decisions in joblib's worker processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from joblib import delayed

from lcdash.errors import ValidationError
from lcdash.lightcurve import MIN_PERIOD

#: Recorded beside every stored period: change it when the method's answers change.
FINDER_VERSION = "lcdash-periods-1"
#: Fewest observations (unique times) for a period search; fewer gives "no period".
MIN_OBSERVATIONS = 12
#: Periodogram peaks that become candidates (refined and judged).
CANDIDATES = 5
#: Terms of the Fourier series used to refine a candidate's frequency.
REFINE_HARMONICS = 3
#: Most Fourier terms at P (2P gets twice as many, so that it nests the model at P).
MAX_HARMONICS = 6
#: Coarse grid: 2**GRID_POWER + 1 angular frequencies from 0 to 2 pi / MIN_PERIOD (the Rust
#: periodogram's fast mode needs this form); the refinement makes up for its step.
GRID_POWER = 16
#: Longest period searched (days), at most half the baseline.
MAX_PERIOD = 1000.0
#: Curves per task of the batch finder (a pool worker takes one task at a time).
CHUNK = 256
#: Fewest curves for which the batch finder starts worker processes (their start costs ~1 s).
POOL_MIN_CURVES = 1000
#: Binary half-orbit test: second Fourier term detected at this many sigma, and the Fourier phase
#: difference phi2 - 2 phi1 within this many radians of 0 (a symmetric fold).
SHAPE_SIGMA = 3.0
SHAPE_DELTA = 0.5
#: BIC by which a doubled period must beat its base period: "strong evidence" (Kass & Raftery 1995).
DOUBLE_MARGIN = 6.0


@dataclass(frozen=True)
class Candidate:
    """One period the finder judged: `delta_bic` is its best model's BIC minus the winner's (0 for the
    winner, larger is worse); `origin` says where it came from, e.g. "2 x LS peak 1"."""

    period: float
    delta_bic: float
    n_harmonics: int
    origin: str


@dataclass(frozen=True)
class PeriodResult:
    """The finder's answer for one light curve.

    `period` is NaN when there is none (`reason` says why). `coefficients` are the winning Fourier
    series' [c0, a1, b1, a2, b2, ...] in m(t) = c0 + sum_k a_k cos(2 pi k (t - t0) / P) + b_k sin(...).
    `delta_bic_constant` is the winning model's BIC below that of a constant (how periodic the curve
    is: under ~10 the "period" is hardly better than none).
    """

    period: float
    reason: str
    candidates: tuple[Candidate, ...] = ()
    t0: float = 0.0
    coefficients: tuple[float, ...] = ()
    delta_bic_constant: float = 0.0
    #: the periodogram's strongest peaks as (period, signal to noise), strongest first (features)
    ls_peaks: tuple[tuple[float, float], ...] = ()

    @property
    def found(self) -> bool:
        return bool(np.isfinite(self.period))

    def model(self, time) -> np.ndarray:
        """The winning Fourier series at `time` (days): the curve the viewer draws over the fold."""
        if not self.found or not self.coefficients:
            raise ValueError("no period model to evaluate: " + self.reason)
        x = 2 * np.pi * (np.asarray(time, np.float64) - self.t0) / self.period
        c = np.asarray(self.coefficients)
        out = np.full(x.shape, c[0])
        for k in range(1, (len(c) - 1) // 2 + 1):
            out += c[2 * k - 1] * np.cos(k * x) + c[2 * k] * np.sin(k * x)
        return out


def default_threads() -> int:
    """Threads the period finder and the Rust feature extractor may use: OMP_NUM_THREADS where the
    process was given a budget (Dask sets it to 1 in each worker, one per core: a worker that took
    both cores for its periodograms kept 2 workers from scaling, bench/scale_bench.py), else every
    CPU."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return os.cpu_count() or 1


def _none(reason: str) -> PeriodResult:
    return PeriodResult(period=float("nan"), reason=reason)


# ------------------------------------------------------------------- input
def _clean(time, mag, err) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    """Finite, time-sorted observations with unique times and usable weights, or why there are none."""
    t = np.asarray(time, np.float64).reshape(-1)
    m = np.asarray(mag, np.float64).reshape(-1)
    e = np.full(t.shape, np.nan) if err is None else np.asarray(err, np.float64).reshape(-1)
    if not (t.size == m.size == e.size):
        return f"{t.size} times, {m.size} magnitudes and {e.size} errors do not match"
    keep = np.isfinite(t) & np.isfinite(m)
    t, m, e = t[keep], m[keep], e[keep]
    order = np.argsort(t, kind="stable")
    t, m, e = t[order], m[order], e[order]
    if t.size > 1:
        uniq = np.r_[True, np.diff(t) > 0]
        t, m, e = t[uniq], m[uniq], e[uniq]
    if t.size < MIN_OBSERVATIONS:
        return (
            f"too few observations ({t.size} with finite time and magnitude; "
            f"a period needs {MIN_OBSERVATIONS})"
        )
    if not np.ptp(m) > 0:
        return "constant magnitudes: nothing varies"
    if t[-1] - t[0] <= 2 * MIN_PERIOD:
        return f"baseline of {t[-1] - t[0]:.3g} d is too short for periods of {MIN_PERIOD} d or more"
    bad = ~np.isfinite(e) | (e <= 0)
    if bad.all():
        e = np.full(t.shape, 1.0)
    elif bad.any():
        e = np.where(bad, np.median(e[~bad]), e)
    return np.ascontiguousarray(t), np.ascontiguousarray(m), np.ascontiguousarray(e)


# ------------------------------------------------------------------- Fourier least squares
def _design(t: np.ndarray, freqs: np.ndarray, n: int) -> np.ndarray:
    """[G, N, 2n+1] columns 1, cos(2 pi f t), sin(2 pi f t), ..., cos(2 pi n f t), sin(...)."""
    x = np.multiply.outer(2 * np.pi * freqs, t)  # [G, N]
    X = np.empty(x.shape + (2 * n + 1,))
    X[..., 0] = 1.0
    c1, s1 = np.cos(x), np.sin(x)
    X[..., 1], X[..., 2] = c1, s1
    for k in range(2, n + 1):  # angle addition: no more trig calls
        c, s = X[..., 2 * k - 3], X[..., 2 * k - 2]
        X[..., 2 * k - 1] = c * c1 - s * s1
        X[..., 2 * k] = s * c1 + c * s1
    return X


def _nested_rss(t, y, sw, freqs: np.ndarray, n: int) -> np.ndarray:
    """Weighted residual sums of squares of the Fourier series with 0..n terms at each frequency
    -> [G, n+1].

    One Cholesky factor of the n-term normal equations gives every nested model at once: with
    L L^T = X^T W X and z = L^-1 X^T W y, the first 2j+1 entries of z fit the j-term model and
    RSS_j = y^T W y - |z[:2j+1]|^2.
    """
    X = _design(t, freqs, n) * sw[None, :, None]  # [G, N, p]
    yw = y * sw
    A = np.matmul(X.transpose(0, 2, 1), X)  # [G, p, p]
    b = np.matmul(yw, X)  # [G, p]
    p = A.shape[-1]
    A[:, np.arange(p), np.arange(p)] *= 1 + 1e-10  # keeps near-degenerate grids factorable
    L = np.linalg.cholesky(A)
    z = np.linalg.solve(L, b[..., None])[..., 0]
    cum = np.cumsum(z**2, axis=-1)[:, 0::2]  # after 1, 3, 5, ... columns: 0, 1, 2, ... terms
    return np.maximum(yw @ yw - cum, 1e-300)


def _coefficients(t, y, sw, f: float, n: int) -> np.ndarray:
    X = _design(t, np.array([f]), n)[0] * sw[:, None]
    coef, *_ = np.linalg.lstsq(X, y * sw, rcond=None)
    return coef


def _refine(t, y, sw, f0: np.ndarray, step: float) -> np.ndarray:
    """Frequencies near f0 [K] (within one coarse step) minimising the REFINE_HARMONICS-term
    residual: a 7-point pass at step / 3, a 7-point pass at step / 9, then a parabola through the
    best three (the residual's minimum is about 1 / baseline wide). All candidates in one batch."""
    f = np.asarray(f0, np.float64)
    for half, n_pts in ((step, 7), (step / 3, 7)):
        offsets = np.linspace(-half, half, n_pts)
        grid = np.abs(f[:, None] + offsets[None, :])  # [K, n_pts]; |f| keeps the grid positive
        rss = _nested_rss(t, y, sw, grid.reshape(-1), REFINE_HARMONICS)[:, -1].reshape(grid.shape)
        i = np.argmin(rss, axis=1)
        f = grid[np.arange(len(f)), i]
    inner = (i > 0) & (i < n_pts - 1)
    k = np.arange(len(f))
    j0, j2 = np.clip(i - 1, 0, n_pts - 1), np.clip(i + 1, 0, n_pts - 1)
    r0, r1, r2 = rss[k, j0], rss[k, i], rss[k, j2]
    denom = r0 - 2 * r1 + r2
    ok = inner & (denom > 0)
    shift = np.where(ok, 0.5 * (r0 - r2) / np.where(ok, denom, 1.0), 0.0)
    return f + shift * (offsets[1] - offsets[0])


# ------------------------------------------------------------------- decision
def _effective_n(t, y, sw, f: float, n_terms: int) -> float:
    """Independent observations behind a fit: N (1 - rho) / (1 + rho), rho the lag-1 correlation of
    the residuals in time order (AR(1)). Irregular variability (semi-regular LPVs, Blazhko
    modulation) and nights of 4 exposures leave correlated residuals, with which a BIC on N counts
    every extra Fourier term as significant and doubles periods that are not double."""
    coef = _coefficients(t, y, sw, f, n_terms)
    r = (y - _design(t, np.array([f]), n_terms)[0] @ coef) * sw
    N = t.size
    rho = float(np.dot(r[1:], r[:-1]) / max(np.dot(r, r), 1e-300))
    rho = min(max(rho, 0.0), 0.95)
    return max(min(N * (1 - rho) / (1 + rho), N), min(N, 10.0))


def _eclipse_like(t, y, sw, f: float, n_eff: float) -> tuple[bool, float]:
    """Is the fold at frequency f symmetric with minima sharper than maxima, as one half-orbit of an
    eclipsing or ellipsoidal binary (Rucinski 1993: a cosine series), rather than a pulsation
    (asymmetric: fast rise, slow decline)? Fourier phase delta = phi2 - 2 phi1 of a 3-term fit:
    0 for that binary shape, pi for sharp maxima, in between for the skewed pulsators. Returns
    (verdict, delta). The second term must be detected (SHAPE_SIGMA) and |delta| < SHAPE_DELTA."""
    coef = _coefficients(t, y, sw, f, 3)
    a1, b1, a2, b2 = coef[1:5]
    A1, A2 = np.hypot(a1, b1), np.hypot(a2, b2)
    resid = (y - _design(t, np.array([f]), 3)[0] @ coef) * sw
    sigma = np.sqrt(np.mean(resid**2) * 2.0 / n_eff) / np.sqrt(np.mean(sw**2))  # amplitude error
    delta = float(np.angle(np.exp(1j * (np.arctan2(b2, a2) - 2 * np.arctan2(b1, a1)))))
    if A1 <= 0 or A2 < SHAPE_SIGMA * sigma:
        return False, delta
    return bool(abs(delta) < SHAPE_DELTA), delta


def _decide(t, y, e, peak_periods: np.ndarray, step: float, max_period: float, peak_snr=None) -> PeriodResult:
    """Refine the periodogram's peaks, fit Fourier series at P, 2P and P/2, keep the lowest BIC;
    double a winner whose fold is one binary half-orbit."""
    N = t.size
    t0 = float(t[0])
    tt = t - t0
    sw = 1.0 / e
    mean = np.average(y, weights=sw**2)
    yc = y - mean
    f_lo, f_hi = 1.0 / max_period, 1.0 / MIN_PERIOD
    peaks = [1.0 / p for p in peak_periods if np.isfinite(p) and p > 0 and f_lo <= 1.0 / p <= f_hi]
    if not peaks:
        return _none(f"no periodogram peak between {MIN_PERIOD} and {max_period:.4g} d")
    # terms a model may have: at most a third of the observations in parameters
    n_max = max(1, min(MAX_HARMONICS, (N // 3 - 1) // 2))
    refined = _refine(tt, yc, sw, np.array(peaks[:CANDIDATES]), step)
    n_eff = _effective_n(tt, yc, sw, float(refined[0]), min(REFINE_HARMONICS, n_max))
    rss0 = float(np.sum((yc * sw) ** 2))
    bic0 = n_eff * np.log(rss0 / N) + np.log(n_eff)
    models = []  # (bic, period, n_terms, origin, frequency)
    for mult, n_top, fmt in (
        (1.0, n_max, "LS peak {}"),
        (0.5, 2 * n_max, "2 x LS peak {}"),
        (2.0, max(1, n_max // 2), "LS peak {} / 2"),
    ):
        fm = refined * mult
        inside = np.flatnonzero((fm >= f_lo) & (fm <= f_hi))
        if not inside.size:
            continue
        rss = _nested_rss(tt, yc, sw, fm[inside], n_top)[:, 1:]  # [K', 1..n_top terms]
        k = 2 * np.arange(1, n_top + 1) + 1
        bic = n_eff * np.log(rss / N) + k[None, :] * np.log(n_eff)
        # Occam: a doubled period must win by strong evidence (Kass & Raftery 1995: BIC 6)
        prior = DOUBLE_MARGIN if mult == 0.5 else 0.0
        for row, c in enumerate(inside):
            j = int(np.argmin(bic[row]))
            models.append((float(bic[row, j]) + prior, 1.0 / fm[c], j + 1, fmt.format(c + 1), float(fm[c])))
    if not models:
        return _none("no candidate period inside the searched range")
    models.sort(key=lambda m: m[0])
    best = models[0]
    reason = _reason(best, models)
    if not best[3].startswith("2 x ") and best[4] / 2 >= f_lo:
        binary, delta = _eclipse_like(tt, yc, sw, best[4], n_eff)
        if binary:
            twice = [m for m in models if m[3] == "2 x " + best[3]]
            n2 = twice[0][2] if twice else min(2 * best[2], 2 * n_max)
            bic2 = twice[0][0] if twice else best[0]
            best = (bic2, 2.0 / best[4], n2, "2 x " + best[3], best[4] / 2)
            reason = (
                f"{best[3]}: symmetric fold with minima sharper than maxima (Fourier phase "
                f"{delta:+.2f} rad), one half-orbit of a binary: two minima per orbit"
            )
    # one candidate per distinct period (a peak's P/2 may be another peak's P), best BIC first
    cands, seen = [], []
    for bic, period, n_terms, origin, _ in [best] + models:
        if any(abs(period / s - 1) < 1e-3 for s in seen):
            continue
        seen.append(period)
        cands.append(Candidate(float(period), float(bic - best[0]), int(n_terms), origin))
    coef = _coefficients(tt, yc, sw, best[4], best[2])
    coef[0] += mean
    return PeriodResult(
        period=float(best[1]),
        reason=reason,
        candidates=tuple(cands[:8]),
        t0=t0,
        coefficients=tuple(float(c) for c in coef),
        delta_bic_constant=float(bic0 - best[0]),
        ls_peaks=_ls_peaks(peak_periods, peak_snr),
    )


def _ls_peaks(peak_periods, peak_snr, n: int = 3) -> tuple[tuple[float, float], ...]:
    if peak_snr is None:
        return ()
    return tuple((float(p), float(q)) for p, q in zip(peak_periods[:n], peak_snr[:n], strict=True))


def _reason(best, models) -> str:
    """Why the winner won, in the words an astronomer would use."""
    bic, _, n_terms, origin, f = best
    rivals = {m[3]: m[0] for m in models}
    if origin.startswith("2 x "):
        base = origin[4:]
        gain = rivals.get(base, np.nan) - bic
        return f"{origin}: the two halves of the cycle differ (BIC {gain:.0f} below P, {n_terms} terms)"
    if origin.endswith(" / 2"):
        base = origin[:-4]
        gain = rivals.get(base, np.nan) - bic
        return f"{origin}: the same shape repeats twice per LS cycle (BIC {gain:.0f} below P)"
    if origin != "LS peak 1" and "LS peak 1" in rivals:
        return f"{origin}: fits better than the strongest peak (BIC {rivals['LS peak 1'] - bic:.0f} below)"
    return f"{origin}: best Fourier fit ({n_terms} terms)"


# ------------------------------------------------------------------- public
def _peak_periods(prepared: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_jobs: int):
    """Periods and signal-to-noise ratios [M, CANDIDATES + 3] of each curve's strongest Lomb-Scargle
    peaks (the Rust periodogram). A few spare peaks: those beyond the longest searched period are
    dropped later."""
    import light_curve as lc

    grid = np.linspace(0.0, 2 * np.pi / MIN_PERIOD, 2**GRID_POWER + 1)
    ext = lc.Extractor(lc.Periodogram(peaks=CANDIDATES + 3, freqs=grid, fast=True))
    values = np.asarray(ext.many(prepared, n_jobs=n_jobs, sorted=True, check=False, fill_value=np.nan))
    return values[:, 0::2], values[:, 1::2]


def grid_step() -> float:
    """The coarse periodogram's frequency step (1 / day)."""
    return 1.0 / MIN_PERIOD / 2**GRID_POWER


def curve_items(curves) -> list[tuple]:
    """(time, mag, err or None) of each light curve of a LightCurveBatch or of (time, mag[, err])
    tuples, without padding."""
    if hasattr(curves, "mask"):
        b = curves
        return [(b.time[i][b.mask[i]], b.mag[i][b.mask[i]], b.mag_err[i][b.mask[i]]) for i in range(len(b))]
    return [(c[0], c[1], c[2] if len(c) > 2 else None) for c in curves]


def find_periods(
    curves,
    *,
    n_jobs: int | None = None,
    max_period: float = MAX_PERIOD,
    progress: Callable[[int, int], None] | None = None,
) -> list[PeriodResult]:
    """The period of each light curve: a LightCurveBatch or (time, mag[, err]) tuples -> PeriodResults.

    Never raises for a curve's content: too few points, constant or non-finite data give a result
    with NaN period and the reason. `progress(done, total)` is called as curves finish.
    """
    items = curve_items(curves)
    threads = n_jobs or default_threads()
    cleaned = [_clean(*c) for c in items]
    ok = [i for i, c in enumerate(cleaned) if not isinstance(c, str)]
    results: list[PeriodResult | None] = [_none(c) if isinstance(c, str) else None for c in cleaned]
    total = len(items)
    done = total - len(ok)
    chunks = [ok[s : s + CHUNK] for s in range(0, len(ok), CHUNK)]
    pool = _pool(threads) if threads > 1 and len(ok) >= POOL_MIN_CURVES else None
    if pool is None:
        # one process: the Rust periodogram of every curve on all threads, then the decisions
        # (numpy on small arrays holds the GIL: threads would not run them in parallel)
        peaks, snr = _peak_periods([cleaned[i] for i in ok], threads) if ok else (None, None)
        at = {i: j for j, i in enumerate(ok)}
        for idx in chunks:
            for i, r in zip(idx, _decide_many([cleaned[i] for i in idx], max_period,
                                              peaks[[at[i] for i in idx]], snr[[at[i] for i in idx]]),
                            strict=True):  # fmt: skip
                results[i] = r
            done += len(idx)
            if progress is not None:
                progress(done, total)
    else:
        tasks = (delayed(_decide_many)([cleaned[i] for i in idx], max_period) for idx in chunks)
        for idx, res in zip(chunks, pool(tasks), strict=True):
            for i, r in zip(idx, res, strict=True):
                results[i] = r
            done += len(idx)
            if progress is not None:
                progress(done, total)
    return results  # type: ignore[return-value]


def _decide_many(cleaned: list, max_period: float, peaks=None, snr=None) -> list[PeriodResult]:
    """Periodogram (unless given) and decision for cleaned curves, in this process: the task of a
    pool worker."""
    if peaks is None:
        peaks, snr = _peak_periods(cleaned, 1)
    out = []
    for j, (t, y, e) in enumerate(cleaned):
        longest = min(max_period, (t[-1] - t[0]) / 2.0)
        out.append(_decide(t, y, e, peaks[j], grid_step(), max(longest, 2 * MIN_PERIOD), snr[j]))
    return out


def _pool(workers: int):
    """joblib's worker processes (loky: started once and reused, no re-run of the caller's script),
    for the decisions, which are Python and numpy on small arrays that threads cannot run side by
    side. None where this process may not start children (a daemonic process)."""
    import multiprocessing

    from joblib import Parallel

    if multiprocessing.current_process().daemon:
        return None
    return Parallel(n_jobs=workers, backend="loky", return_as="generator")


def fourier_parameters(time, mag, err, period: float, n_terms: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes A_k and phases phi_k (radians) of an n-term Fourier series at `period`,
    m(t) = c + sum_k A_k cos(2 pi k t / P - phi_k): the decomposition of Simon & Lee 1981 whose
    ratios R_k1 = A_k / A_1 and phase differences phi_k1 = phi_k - k phi_1 separate pulsators from
    binaries. NaN arrays when the curve is unusable or the period is not positive."""
    nan = np.full(n_terms, np.nan)
    c = _clean(time, mag, err)
    if isinstance(c, str) or not (np.isfinite(period) and period > 0):
        return nan, nan.copy()
    t, y, e = c
    sw = 1.0 / e
    coef = _coefficients(t - t[0], y - np.average(y, weights=sw**2), sw, 1.0 / period, n_terms)
    a, b = coef[1::2], coef[2::2]
    return np.hypot(a, b), np.arctan2(b, a)


def find_period(time, mag, err=None, *, max_period: float = MAX_PERIOD) -> PeriodResult:
    """The period of one light curve (see `find_periods`)."""
    return find_periods([(time, mag, err)], n_jobs=1, max_period=max_period)[0]


def results_frame(oids, bands, results) -> pd.DataFrame:
    """PeriodResults of (oid, band) light curves as the store's periods table rows (oid, band,
    period, score, n_harmonics, reason, candidates): what `lcdash.store.periods.save_periods` takes."""
    results = list(results)
    bands = [bands] * len(results) if isinstance(bands, str) else [str(b) for b in bands]
    return pd.DataFrame(
        {
            "oid": np.asarray(oids, np.int64),
            "band": bands,
            "period": np.array([r.period for r in results], np.float64),
            "score": np.array([r.delta_bic_constant if r.found else np.nan for r in results], np.float64),
            "n_harmonics": pd.array(
                [(len(r.coefficients) - 1) // 2 if r.found else None for r in results], dtype="Int32"
            ),
            "reason": [r.reason for r in results],
            "candidates": [[float(c.period) for c in r.candidates] for r in results],
        }
    )


def best_periods(curves, n_jobs: int | None = None) -> np.ndarray:
    """Periods (days) only, NaN where none: for callers that fold and need nothing else."""
    return np.array([r.period for r in find_periods(curves, n_jobs=n_jobs)], np.float64)


# ------------------------------------------------------------------- the store
def store_periods(
    store,
    *,
    survey: str | None = None,
    band: str | None = None,
    overwrite: bool = False,
    chunk_size: int = 2048,
    n_jobs: int | None = None,
    progress=None,
) -> dict:
    """Find the period of every light curve of the store (of `survey`, in `band`) that has none of
    this FINDER_VERSION (every one when `overwrite`) and store it beside the catalogue period.

    Each chunk of `chunk_size` light curves is saved in its own transaction: a stopped run keeps
    what it finished and the next run goes on from there. Returns {"light_curves", "found",
    "seconds", "lc_per_s"}."""
    import time

    from lcdash.progress import is_cancelled
    from lcdash.store.periods import missing_periods, save_periods

    todo = missing_periods(store, FINDER_VERSION, survey=survey, band=band, every=overwrite)
    total, done, found = len(todo), 0, 0
    t0 = time.monotonic()
    if progress is not None:
        progress(0, total, f"finding periods of {total} light curves")
    for b, group in todo.groupby("band", sort=True):
        for batch in store.iter_batches(group["oid"].to_numpy(np.int64), batch_size=chunk_size, band=b):
            if is_cancelled(progress):
                break
            results = find_periods(batch, n_jobs=n_jobs)
            save_periods(store, results_frame(batch.oid, batch.band, results), FINDER_VERSION)
            done += len(results)
            found += sum(r.found for r in results)
            if progress is not None:
                rate = done / max(time.monotonic() - t0, 1e-9)
                progress(done, total, f"periods of {done}/{total} light curves ({rate:.0f}/s, band {b})")
    seconds = time.monotonic() - t0
    return {
        "light_curves": done,
        "found": found,
        "seconds": seconds,
        "lc_per_s": done / seconds if seconds else None,
    }


def periods_of_store(store, oids, band: str, batch=None) -> np.ndarray:
    """The found period (days) of each oid's light curve in `band`: the stored one of this finder
    version, computed where missing (and stored, unless the store is read-only); NaN where the
    light curve has none. `batch`: those light curves when the caller has read them already."""
    from lcdash.store.periods import read_periods, save_periods

    oids = np.asarray(oids, np.int64)
    stored = read_periods(store, oids=oids, band=band, finder=FINDER_VERSION).set_index("oid")["period"]
    out = np.array(stored.reindex(oids).to_numpy(np.float64, na_value=np.nan))  # writable
    known = np.isin(oids, stored.index.to_numpy())
    if not known.all():
        need = oids[~known]
        if batch is not None:
            rows = {int(o): i for i, o in enumerate(batch.oid)}
            sub = batch.take(np.array([rows[int(o)] for o in need], np.int64))
        else:
            sub = store.read_batch(need, band=band)
        results = find_periods(sub)
        if not store.read_only:
            save_periods(store, results_frame(sub.oid, sub.band, results), FINDER_VERSION)
        by_oid = dict(zip(np.asarray(sub.oid).tolist(), (r.period for r in results), strict=True))
        out[~known] = [by_oid.get(int(o), np.nan) for o in need]
    return out


# ------------------------------------------------------------------- folds
def folding_periods(curves, periods=None) -> np.ndarray:
    """The period (days) each curve is folded at: the given one where finite and positive, else the
    period finder's (`lcdash.periods`), else 1 day for curves with no period (too short, constant),
    so that no curve is ever refused."""
    curves = list(curves)
    p = np.full(len(curves), np.nan) if periods is None else np.array(periods, dtype=np.float64)
    missing = np.flatnonzero(~(np.isfinite(p) & (p > 0)))
    if len(missing):
        p[missing] = best_periods([curves[i] for i in missing])
    return np.where(np.isfinite(p) & (p > 0), p, 1.0)


def catalogue_periods(store, oids) -> np.ndarray:
    """The store's catalogue period (days) of each object, NaN where it has none."""
    oids = np.asarray(oids, np.int64)
    cat = store.objects(oids=oids, columns=["oid", "period"]).set_index("oid")["period"]
    return cat.reindex(oids).to_numpy(dtype=np.float64, na_value=np.nan)


#: Where a fold's period comes from: the catalogue, else the light curve; or the light curve only.
FOLD_PERIODS = ("catalogue", "found")


def fold_periods_of(
    store, oids, band: str | None, source: str = "catalogue", batch=None, compute: bool = True
) -> np.ndarray:
    """The period (days) each object's light curve in `band` is folded at (folded encoders, folded
    RNN / CNN input): `source` "catalogue" takes the catalogue period where there is one and the
    found period elsewhere, "found" only the period found from the light curve (the store's
    periods table; found and stored where missing when `compute`, else left NaN for a worker to
    find). NaN where neither exists."""
    source = "found" if source == "lomb-scargle" else source
    if source not in FOLD_PERIODS:
        raise ValidationError(f"fold periods must come from one of {', '.join(FOLD_PERIODS)}, got {source!r}")
    oids = np.asarray(oids, np.int64)
    out = np.array(catalogue_periods(store, oids)) if source == "catalogue" else np.full(len(oids), np.nan)
    need = ~(np.isfinite(out) & (out > 0))
    if need.any() and not compute:
        from lcdash.store.periods import read_periods

        stored = read_periods(store, oids=oids[need], band=band, finder=FINDER_VERSION)
        if band is None:
            stored = stored.drop_duplicates("oid")
        by_oid = stored.set_index("oid")["period"].reindex(oids[need])
        out[need] = np.array(by_oid.to_numpy(np.float64, na_value=np.nan))
    elif need.any():
        rows = np.flatnonzero(need)
        sub = store.read_batch(oids[rows], band=band) if batch is None else batch.take(rows)
        bands = np.asarray(sub.band)  # band None: read_batch's rule, each object's first band
        for b in np.unique(bands):
            at = np.flatnonzero(bands == b)
            out[rows[at]] = periods_of_store(store, oids[rows[at]], str(b), batch=sub.take(at))
    return out
