"""How often the period finder gives the catalogue period, and how fast, against the finder it replaced.

    .venv/bin/python bench/period_recovery.py [--data ../shared/data/catalina_train] [--per-class N]
        [--seed 0] [--threads 2] [--out docs/results/periods]

On the shared Catalina train split (catalogue periods from Drake et al. 2017), per class and
overall, for the old finder (the strongest single-sine Lomb-Scargle peak on the features' fixed
grid, `lcdash.features` before issue 26) and the new one (`lcdash.periods`):
- within 1%: |P / P_cat - 1| < 0.01; at P/2, at 2P: the same against P_cat / 2 and 2 P_cat;
- alias: 1/P within 1% of |1/P_cat +- k / day| (k = 1, 2; solar and sidereal day) or
  1/P_cat +- 1 / year (also for the halved and doubled period);
- clean fold: the phase drift |1/P - 1/P_cat| x baseline under 0.1 cycle;
- pdm_theta: the mean phase dispersion of the fold at the found period (Stellingwerf 1978, 10
  bins; lower is cleaner), which needs no catalogue;
- curves/s of both on the same curves in the same run (periodogram and decision, threads as given).
`--per-class N` takes N curves per class (seeded) for a quick look; the default is every curve.
Writes recovery.csv, results.json (both finders) and the periods per curve (periods.parquet).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SOLAR, SIDEREAL, YEAR = 1.0, 1.0027379, 1.0 / 365.25


def old_finder(curves, threads: int) -> np.ndarray:
    """The finder before issue 26: the strongest Lomb-Scargle peak on a fixed 2**17 + 1 grid."""
    import light_curve as lc

    from lcdash.features import _prepare
    from lcdash.lightcurve import MIN_PERIOD

    grid = np.linspace(0.0, 2 * np.pi / MIN_PERIOD, 2**17 + 1)
    ext = lc.Extractor(lc.Periodogram(peaks=1, freqs=grid, fast=True))
    prepared = [_prepare(t, m, e) for t, m, e in curves]
    return np.asarray(ext.many(prepared, n_jobs=threads, sorted=True, check=False, fill_value=np.nan))[:, 0]


def new_finder(curves, threads: int) -> tuple[np.ndarray, list]:
    from lcdash.periods import find_periods

    res = find_periods(curves, n_jobs=threads)
    return np.array([r.period for r in res]), res


def classify(found: np.ndarray, cat: np.ndarray, baseline: np.ndarray) -> pd.DataFrame:
    """Per curve: right (1%), half, double, alias, clean fold."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = found / cat
        f, fc = 1.0 / found, 1.0 / cat
        out = pd.DataFrame(
            {
                "within_1pct": np.abs(r - 1) < 0.01,
                "at_half": np.abs(r - 0.5) < 0.005,
                "at_double": np.abs(r - 2) < 0.02,
                "clean_fold": np.abs(f - fc) * baseline < 0.1,
            }
        )
        alias = np.zeros(len(found), bool)
        for base in (fc, 2 * fc, fc / 2):
            for d in (SOLAR, 2 * SOLAR, SIDEREAL, YEAR):
                for sign in (1, -1):
                    fa = np.abs(base + sign * d)
                    alias |= np.abs(f / fa - 1) < 0.01
        out["alias"] = alias & ~out["within_1pct"].to_numpy() & ~out["at_half"] & ~out["at_double"]
    return out


def fold_dispersion(curves, found: np.ndarray, bins: int = 10) -> np.ndarray:
    """Phase dispersion theta (Stellingwerf 1978) of each curve folded at `found`: the pooled
    variance within `bins` phase bins over the total variance; lower is a cleaner fold (1: none)."""
    out = np.full(len(curves), np.nan)
    for i, ((t, m, _), p) in enumerate(zip(curves, found, strict=True)):
        if not (np.isfinite(p) and p > 0) or len(t) < 2 * bins:
            continue
        m = np.asarray(m, np.float64)
        k = np.minimum((np.mod(t / p, 1.0) * bins).astype(int), bins - 1)
        n = np.bincount(k, minlength=bins)
        s1 = np.bincount(k, weights=m, minlength=bins)
        s2 = np.bincount(k, weights=m * m, minlength=bins)
        within = np.sum(s2 - np.where(n > 0, s1**2 / np.maximum(n, 1), 0.0)) / max(len(m) - bins, 1)
        out[i] = within / np.var(m, ddof=1)
    return out


