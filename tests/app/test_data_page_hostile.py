"""Data page (AppTest) with hostile uploads (issue 17): a long table whose id column is not
recognised stops at validation (the merge box overrides), and odd numbers give a plain sentence."""

from __future__ import annotations

import numpy as np
import pandas as pd
from _apptest import open_page, run


def _findings(at) -> list[str]:
    """The validation report's findings, one markdown line each (pages/data.py problem_lines)."""
    return [m.value for m in at.markdown if m.value.startswith("- :")]


def _sig(at) -> str:
    return [s for s in at.selectbox if s.key and s.key.startswith("map_time_")][0].key.rsplit("_", 1)[1]


def test_unrecognised_id_column_is_an_error_until_merge_is_allowed(app_db):
    rng = np.random.default_rng(2)
    t = np.arange(12.0)
    df = pd.DataFrame(
        {"ÏD": np.repeat(["a", "b", "c"], 12), "hjd": np.tile(t, 3), "Vmag": 15 + rng.normal(0, 0.1, 36)}
    )
    at = run(open_page("pages/data.py"))
    at.file_uploader(key="data_upload").set_value(("three.csv", df.to_csv(index=False).encode(), "text/csv"))
    run(at)
    sig = _sig(at)
    assert any("1 error(s)" in e.value for e in at.error)
    findings = _findings(at)
    assert len(findings) == 1 and findings[0].startswith("- :red[error]") and "several stars" in findings[0]
    assert not [b for b in at.button if b.key == f"upload_confirm_{sig}"]
    at.checkbox(key=f"upload_allow_merge_{sig}").check()
    run(at)
    assert any("1 objects" in s.value for s in at.success)


def test_a_400_digit_number_is_a_plain_sentence(app_db):
    text = "star,hjd,Vmag\n" + "".join(f"a,{i},1{'9' * 400}\n" for i in range(6))
    at = run(open_page("pages/data.py"))
    at.file_uploader(key="data_upload").set_value(("big.csv", text.encode(), "text/csv"))
    run(at)
    assert at.error and not any("Error" in e.value.split(":")[0] for e in at.error)
    assert any("no observations are left" in m for m in _findings(at))
