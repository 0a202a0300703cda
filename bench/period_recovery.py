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


def table(flags: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    flags = flags.assign(label=labels)
    per = flags.groupby("label").mean(numeric_only=True)
    per["n"] = flags.groupby("label").size()
    per.loc["all"] = list(flags.drop(columns="label").mean()) + [len(flags)]
    return per


def load(data: Path, per_class: int | None, seed: int):
    objects = pd.read_parquet(data / "objects.parquet")
    objects = objects[np.isfinite(objects["period"]) & (objects["period"] > 0)]
    if per_class:
        objects = objects.sample(frac=1.0, random_state=seed).groupby("label").head(per_class)
    ids = objects["object_id"].tolist()
    obs = pd.read_parquet(data / "observations.parquet", filters=[("object_id", "in", ids)])
    tcol = "time_mjd" if "time_mjd" in obs.columns else "time"
    curves, keep = [], []
    for oid, g in obs.groupby("object_id", sort=False):
        curves.append((g[tcol].to_numpy(np.float64), g["mag"].to_numpy(np.float64), g["mag_err"].to_numpy()))
        keep.append(oid)
    objects = objects.set_index("object_id").loc[keep]
    return curves, objects


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/catalina_train"
    )
    ap.add_argument("--per-class", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    curves, objects = load(args.data, args.per_class, args.seed)
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
        tab = table(classify(found, cat, baseline), labels)
        tables[name] = tab
        print(f"\n{name} finder: fractions per class")
        print((tab.drop(columns="n") * 100).round(1).assign(n=tab["n"].astype(int)).to_string())
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
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
