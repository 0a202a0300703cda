"""lcdash.scores: the one title and mean ± std every table of a run uses (pages and report.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lcdash import scores


def test_title_names_models_and_keeps_a_tag():
    assert scores.title("rf") == "Feature RF"
    assert scores.title("probe [enc2]") == "Astromer probe [enc2]"
    assert scores.title("mystery") == "mystery"


def test_pm_in_percent_and_a_dash_without_a_mean():
    assert scores.pm(0.8123, 0.034) == "81.2 ± 3.4"
    assert scores.pm(0.5, 0.25, digits=2) == "50.00 ± 25.00"
    assert scores.pm(None, None) == "-" and scores.pm(np.nan, 0.1) == "-"


def test_summary_table_means_over_folds_and_skips_missing_values():
    results = pd.DataFrame({
        "model": ["rnn"] * 3, "spc": [20] * 3, "macro_f1": [0.5, 0.7, np.nan],
        "macro_precision": [0.5] * 3, "macro_recall": [0.5] * 3, "accuracy": [np.nan] * 3,
        "train_seconds": [1.0, 2.0, 3.0], "infer_lc_per_s": [100.0, 200.0, 300.0],
    })
    row = scores.summary_table(results).iloc[0]
    assert row["model"] == "Becker RNN" and row["folds"] == 3
    assert row["macro F1 [%]"] == "60.0 ± 10.0" and row["accuracy [%]"] == "-"
    assert row["train s (mean)"] == 2.0 and row["inference LC/s (mean)"] == 200
