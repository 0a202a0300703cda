"""How an evaluation run's scores read, in the app and in report.md: model titles, "mean ± std",
the summary and per-class tables, the summed confusion matrix, what each inference time counts.

One copy for every reader: `plots.py` (plotly figures, loaded by every page), `report.py`
(report.md and matplotlib PNGs, in the evaluate worker and the CLI) and the Probe / Compare pages.
A leaf (numpy, pandas): `report.py` imports the evaluation protocol (scikit-learn, about 1.3 s),
which the pages that only draw figures must not pay for, and the report writer has no use for plotly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MODEL_TITLES = {
    "probe": "Astromer probe",
    "rnn": "Becker RNN",
    "cnn": "Aguirre CNN",
    "rf": "Feature RF",
    "probe+features": "Probe + features (hybrid)",
    "rnn-folded": "Becker RNN, folded",
    "cnn-folded": "Aguirre CNN, folded",
}


def title(model: str) -> str:
    """A model's name for people ("rf" -> "Feature RF"); a tagged record ("probe [encoder]", from
    `evaluate-report PATH::TAG`) keeps its tag, an unknown name is shown as is."""
    base, sep, tag = model.partition(" [")
    return MODEL_TITLES.get(base, base) + (f" [{tag}" if sep else "")


def pm(mean, std, scale: float = 100.0, digits: int = 1) -> str:
    """"mean ± std" of a fraction in percent ("81.2 ± 3.4"); "-" when there is no mean."""
    if mean is None or not np.isfinite(mean):
        return "-"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def _pm_over(values: pd.Series) -> str:
    """pm of the mean and population std over folds, missing values left out."""
    v = values.dropna().astype(float)
    return pm(v.mean(), v.std(ddof=0)) if len(v) else "-"


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Model x spc rows: macro F1 / precision / recall / accuracy as "mean ± std" (%) over folds,
    training seconds and inference light curves per second."""
    rows = []
    for (model, spc), g in results.groupby(["model", "spc"], sort=True):
        rows.append(
            {
                "model": title(model),
                "spc": int(spc),
                "folds": len(g),
                "macro F1 [%]": _pm_over(g["macro_f1"]),
                "macro precision [%]": _pm_over(g["macro_precision"]),
                "macro recall [%]": _pm_over(g["macro_recall"]),
                "accuracy [%]": _pm_over(g["accuracy"]),
                "train s (mean)": round(float(g["train_seconds"].mean()), 1),
                "inference LC/s (mean)": round(float(g["infer_lc_per_s"].mean())),
            }
        )
    return pd.DataFrame(rows)


def per_class_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per-class precision / recall / F1 (mean over folds) and support of one model x spc."""
    rows: dict[str, list[dict]] = {}
    for pc in results["per_class"]:
        for cls, m in (pc or {}).items():
            rows.setdefault(cls, []).append(m)
    out = [
        {
            "class": cls,
            **{k: float(np.mean([m.get(k, np.nan) for m in ms])) for k in ("precision", "recall", "f1")},
            "support (per fold)": float(np.mean([m.get("support", 0) for m in ms])),
        }
        for cls, ms in rows.items()
    ]
    return pd.DataFrame(out).sort_values("f1", ascending=False) if out else pd.DataFrame()


def summed_confusion(df: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Confusion matrix summed over the folds in `df` (records of one model x spc)."""
    classes = df.iloc[0]["confusion"]["classes"]
    mat = sum(np.asarray(c["matrix"], dtype=float) for c in df["confusion"])
    return classes, mat


def infer_includes(results: pd.DataFrame) -> dict:
    """What each model's inference time counts (the run's records say: e.g. "feature extraction +
    forest", "head only (embeddings precomputed)")."""
    out = {}
    for model, g in results.groupby("model", sort=False):
        said = [e.get("infer_includes") for e in g.get("extra", []) if isinstance(e, dict)]
        out[model] = next((x for x in said if x), "")
    return out


def speed_note(results: pd.DataFrame) -> str | None:
    """Say so when the inference speeds count different work (the probe's head alone against models
    that prepare their own inputs)."""
    includes = infer_includes(results)
    head_only = [m for m, w in includes.items() if "head only" in w]
    if head_only and len(includes) > 1:
        return ("Not like with like: the probe's inference counts its head only (the embeddings were "
                "computed beforehand and the encoder's speed is not known for this run), while the "
                "other models' times include preparing their inputs (features, dt/dm sequences). "
                "The encoder's own rate is on the Models page's embedding jobs.")
    return None


def run_label(row) -> str:
    """One stored run in a list: when, models, spc, best model and its macro F1, run id."""
    when = pd.Timestamp(row["created_at"]).strftime("%Y-%m-%d %H:%M")
    best = f", best {row['best']} F1 {row['best_macro_f1'] * 100:.1f}%" if row.get("best") else ""
    return f"{when} · {row['models']} · spc {row['spc']}{best} · {row['run_id']}"
