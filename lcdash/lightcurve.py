"""`LightCurve`: one object's observations, with folding and Lomb-Scargle periodograms.

Periodograms use astropy's `LombScargle` (generalised, error-weighted, floating mean) and
`LombScargleMultiband` when a light curve has several bands (one shared period, per-band offsets).
The frequency grid is uniform in frequency from 1/max_period to 1/min_period with
``samples_per_peak`` points per peak width (1/baseline). That grid is large for long surveys
(~10 * 3000 d * 25 /d = 750k frequencies), so `best_period` searches a coarser grid first and then
refines the strongest peaks with the exact method on a fine local grid (the two-pass search of
VanderPlas & Ivezic 2015 / gatspy), which finds the same peak at a fraction of the cost.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lcdash.errors import LcdashError, ValidationError

#: Shortest period (days) every lcdash period search covers: the single-curve periodogram's default
#: floor and the top of the batch grid (`lcdash.features`); below the shortest delta Scuti / HADS
#: periods in the shared catalogues.
MIN_PERIOD = 0.05
#: Longest period searched by default (days), capped at half the baseline.
DEFAULT_MAX_PERIOD = 1000.0


def fold_phase(time: np.ndarray, period: float, epoch: float) -> np.ndarray:
    """Phase in [0, 1) of each time at `period`, phase 0 at `epoch`: the one fold of lcdash (the
    viewer's `LightCurve.fold`, `fold_batch`, `fold_curves`). Callers check the period."""
    phase = np.mod((np.asarray(time, np.float64) - float(epoch)) / float(period), 1.0)
    phase[phase >= 1.0] = 0.0  # mod can round up to exactly 1.0 for times just before the epoch
    return phase


def period_aliases(period: float) -> dict[str, float]:
    """The usual aliases of a period: half (EW binaries, where Lomb-Scargle finds P/2) and double."""
    p = float(period)
    if not np.isfinite(p) or p <= 0:
        raise LcdashError(f"period must be a positive number of days, got {period}")
    return {"P/2": p / 2.0, "P": p, "2P": 2.0 * p}


def _fast_power(model, freq: np.ndarray) -> np.ndarray:
    """Single-band power on a regular grid by Press & Rybicki extirpolation: about 3x faster here
    than astropy's default fast kernel (NUFFT) at ~1e-4 accuracy in the power."""
    return model.power(freq, method="fast", method_kwds={"algorithm": "press"})


@dataclass
class LightCurve:
    """Observations of one object, sorted by time (all bands together).

    ``mag_err`` and ``band`` may be None (no errors / single unnamed band). ``meta`` holds any other
    catalogue values (e.g. the store's ``oid`` and ``survey``).
    """

    time: np.ndarray
    mag: np.ndarray
    mag_err: np.ndarray | None = None
    band: np.ndarray | None = None
    object_id: str | None = None
    period: float | None = None
    label: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.time = np.asarray(self.time, dtype=np.float64).reshape(-1)
        self.mag = np.asarray(self.mag, dtype=np.float64).reshape(-1)
        n = self.time.size
        name = f"light curve {self.object_id!r}" if self.object_id is not None else "light curve"
        if self.mag.size != n:
            raise ValidationError(f"{name}: {n} times but {self.mag.size} magnitudes")
        if self.mag_err is not None:
            self.mag_err = np.asarray(self.mag_err, dtype=np.float64).reshape(-1)
            if self.mag_err.size != n:
                raise ValidationError(f"{name}: {n} times but {self.mag_err.size} magnitude errors")
            if np.all(np.isnan(self.mag_err)):
                self.mag_err = None
        if self.band is not None:
            self.band = np.asarray(self.band, dtype=object).reshape(-1)
            if self.band.size != n:
                raise ValidationError(f"{name}: {n} times but {self.band.size} band values")
        if self.period is not None and not (np.isfinite(self.period) and self.period > 0):
            self.period = None
        if n > 1 and np.any(np.diff(self.time) < 0):
            order = np.argsort(self.time, kind="stable")
            self.time, self.mag = self.time[order], self.mag[order]
            if self.mag_err is not None:
                self.mag_err = self.mag_err[order]
            if self.band is not None:
                self.band = self.band[order]

    # ---------------------------------------------------------------- conversion
    @classmethod
    def from_frame(cls, df: pd.DataFrame, object_id: str | None = None, period: float | None = None,
                   label: str | None = None, meta: dict[str, Any] | None = None) -> LightCurve:
        """Build from a frame with columns time, mag and optionally mag_err, band, object_id."""
        missing = [c for c in ("time", "mag") if c not in df.columns]
        if missing:
            raise ValidationError(f"light-curve frame lacks column(s) {missing}; has {list(df.columns)}")
        if object_id is None and "object_id" in df.columns and len(df):
            ids = df["object_id"].unique()
            if len(ids) > 1:
                raise ValidationError(f"light-curve frame holds {len(ids)} objects; select one first")
            object_id = str(ids[0])
        return cls(
            time=df["time"].to_numpy(dtype=np.float64),
            mag=df["mag"].to_numpy(dtype=np.float64),
            mag_err=df["mag_err"].to_numpy(dtype=np.float64, na_value=np.nan) if "mag_err" in df else None,
            band=df["band"].to_numpy(dtype=object) if "band" in df else None,
            object_id=object_id, period=period, label=label, meta=dict(meta or {}),
        )

    def to_frame(self) -> pd.DataFrame:
        """Columns object_id, band, time, mag, mag_err (NaN when absent)."""
        n = self.time.size
        return pd.DataFrame({
            "object_id": [self.object_id] * n,
            "band": self.band if self.band is not None else [None] * n,
            "time": self.time,
            "mag": self.mag,
            "mag_err": self.mag_err if self.mag_err is not None else np.full(n, np.nan),
        })

    def __len__(self) -> int:
        return int(self.time.size)

    @property
    def bands(self) -> list[str]:
        """Distinct bands, sorted ([] when the band is unknown)."""
        if self.band is None:
            return []
        return sorted({str(b) for b in self.band})

    @property
    def baseline(self) -> float:
        return float(self.time[-1] - self.time[0]) if self.time.size else 0.0

    def select(self, band: str) -> LightCurve:
        """The observations in one band."""
        if self.band is None:
            raise LcdashError(f"light curve {self.object_id!r} has no band column to select {band!r}")
        keep = self.band == band
        if not keep.any():
            raise LcdashError(f"light curve {self.object_id!r} has no band {band!r}; bands: {self.bands}")
        return LightCurve(
            time=self.time[keep], mag=self.mag[keep],
            mag_err=None if self.mag_err is None else self.mag_err[keep], band=self.band[keep],
            object_id=self.object_id, period=self.period, label=self.label, meta=dict(self.meta),
        )

    # ---------------------------------------------------------------- folding
    def epoch_of_maximum(self) -> float:
        """Time of maximum brightness (smallest magnitude)."""
        if not self.time.size:
            raise LcdashError(f"light curve {self.object_id!r} is empty")
        return float(self.time[np.nanargmin(self.mag)])

    def fold(self, period: float, epoch: float | None = None) -> np.ndarray:
        """Phase in [0, 1) of every observation (`fold_phase`); phase 0 at ``epoch`` (default: maximum
        light, where a reader of a folded plot expects it)."""
        if not (np.isfinite(float(period)) and float(period) > 0):
            raise LcdashError(f"cannot fold at period {period}: it must be a positive number of days")
        return fold_phase(self.time, period, self.epoch_of_maximum() if epoch is None else epoch)

    def period_aliases(self, period: float | None = None) -> dict[str, float]:
        p = self.period if period is None else period
        if p is None:
            raise LcdashError(f"light curve {self.object_id!r} has no period to take aliases of")
        return period_aliases(p)

    # ---------------------------------------------------------------- periodograms
    def _data(self, band: str | None) -> tuple[LightCurve, bool]:
        lc = self.select(band) if band is not None else self
        if len(lc) < 3:
            raise LcdashError(f"light curve {self.object_id!r} has {len(lc)} observations; "
                              "a periodogram needs at least 3")
        if lc.baseline <= 0:
            raise LcdashError(f"light curve {self.object_id!r} has all observations at one time")
        return lc, len(lc.bands) > 1

    def frequency_grid(self, min_period: float | None = None, max_period: float | None = None,
                       samples_per_peak: float = 10, band: str | None = None) -> np.ndarray:
        """Uniform frequency grid (1/day), ascending, for the periodogram."""
        lc, _ = self._data(band)
        T = lc.baseline
        lo_p = MIN_PERIOD if min_period is None else float(min_period)
        hi_p = min(DEFAULT_MAX_PERIOD, T / 2.0) if max_period is None else float(max_period)
        if not (0 < lo_p < hi_p):
            raise LcdashError(f"period range must satisfy 0 < min_period < max_period, got "
                              f"{lo_p} and {hi_p} (baseline {T:.1f} d)")
        if samples_per_peak <= 0:
            raise LcdashError(f"samples_per_peak must be positive, got {samples_per_peak}")
        df = 1.0 / (samples_per_peak * T)
        f_min, f_max = 1.0 / hi_p, 1.0 / lo_p
        n = int(np.ceil((f_max - f_min) / df)) + 1
        return f_min + df * np.arange(n)

    def _model(self, lc: LightCurve, multi: bool):
        from astropy.timeseries import LombScargle, LombScargleMultiband

        dy = lc.mag_err
        if dy is not None:
            # Missing or non-positive errors would break the weights: use the median error there.
            bad = ~(np.isfinite(dy) & (dy > 0))
            if bad.all():
                dy = None
            elif bad.any():
                dy = np.where(bad, np.median(dy[~bad]), dy)
        if multi:
            bands = lc.band.astype(str)
            per_band = [LombScargle(lc.time[bands == b], lc.mag[bands == b], None if dy is None else
                                    dy[bands == b]) for b in np.unique(bands)]
            return LombScargleMultiband(lc.time, lc.mag, bands, dy), per_band
        return LombScargle(lc.time, lc.mag, dy), None

    @staticmethod
    def _power(model, freq: np.ndarray, exact: bool = False) -> np.ndarray:
        model, per_band = model
        if exact:
            if per_band is not None:
                return model.power(freq, method="flexible")
            return model.power(freq, method="cython")
        if per_band is not None:
            # astropy's multiband "fast" method (each band alone, powers averaged with weights
            # sum(P**2)), but with the faster single-band kernel below.
            powers = np.array([_fast_power(m, freq) for m in per_band])
            w = np.sum(powers**2, axis=1)
            return w @ powers / w.sum() if w.sum() > 0 else powers.mean(axis=0)
        return _fast_power(model, freq)

    def periodogram(self, min_period: float | None = None, max_period: float | None = None,
                    samples_per_peak: float = 10, band: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Lomb-Scargle power on a uniform frequency grid: (periods ascending, power).

        Several bands (and ``band`` None) give the multi-band periodogram with one shared period.
        """
        lc, multi = self._data(band)
        freq = lc.frequency_grid(min_period, max_period, samples_per_peak)
        power = self._power(self._model(lc, multi), freq)
        return 1.0 / freq[::-1], np.asarray(power)[::-1]

    def best_period(self, min_period: float | None = None, max_period: float | None = None,
                    samples_per_peak: float = 10, band: str | None = None, n_candidates: int = 12) -> float:
        """Period (days) of the highest Lomb-Scargle peak.

        Searches a grid of min(samples_per_peak, 3) points per peak width, then re-evaluates the
        ``n_candidates`` strongest local maxima with the exact method on a local grid 20 times finer,
        and returns the best: the full-resolution answer at a fraction of the cost.
        """
        lc, multi = self._data(band)
        model = self._model(lc, multi)
        coarse = lc.frequency_grid(min_period, max_period, min(samples_per_peak, 3))
        power = np.asarray(self._power(model, coarse))
        # Local maxima of the coarse periodogram, strongest first.
        interior = np.flatnonzero((power[1:-1] >= power[:-2]) & (power[1:-1] >= power[2:])) + 1
        peaks = np.r_[interior, [0, power.size - 1]] if power.size > 2 else np.arange(power.size)
        top = peaks[np.argsort(power[peaks])[::-1][:n_candidates]]
        step = coarse[1] - coarse[0] if coarse.size > 1 else 1.0 / lc.baseline
        fine = (np.linspace(-1.0, 1.0, 41)[None, :] * step + coarse[top][:, None]).reshape(-1)
        fine = fine[(fine >= coarse[0]) & (fine <= coarse[-1])]
        fine_power = np.asarray(self._power(model, fine, exact=True))
        return float(1.0 / fine[np.nanargmax(fine_power)])


@dataclass
class LightCurveBatch:
    """Many light curves of one band each, as padded arrays (padding is 0, `mask` True = observed).

    Polarity: `mask` is True where there IS an observation; the encoders' `mask_in`
    (`lcdash.windows.Windows`, `lcdash.models.astromer`) is the opposite, 1 where a step is padding
    or hidden, as in Astromer.

    oid int64[B], band list[str] (B), time float64[B, L], mag float32[B, L], mag_err float32[B, L]
    (NaN where the survey gives none), mask bool[B, L], length int32[B]; rows sorted by time;
    L = the longest light curve in the batch.
    """

    oid: np.ndarray
    band: list[str]
    time: np.ndarray
    mag: np.ndarray
    mag_err: np.ndarray
    mask: np.ndarray
    length: np.ndarray

    def __len__(self) -> int:
        return int(self.oid.shape[0])

    def __getitem__(self, idx) -> LightCurveBatch:
        """Rows by index array / slice / boolean mask (L shrinks to the longest row kept)."""
        idx = np.arange(len(self))[idx] if not isinstance(idx, np.ndarray) or idx.dtype == bool else idx
        idx = np.atleast_1d(idx)
        length = self.length[idx]
        L = int(length.max()) if length.size else 0
        return LightCurveBatch(
            self.oid[idx],
            [self.band[i] for i in idx],
            self.time[idx, :L],
            self.mag[idx, :L],
            self.mag_err[idx, :L],
            self.mask[idx, :L],
            length,
        )

    def take(self, idx) -> LightCurveBatch:
        """Rows `idx` (an index array, in that order), trimmed to the longest row kept."""
        return self[np.asarray(idx, dtype=np.int64)]

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(time, mag, mag_err) of row i without padding."""
        n = int(self.length[i])
        return self.time[i, :n], self.mag[i, :n], self.mag_err[i, :n]

    @classmethod
    def from_arrays(
        cls,
        times: Sequence[np.ndarray],
        mags: Sequence[np.ndarray],
        errs: Sequence[np.ndarray] | None = None,
        oid: Iterable[int] | None = None,
        band: Iterable[str] | None = None,
    ) -> LightCurveBatch:
        """Pad ragged per-light-curve arrays (each sorted by time) into a batch."""
        n = np.array([len(t) for t in times], dtype=np.int32)
        flat_e = (
            np.concatenate([np.asarray(e, np.float32) for e in errs])
            if errs is not None and len(n)
            else np.full(int(n.sum()), np.nan, np.float32)
        )
        return cls.from_flat(
            np.asarray(list(oid) if oid is not None else np.arange(len(n)), dtype=np.int64),
            list(band) if band is not None else ["default"] * len(n),
            n,
            np.concatenate([np.asarray(t, np.float64) for t in times]) if len(n) else np.zeros(0),
            np.concatenate([np.asarray(m, np.float32) for m in mags]) if len(n) else np.zeros(0, np.float32),
            flat_e,
        )

    def save(self, path: str | Path) -> Path:
        """Write an uncompressed npz (fast to write and to memory-map for workers)."""
        path = Path(path)
        with open(path, "wb") as fh:  # a file handle keeps numpy from appending ".npz"
            np.savez(
                fh,
                oid=self.oid,
                band=np.asarray(self.band, dtype=str),
                time=self.time,
                mag=self.mag,
                mag_err=self.mag_err,
                mask=self.mask,
                length=self.length,
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> LightCurveBatch:
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(
                    z["oid"],
                    [str(b) for b in z["band"]],
                    z["time"],
                    z["mag"],
                    z["mag_err"],
                    z["mask"],
                    z["length"],
                )
        except (OSError, KeyError, ValueError) as exc:
            raise LcdashError(f"{path}: not a light-curve batch file ({exc})") from exc

    @classmethod
    def from_flat(cls, oid, band, n, flat_t, flat_m, flat_e) -> LightCurveBatch:
        """Pad concatenated observations (`n[i]` of them for row i, in row order) into a batch."""
        B = len(n)
        L = int(n.max()) if B else 0
        mask = np.arange(L, dtype=np.int32)[None, :] < n[:, None]
        time = np.zeros((B, L), np.float64)
        mag = np.zeros((B, L), np.float32)
        err = np.zeros((B, L), np.float32)
        # boolean assignment fills row-major, i.e. in the order of the concatenated lists
        time[mask] = flat_t
        mag[mask] = flat_m
        err[mask] = flat_e
        return cls(oid, band, time, mag, err, mask, n.astype(np.int32))


def fold_batch(batch, periods: np.ndarray):
    """Phase-folded copy of a LightCurveBatch: each row's time becomes phase x period, sorted by phase.

    Why phase x period and not phase alone: the sequence models (Becker RNN, Aguirre CNN) read time
    only through dt, and dt = period / n keeps the period's scale, the strongest class signal. On
    a sparse multi-year cadence such as Catalina's, raw dt/dm sequences hide the period (aliased
    nightly sampling), and folding is how the classical pipelines recover it.
    Phase 0 is the first observation, so no epoch fitting is needed.
    """
    periods = np.asarray(periods, dtype=np.float64)
    n = len(batch.length)
    if periods.shape != (n,):
        raise ValidationError(f"{n} light curves but {periods.size} periods")
    bad = ~np.isfinite(periods) | (periods <= 0)
    if bad.any():
        raise ValidationError(f"{int(bad.sum())} light curves have no positive period to fold at")
    time = np.array(batch.time, dtype=np.float64, copy=True)
    mag = np.array(batch.mag, copy=True)
    err = np.array(batch.mag_err, copy=True)
    for i in range(n):
        m = np.asarray(batch.mask[i], dtype=bool)
        t = time[i, m]
        phase = fold_phase(t, periods[i], t.min()) if t.size else t
        order = np.argsort(phase, kind="stable")
        time[i, m] = phase[order] * periods[i]
        mag[i, m] = mag[i, m][order]
        err[i, m] = err[i, m][order]
    out = copy.copy(batch)  # the other fields are shared, not copied
    out.time, out.mag, out.mag_err = time.astype(np.asarray(batch.time).dtype), mag, err
    return out


def fold_curves(curves, periods, window: int = 200):
    """Period-folded sub-curves for the folded Astromer variants: (subcurves, owner int64[M]).

    Each curve (time, mag[, err]) is folded at its period (phase 0 at the first observation, as in
    `fold_batch`) and sorted by phase; a curve of n observations is then dealt into k = ceil(n /
    window) interleaved sub-curves (every k-th observation in phase order), so each one is a single
    encoder window covering the whole cycle rather than a slice of it. Time becomes phase x period,
    keeping the period's scale for the positional encoding. `owner[i]` is the input curve of
    sub-curve i; curves without observations give none. A non-finite or non-positive period raises.
    """
    periods = np.asarray(periods, dtype=np.float64)
    curves = list(curves)
    if periods.shape != (len(curves),):
        raise ValidationError(f"{len(curves)} light curves but {periods.size} periods")
    out, owner = [], []
    for i, (c, p) in enumerate(zip(curves, periods, strict=True)):
        t = np.asarray(c[0], np.float64)
        if t.size == 0:
            continue
        if not (np.isfinite(p) and p > 0):
            raise ValidationError(f"light curve {i} has no positive period to fold at (got {p})")
        phase = fold_phase(t, p, t.min())
        order = np.argsort(phase, kind="stable")
        k = -(-t.size // window)
        for j in range(k):
            sel = order[j::k]
            rest = tuple(None if a is None else np.asarray(a)[sel] for a in c[1:])
            out.append((phase[sel] * p, *rest))
            owner.append(i)
    return out, np.asarray(owner, np.int64)
