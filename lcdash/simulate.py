"""A seedable synthetic survey of variable stars, for the demo store, tests and benchmarks.

Every object gets an irregular, ground-based cadence (random nights inside ~8-month observing
seasons whose timing follows the object's right ascension, a few hours of spread within the night,
3-9 years), a class-specific light-curve shape with a physically plausible period and amplitude, and
magnitude-dependent Gaussian noise (errors rise toward the faint end as for a CCD survey near its
limit). Generation is vectorised per class over all observations, so 2000 objects take well under a
second.

Shapes (``dm`` is the offset from the mean magnitude; positive = fainter):

- pulsators (RRab, RRc, DCEP, HADS_dScuti, LPV) use a skewed cosine ``-A/2 cos(2 pi w(phase))``,
  where ``w`` maps the declining part of the cycle onto half a cosine period and the rising branch onto
  the other half: a short rise gives the RRab sawtooth, an even split a sinusoid. The derivative of the
  cosine vanishes at both joins, so the curve stays smooth.
- EA: flat out of eclipse, U-shaped primary and (shallower) secondary eclipses of small phase width.
- EW: ``A/2 cos(4 pi phase)`` plus a small ``cos(2 pi phase)`` term (slightly unequal minima); a
  Lomb-Scargle periodogram peaks at P/2, as for real W UMa stars.
- Rot: spotted rotators, a low-amplitude two-harmonic wave whose amplitude drifts with time.
- QSO: a damped random walk (Ornstein-Uhlenbeck process; Kelly et al. 2009), no period.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lcdash.errors import ValidationError

SURVEY = "lcdash demo (synthetic)"

#: label -> (description, period range in days or None, amplitude range in mag, mean-mag range)
CLASSES: dict[str, tuple[str, tuple[float, float] | None, tuple[float, float], tuple[float, float]]] = {
    "RRab": ("RR Lyrae, fundamental mode (sawtooth)", (0.45, 0.9), (0.5, 1.2), (13.0, 19.0)),
    "RRc": ("RR Lyrae, first overtone (near-sinusoidal)", (0.2, 0.45), (0.25, 0.6), (13.0, 19.0)),
    "DCEP": ("classical Cepheid (amplitude grows with period)", (2.0, 50.0), (0.3, 1.3), (13.0, 17.5)),
    "EA": ("detached eclipsing binary (Algol)", (0.5, 10.0), (0.3, 1.5), (13.0, 18.5)),
    "EW": ("contact eclipsing binary (W UMa)", (0.22, 0.6), (0.2, 0.8), (13.0, 18.5)),
    "LPV": ("long-period variable / Mira", (100.0, 500.0), (2.0, 6.0), (10.0, 15.0)),
    "HADS_dScuti": ("high-amplitude delta Scuti", (0.04, 0.2), (0.2, 0.8), (13.0, 18.0)),
    "Rot": ("spotted rotating star", (1.0, 30.0), (0.05, 0.3), (13.0, 17.5)),
    "QSO": ("quasar-like red noise (damped random walk)", None, (0.2, 1.0), (16.0, 19.0)),
}

# Amplitude scaling and mean colour (band - V) per band; unknown bands get (1.0, 0.0).
_BAND_AMP = {"u": 1.6, "B": 1.3, "g": 1.2, "V": 1.0, "r": 0.85, "R": 0.8, "i": 0.7, "I": 0.65, "z": 0.6}
_BAND_COLOUR = {"u": 1.0, "B": 0.6, "g": 0.35, "V": 0.0, "r": -0.2, "R": -0.3, "i": -0.35, "I": -0.5,
                "z": -0.45}

_YEAR = 365.25
_MJD0 = 53500.0


def mag_error(mag: np.ndarray) -> np.ndarray:
    """Typical 1-sigma photometric error of a small-telescope survey at magnitude ``mag``.

    A floor of 0.01 mag (calibration) plus a sky-limited term that reaches ~0.1 mag at 19 and grows
    by 10**0.4 per magnitude beyond.
    """
    return np.sqrt(0.01**2 + (0.1 * 10.0 ** (0.4 * (np.asarray(mag, dtype=float) - 19.0))) ** 2)


def _skewed_wave(phase: np.ndarray, rise: np.ndarray) -> np.ndarray:
    """Unit peak-to-peak wave, brightest (-0.5) at phase 0, faintest (+0.5) at phase 1 - rise."""
    decline = 1.0 - rise
    w = np.where(phase < decline, 0.5 * phase / decline, 0.5 + 0.5 * (phase - decline) / rise)
    return -0.5 * np.cos(2.0 * np.pi * w)


def _eclipses(phase, width, depth2_ratio, sec_phase):
    """Unit-depth primary at phase 0 and secondary (depth ratio) at sec_phase; U-shaped profiles."""
    d1 = np.minimum(phase, 1.0 - phase) / width
    d2 = np.abs(phase - sec_phase) / width
    prim = np.sqrt(np.clip(1.0 - d1**2, 0.0, None))
    sec = np.sqrt(np.clip(1.0 - d2**2, 0.0, None))
    return prim + depth2_ratio * sec


def _log_uniform(rng, lo, hi, n):
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def _cadence(rng, ra, n_per_band, n_bands):
    """Observation times for each (object, band): random nights in yearly seasons set by RA.

    Returns (obj index, band index, time) flat arrays, unsorted.
    """
    n_obj = len(ra)
    n_years = rng.integers(3, 10, n_obj)                 # 3-9 seasons
    season_len = rng.uniform(200.0, 260.0, n_obj)        # ~8 months visible per year
    # Opposition (best visibility) moves through the year with RA; start the season before it.
    start = _MJD0 + (ra / 360.0) * _YEAR - season_len / 2 + rng.uniform(0, 30, n_obj)
    counts = n_per_band.reshape(-1)                       # [n_obj * n_bands], object-major
    obj = np.repeat(np.repeat(np.arange(n_obj), n_bands), counts)
    band = np.repeat(np.tile(np.arange(n_bands), n_obj), counts)
    u = rng.random(obj.size) * n_years[obj]
    season = np.floor(u)
    night = np.floor((u - season) * season_len[obj])
    # Observations cluster around local midnight with a few hours' spread: breaks daily aliasing
    # enough for Lomb-Scargle to find short periods, as in real surveys with several visits a night.
    t = start[obj] + season * _YEAR + night + 0.5 + rng.uniform(-0.17, 0.17, obj.size)
    return obj, band, t


def _drw(rng, obj, t, tau, sigma):
    """Damped random walk at times ``t`` (sorted within each object), vectorised over objects."""
    order = np.lexsort((t, obj))
    o, ts = obj[order], t[order]
    starts = np.flatnonzero(np.r_[True, o[1:] != o[:-1]])
    lengths = np.diff(np.r_[starts, o.size])
    x = np.empty(o.size)
    first = starts
    x[first] = rng.normal(0.0, 1.0, first.size) * sigma[o[first]]
    for k in range(1, lengths.max() if lengths.size else 1):
        idx = starts[lengths > k] + k
        prev = idx - 1
        a = np.exp(-(ts[idx] - ts[prev]) / tau[o[idx]])
        x[idx] = a * x[prev] + sigma[o[idx]] * np.sqrt(1.0 - a * a) * rng.normal(0.0, 1.0, idx.size)
    out = np.empty_like(x)
    out[order] = x
    return out


def _class_signal(label, rng, n, obj, t, bandamp):
    """Noiseless magnitude offsets for ``n`` objects of one class at their observation times.

    Returns (dm per observation, period per object (NaN if none), peak-to-peak amplitude per object).
    """
    _, prange, arange, _ = CLASSES[label]
    period = _log_uniform(rng, *prange, n) if prange else np.full(n, np.nan)
    amp = rng.uniform(*arange, n)
    epoch = rng.uniform(0.0, 1.0, n) * np.nan_to_num(period, nan=1.0)
    phase = np.mod((t - epoch[obj]) / np.nan_to_num(period, nan=1.0)[obj], 1.0)

    if label == "RRab":
        dm = _skewed_wave(phase, rng.uniform(0.1, 0.2, n)[obj])
    elif label == "RRc":
        dm = _skewed_wave(phase, rng.uniform(0.38, 0.5, n)[obj])
    elif label == "DCEP":
        # V amplitude grows with log P (roughly 0.3 mag at 2 d to ~1.2 mag at 50 d), with scatter.
        amp = np.clip(0.3 + 0.6 * np.log10(period / 2.0) + rng.normal(0, 0.08, n), *arange)
        dm = _skewed_wave(phase, rng.uniform(0.25, 0.4, n)[obj])
    elif label == "HADS_dScuti":
        # Fundamental plus, for some stars, the first overtone (P1/P0 = 0.773).
        a2 = rng.uniform(0.0, 0.3, n) * (rng.random(n) < 0.4)
        ph2 = np.mod((t - epoch[obj]) / (0.773 * period[obj]), 1.0)
        dm = (_skewed_wave(phase, rng.uniform(0.3, 0.45, n)[obj]) + a2[obj] * np.sin(2 * np.pi * ph2)) \
            / (1.0 + a2[obj])
    elif label == "LPV":
        # Miras: skewed wave, slow cycle-to-cycle changes of the mean and the amplitude.
        cyc = np.floor((t - epoch[obj]) / period[obj])
        wobble = 1.0 + 0.08 * np.sin(cyc * rng.uniform(0.5, 2.0, n)[obj] + rng.uniform(0, 6.3, n)[obj])
        dm = _skewed_wave(phase, rng.uniform(0.35, 0.45, n)[obj]) * wobble
        slow = period * rng.uniform(5.0, 9.0, n)
        dm += 0.1 * np.sin(2 * np.pi * (t - epoch[obj]) / slow[obj])
    elif label == "EA":
        # Eclipse half-width in phase ~ (R1 + R2) / (2 pi a): wider for the closer, short-period orbits.
        width = np.clip(rng.uniform(0.05, 0.1, n) * (2.0 / period) ** (1 / 3), 0.04, 0.14)
        sec_phase = 0.5 + rng.normal(0, 0.01, n) * (rng.random(n) < 0.3)
        dm = _eclipses(phase, width[obj], rng.uniform(0.1, 0.9, n)[obj], sec_phase[obj])
        # Mild ellipsoidal / reflection variation out of eclipse.
        dm += rng.uniform(0.02, 0.05, n)[obj] * (1 - np.cos(4 * np.pi * phase))
    elif label == "EW":
        d = rng.uniform(0.0, 0.1, n)
        dm = 0.5 * np.cos(4 * np.pi * phase) + d[obj] * np.cos(2 * np.pi * phase)
    elif label == "Rot":
        spot_life = rng.uniform(150.0, 800.0, n)   # spots grow and decay: the amplitude drifts
        drift = 1.0 + 0.4 * np.sin(2 * np.pi * t / spot_life[obj] + rng.uniform(0, 6.3, n)[obj])
        dm = drift * (0.5 * np.sin(2 * np.pi * phase) + 0.15 * np.sin(4 * np.pi * phase + 1.0)) / 1.3
    elif label == "QSO":
        tau = _log_uniform(rng, 50.0, 500.0, n)
        dm = _drw(rng, obj, t, tau, amp / 4.0)      # peak-to-peak ~ 4 sigma
        return dm * bandamp, period, amp
    else:  # pragma: no cover - CLASSES and this function are kept in step
        raise ValidationError(f"no light-curve model for class {label!r}")
    return dm * amp[obj] * bandamp, period, amp


def simulate_survey(
    n_objects: int = 2000,
    seed: int = 0,
    classes: Sequence[str] | Mapping[str, float] | None = None,
    bands: Sequence[str] = ("V",),
    n_obs: tuple[int, int] = (60, 400),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate a survey of variable stars.

    ``classes``: class names from ``CLASSES`` (split evenly) or a mapping name -> relative weight;
    default all classes. ``n_obs``: inclusive range of observations per object and band.

    Returns ``(observations, objects)``: observations[object_id, band, time, mag, mag_err] sorted by
    (object_id, band, time); objects[object_id, label, period, ra, dec, amplitude, mean_mag, survey]
    (period NaN for non-periodic classes; amplitude and mean_mag in the first band).
    """
    if n_objects < 1:
        raise ValidationError(f"n_objects must be at least 1, got {n_objects}")
    if classes is None:
        classes = list(CLASSES)
    weights = dict(classes) if isinstance(classes, Mapping) else {c: 1.0 for c in classes}
    unknown = [c for c in weights if c not in CLASSES]
    if unknown or not weights:
        raise ValidationError(f"unknown classes {unknown}; choose from {list(CLASSES)}")
    bands = list(bands)
    if not bands or len(set(bands)) != len(bands):
        raise ValidationError(f"bands must be distinct and non-empty, got {bands}")
    lo, hi = int(n_obs[0]), int(n_obs[1])
    if not 3 <= lo <= hi:
        raise ValidationError(f"n_obs range must satisfy 3 <= lo <= hi, got {n_obs}")

    rng = np.random.default_rng(seed)
    names = list(weights)
    w = np.array([weights[c] for c in names], dtype=float)
    if np.any(w < 0) or w.sum() <= 0:
        raise ValidationError("class weights must be non-negative and not all zero")
    # Largest-remainder split: counts sum exactly to n_objects and are as even as the weights allow.
    exact = n_objects * w / w.sum()
    counts = np.floor(exact).astype(int)
    counts[np.argsort(-(exact - counts), kind="stable")[: n_objects - counts.sum()]] += 1
    labels = np.repeat(np.array(names, dtype=object), counts)
    labels = labels[rng.permutation(n_objects)]

    n_bands = len(bands)
    ra = rng.uniform(0.0, 360.0, n_objects)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n_objects)))
    n_per_band = rng.integers(lo, hi + 1, (n_objects, n_bands))
    obj, band_idx, t = _cadence(rng, ra, n_per_band, n_bands)

    mean_mag = np.empty(n_objects)
    period = np.full(n_objects, np.nan)
    amplitude = np.empty(n_objects)
    true_mag = np.empty(t.size)
    band_amp = np.array([_BAND_AMP.get(b, 1.0) for b in bands])
    band_col = np.array([_BAND_COLOUR.get(b, 0.0) for b in bands])
    for label in names:
        members = np.flatnonzero(labels == label)
        if members.size == 0:
            continue
        local = np.full(n_objects, -1)
        local[members] = np.arange(members.size)
        sel = np.flatnonzero(local[obj] >= 0)
        lobj = local[obj[sel]]
        dm, p, a = _class_signal(label, rng, members.size, lobj, t[sel], band_amp[band_idx[sel]])
        m0 = rng.uniform(*CLASSES[label][3], members.size)
        # Redder classes (Miras, Cepheids) have larger colour terms.
        colour_scale = {"LPV": 3.0, "DCEP": 1.5, "QSO": 0.5}.get(label, 1.0)
        true_mag[sel] = m0[lobj] + colour_scale * (band_col[band_idx[sel]] - band_col[0]) + dm
        mean_mag[members], period[members], amplitude[members] = m0, p, a * band_amp[0]

    err = mag_error(true_mag) * rng.lognormal(0.0, 0.15, t.size)
    mag = true_mag + rng.normal(0.0, 1.0, t.size) * err

    width = max(6, len(str(n_objects)))
    ids = np.array([f"SIM-{i:0{width}d}" for i in range(n_objects)], dtype=object)
    order = np.lexsort((t, band_idx, obj))
    obj, band_idx, t, mag, err = obj[order], band_idx[order], t[order], mag[order], err[order]
    # Times are continuous draws: exact duplicates are (almost) impossible, but keep (oid, band, time)
    # unique for the store regardless.
    dup = np.flatnonzero((np.diff(t) == 0) & (np.diff(obj) == 0) & (np.diff(band_idx) == 0)) + 1
    t[dup] += 1e-5
    observations = pd.DataFrame({
        "object_id": ids[obj],
        "band": np.array(bands, dtype=object)[band_idx],
        "time": t,
        "mag": mag,
        "mag_err": err,
    })
    objects = pd.DataFrame({
        "object_id": ids,
        "label": labels,
        "period": period,
        "ra": ra,
        "dec": dec,
        "amplitude": amplitude,
        "mean_mag": mean_mag,
        "survey": SURVEY,
    })
    return observations, objects