def table(flags: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    flags = flags.assign(label=labels)
    per = flags.groupby("label").mean(numeric_only=True)
    per["n"] = flags.groupby("label").size()
    per.loc["all"] = list(flags.drop(columns="label").mean()) + [len(flags)]
    return per


def load(data: Path, per_class: int | None, seed: int, band: str | None = None):
    objects = pd.read_parquet(data / "objects.parquet")
    objects = objects[np.isfinite(objects["period"]) & (objects["period"] > 0)]
    if per_class:
        objects = objects.sample(frac=1.0, random_state=seed).groupby("label").head(per_class)
    ids = objects["object_id"].tolist()
    filters = [("object_id", "in", ids)] + ([("band", "==", band)] if band else [])
    obs = pd.read_parquet(data / "observations.parquet", filters=filters)
    if band is None and "band" in obs.columns and obs["band"].nunique() > 1:
        raise SystemExit(f"{data} has bands {sorted(obs['band'].unique())}: choose one with --band")
    tcol = "time_mjd" if "time_mjd" in obs.columns else "time"
    curves, keep = [], []
    for oid, g in obs.groupby("object_id", sort=False):
        curves.append((g[tcol].to_numpy(np.float64), g["mag"].to_numpy(np.float64), g["mag_err"].to_numpy()))
        keep.append(oid)
    objects = objects.set_index("object_id").loc[keep]
    return curves, objects


def plot_folds(curves, labels, cat, old, new, path: Path, seed: int = 0) -> None:
    """For each class, one curve where the finders disagree: folded at the old, new (and catalogue) period."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    classes = sorted(set(labels))
    fig, axes = plt.subplots(len(classes), 3, figsize=(9, 1.7 * len(classes)), squeeze=False)
    for row, c in enumerate(classes):
        idx = np.flatnonzero((labels == c) & (np.abs(new / old - 1) > 0.01))
        if not len(idx):
            idx = np.flatnonzero(labels == c)
        i = int(rng.choice(idx))
        t, m, _ = curves[i]
        for col, (name, p) in enumerate((("old", old[i]), ("new", new[i]), ("catalogue", cat[i]))):
            ax = axes[row, col]
            if np.isfinite(p) and p > 0:
                ph = np.mod((t - t.min()) / p, 1.0)
                ax.plot(np.r_[ph, ph + 1], np.r_[m, m], ".", ms=2, color="k")
            ax.invert_yaxis()
            ax.set_title(f"{c} {name} P={p:.5g} d", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/catalina_train"
    )
    ap.add_argument("--per-class", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--band", default=None, help="the band, for surveys with several (EROS-1: EROS1_R)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--only",
        choices=["old", "new"],
        default=None,
        help="time one finder alone and print its rate (for whole-process A/B timing)",
    )
    ap.add_argument("--limit", type=int, default=None, help="only the first N curves")
    args = ap.parse_args(argv)

    curves, objects = load(args.data, args.per_class, args.seed, args.band)
    if args.limit:
        curves, objects = curves[: args.limit], objects.iloc[: args.limit]
    if args.only:
        t0 = time.perf_counter()
        (old_finder if args.only == "old" else new_finder)(curves, args.threads)
        rate = len(curves) / (time.perf_counter() - t0)
        print(f"{args.only} finder: {rate:.1f} curves/s on {len(curves)} curves")
        return
    cat = objects["period"].to_numpy(np.float64)
    baseline = np.array([t.max() - t.min() for t, _, _ in curves])
    labels = objects["label"].to_numpy()
    print(f"{len(curves)} curves from {args.data}, {args.threads} threads")

    t0 = time.perf_counter()
    old = old_finder(curves, args.threads)
    t_old = time.perf_counter() - t0
    t0 = time.perf_counter()
    new, results = new_finder(curves, args.threads)
    t_new = time.perf_counter() - t0
    rate_old, rate_new = len(curves) / t_old, len(curves) / t_new
    tables = {}
    pd.set_option("display.width", 160)
    for name, found in (("old", old), ("new", new)):
        flags = classify(found, cat, baseline)
        flags["pdm_theta"] = fold_dispersion(curves, found)
        tab = table(flags, labels)
        tables[name] = tab
        print(f"\n{name} finder: fractions per class")
        shown = (tab.drop(columns=["n", "pdm_theta"]) * 100).round(1)
        print(shown.assign(pdm_theta=tab["pdm_theta"].round(3), n=tab["n"].astype(int)).to_string())
    ratio = rate_new / rate_old
    print(f"\nspeed: old {rate_old:.1f} curves/s, new {rate_new:.1f} curves/s, new/old {ratio:.2f}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        both = pd.concat({k: v for k, v in tables.items()}, names=["finder", "label"])
        both.to_csv(args.out / "recovery.csv", float_format="%.4f")
        pd.DataFrame(
            {
                "object_id": objects.index,
                "label": labels,
                "catalogue_period": cat,
                "old_period": old,
                "new_period": new,
                "reason": [r.reason for r in results],
            }
        ).to_parquet(args.out / "periods.parquet", index=False)
        summary = {
            "curves": len(curves),
            "threads": args.threads,
            "curves_per_s": {"old": rate_old, "new": rate_new, "ratio_new_old": rate_new / rate_old},
            "overall": {k: v.loc["all"].drop("n").to_dict() for k, v in tables.items()},
        }
        (args.out / "results.json").write_text(json.dumps(summary, indent=2))
        plot_folds(curves, labels, cat, old, new, args.out / "folds.png", args.seed)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
