"""`python -m lcdash evaluate` end to end on a tiny store (through the jobs layer)."""

from __future__ import annotations

import json
import shutil

import pytest

from lcdash.cli import main


def test_evaluate_cli_end_to_end(app_template, tmp_path, capsys):
    from lcdash.store import Store
    from lcdash.store.results import list_runs, load_run

    db = tmp_path / "s.duckdb"
    shutil.copy(app_template, db)
    out = tmp_path / "out"
    rc = main([
        "evaluate", "--db", str(db), "--models", "probe,rnn,cnn,rf", "--encoder", "tiny-test",
        "--spc", "4", "--folds", "2", "--test-per-class", "5", "--max-epochs", "2", "--threads", "1",
        "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["records"]) == 4 * 2
    assert {r["model"] for r in res["records"]} == {"probe", "rnn", "cnn", "rf"}
    assert all(0 <= r["macro_f1"] <= 1 for r in res["records"])
    report = (out / "report.md").read_text()
    assert "Macro F1" in report and "Feature RF" in report and "Per-class F1" in report
    assert (out / "f1_vs_spc.png").stat().st_size > 1000
    assert list(out.glob("confusion_*.png"))
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with Store(db, read_only=True) as store:
        runs = list_runs(store)
        info, results = load_run(store, printed["run_id"])
    assert printed["run_id"] in set(runs["run_id"])
    assert info["kind"] == "compare" and info["config"]["encoder"]["name"] == "tiny-test"
    assert len(results) == 8 and info["selection"]["classes"]


def test_evaluate_cli_errors(app_template, tmp_path, capsys):
    db = tmp_path / "s.duckdb"
    shutil.copy(app_template, db)
    assert main(["evaluate", "--db", str(db), "--models", "svm", "--out", str(tmp_path / "o")]) == 1
    assert "unknown models ['svm']" in capsys.readouterr().err
    rc = main(["evaluate", "--db", str(db), "--models", "probe", "--encoder", "nope", "--out", str(tmp_path)])
    assert rc == 1 and "no encoder named 'nope'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("survey", ["catalina_train", "eros1"])
def test_evaluate_shared_quick(shared_data, tmp_path, survey):
    """A quick protocol pass on the real data (1 fold, 20 spc, capped epochs)."""
    db = tmp_path / "s.duckdb"
    assert main(["ingest", str(shared_data / survey), "--db", str(db)]) == 0
    out = tmp_path / "out"
    rc = main(["evaluate", "--db", str(db), "--models", "rnn,cnn,rf", "--spc", "20", "--folds", "1",
               "--max-epochs", "5", "--out", str(out)])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["records"]) == 3


def test_evaluate_cli_folded_sequence_input(app_template, tmp_path):
    """The job reads catalogue periods from the store; objects without one get a Lomb-Scargle period."""
    db = tmp_path / "s.duckdb"
    shutil.copy(app_template, db)
    out = tmp_path / "out"
    rc = main([
        "evaluate", "--db", str(db), "--models", "rnn", "--sequence-input", "folded", "--spc", "4",
        "--folds", "1", "--test-per-class", "3", "--max-epochs", "1", "--threads", "1", "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert {r["model"] for r in res["records"]} == {"rnn-folded"}
    src = res["selection"]["periods"]
    assert src["catalogue"] > 0 and src["catalogue"] + src["found"] == res["selection"]["n_objects"]
    assert "folded at their period" in (out / "report.md").read_text()