def write_survey_parquet(
    out_dir,
    n_objects: int,
    seed: int = 0,
    objects_per_partition: int = 10_000,
    progress=None,
    **kwargs,
) -> dict:
    """Stream a synthetic survey of any size to Parquet in bounded memory: one `simulate_survey` chunk
    of `objects_per_partition` objects at a time (its own seed, object ids numbered across chunks).

    Writes `out_dir/observations/part=<k>/part-0.parquet` (a hive-partitioned dataset that
    `lcdash embed-catalog` reads; every object lies in one partition) and `out_dir/objects.parquet`
    (one row group per chunk). Memory stays at one chunk, whatever `n_objects`. kwargs go to
    `simulate_survey` (classes, bands, n_obs). Returns {"objects", "observations", "partitions"}."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    if n_objects < 1 or objects_per_partition < 1:
        raise ValidationError("n_objects and objects_per_partition must be at least 1")
    out = Path(out_dir)
    obs_dir = out / "observations"
    if obs_dir.exists() and any(obs_dir.iterdir()):
        raise ValidationError(f"{obs_dir} is not empty: choose a new folder")
    obs_dir.mkdir(parents=True, exist_ok=True)
    n_parts = -(-n_objects // objects_per_partition)
    width = max(6, len(str(n_objects)))
    pwidth = max(5, len(str(n_parts)))
    writer = None
    n_obs = 0
    try:
        for k in range(n_parts):
            n = min(objects_per_partition, n_objects - k * objects_per_partition)
            chunk_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
            observations, objects = simulate_survey(n_objects=n, seed=chunk_seed, **kwargs)
            first = k * objects_per_partition
            ids = np.array([f"SIM-{first + i:0{width}d}" for i in range(n)], dtype=object)
            local = objects["object_id"].to_numpy()
            rename = dict(zip(local, ids, strict=True))
            observations["object_id"] = observations["object_id"].map(rename)
            objects["object_id"] = ids
            part = obs_dir / f"part={k:0{pwidth}d}"
            part.mkdir()
            pq.write_table(pa.Table.from_pandas(observations, preserve_index=False), part / "part-0.parquet")
            table = pa.Table.from_pandas(objects, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(out / "objects.parquet", table.schema)
            writer.write_table(table)
            n_obs += len(observations)
            if progress is not None:
                progress(k + 1, n_parts, f"wrote {first + n:,}/{n_objects:,} objects")
    finally:
        if writer is not None:
            writer.close()
    return {"objects": n_objects, "observations": n_obs, "partitions": n_parts, "path": str(out)}


def write_survey_hats(
    out_dir,
    n_objects: int,
    seed: int = 0,
    objects_per_partition: int = 10_000,
    catalog_name: str = "lcdash_demo",
    progress=None,
    **kwargs,
) -> dict:
    """Stream a synthetic survey to a HATS catalogue (one object a row, its light curve in a nested
    `lightcurve` column: band, time, mag, mag_err), in bounded memory, with the hats library's writers.

    Two passes, as an external sort: chunks of `objects_per_partition` objects (the same chunks and
    seeds as `write_survey_parquet`) are split by HEALPix pixel at a fixed order chosen so a pixel holds
    about one chunk; then each pixel is sorted by `_healpix_29` and written as
    `dataset/Norder=k/Dir=d/Npix=p.parquet`. Memory stays at one chunk or one pixel. Returns
    {"objects", "observations", "partitions", "order", "path"}."""
    import math
    import shutil
    from pathlib import Path

    try:
        import nested_pandas as npd
        from hats.catalog import PartitionInfo, TableProperties
        from hats.io import parquet_metadata, paths
        from hats.pixel_math import HealpixPixel
        from hats.pixel_math.spatial_index import compute_spatial_index
    except ImportError as exc:
        raise ValidationError(f"writing HATS needs the hats and nested-pandas packages ({exc.name} is "
                              "missing; pip install -r requirements.txt)") from exc

    if n_objects < 1 or objects_per_partition < 1:
        raise ValidationError("n_objects and objects_per_partition must be at least 1")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ValidationError(f"{out} is not empty: choose a new folder")
    order = max(0, math.ceil(math.log(max(n_objects / (12 * objects_per_partition), 1.0), 4)))
    staging = out / "_staging"
    n_chunks = -(-n_objects // objects_per_partition)
    width = max(6, len(str(n_objects)))
    n_obs = 0
    pixels: set[int] = set()
    for k in range(n_chunks):  # pass 1: each chunk split by pixel
        n = min(objects_per_partition, n_objects - k * objects_per_partition)
        chunk_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
        observations, objects = simulate_survey(n_objects=n, seed=chunk_seed, **kwargs)
        ids = np.array([f"SIM-{k * objects_per_partition + i:0{width}d}" for i in range(n)], dtype=object)
        observations["object_id"] = observations["object_id"].map(
            dict(zip(objects["object_id"], ids, strict=True)))
        objects["object_id"] = ids
        objects["_healpix_29"] = compute_spatial_index(objects["ra"].to_numpy(), objects["dec"].to_numpy())
        nf = npd.NestedFrame(objects.set_index("object_id")).join_nested(
            observations.set_index("object_id"), "lightcurve").reset_index()
        pix = nf["_healpix_29"].to_numpy() >> (2 * (29 - order))
        for p in np.unique(pix):
            folder = staging / f"pixel={int(p)}"
            folder.mkdir(parents=True, exist_ok=True)
            nf[pix == p].reset_index(drop=True).to_parquet(folder / f"chunk-{k}.parquet")
            pixels.add(int(p))
        n_obs += len(observations)
        if progress is not None:
            done = k * objects_per_partition + n
            progress(k + 1, n_chunks + 1, f"simulated {done:,}/{n_objects:,} objects")
    healpix = []
    for p in sorted(pixels):  # pass 2: one pixel at a time, sorted by its spatial index
        parts = [npd.read_parquet(f) for f in sorted((staging / f"pixel={p}").glob("*.parquet"))]
        nf = npd.NestedFrame(pd.concat(parts, ignore_index=True)).sort_values("_healpix_29", kind="stable")
        px = HealpixPixel(order, p)
        target = paths.pixel_catalog_file(out, px)
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        nf.reset_index(drop=True).to_parquet(target)  # a RangeIndex is not stored as a column
        healpix.append(px)
    shutil.rmtree(staging)
    parquet_metadata.write_parquet_metadata(out)
    PartitionInfo.from_healpix(healpix).write_to_file(catalog_path=out)
    TableProperties(catalog_name=catalog_name, catalog_type="object", total_rows=n_objects, ra_column="ra",
                    dec_column="dec", healpix_column="_healpix_29", healpix_order=29,
                    hats_order=order).to_properties_file(out)
    if progress is not None:
        progress(n_chunks + 1, n_chunks + 1, f"wrote {len(healpix)} HEALPix partitions")
    return {"objects": n_objects, "observations": n_obs, "partitions": len(healpix), "order": order,
            "path": str(out)}
