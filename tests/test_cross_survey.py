"""Training across surveys (Aguirre et al. 2019): label maps, per-survey splits and scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lcdash.cli import main
from lcdash.errors import ValidationError
from lcdash.evaluation import (
    DEFAULT_LABEL_MAP,
    EvalConfig,
    EvalData,
    apply_label_map,
    load_label_map,
    make_cross_splits,
    run_evaluation,
)
from lcdash.report import cross_survey_markdown

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CATALINA = ["RRab", "RRc", "RRd", "Blazhko", "EW", "EA", "Rot", "LPV", "ACEP", "Cep-II", "HADS_dScuti"]
EROS = ["RRLyrae", "Cepheid", "EB", "Mira"]


def test_default_map_joins_catalina_and_eros1():
    labels = np.array(CATALINA + EROS)
    surveys = np.array(["css"] * len(CATALINA) + ["eros"] * len(EROS))
    mapped = apply_label_map(labels, surveys, DEFAULT_LABEL_MAP)
    assert dict(zip(labels, mapped, strict=True)) == {
        "RRab": "RRLyrae",
        "RRc": "RRLyrae",
        "RRd": "RRLyrae",
        "Blazhko": "RRLyrae",
        "EW": "EB",
        "EA": "EB",
        "Rot": None,
        "LPV": "Mira",
        "ACEP": "Cepheid",
        "Cep-II": "Cepheid",
        "HADS_dScuti": None,
        "RRLyrae": "RRLyrae",
        "Cepheid": "Cepheid",
        "EB": "EB",
        "Mira": "Mira",
    }


def test_unmapped_label_is_a_clear_error():
    labels = np.array(["RRab", "QSO", "QSO", "EW"])
    with pytest.raises(ValidationError, match=r"no entry for 'QSO' \(2 objects of demo\).*null to drop"):
        apply_label_map(labels, np.full(4, "demo"), DEFAULT_LABEL_MAP)
    # an empty map is the identity, and dropping must be explicit
    assert list(apply_label_map(labels, None, {})) == list(labels)
    assert apply_label_map(labels, np.full(4, "demo"), {**DEFAULT_LABEL_MAP, "QSO": None})[1] is None


def test_survey_sections_override_the_common_entries():
    label_map = {"X": "A", "Y": "B", "s2": {"X": None, "Z": "B"}}
    out = apply_label_map(np.array(["X", "Y", "X", "Z"]), np.array(["s1", "s1", "s2", "s2"]), label_map)
    assert list(out) == ["A", "B", None, "B"]
    with pytest.raises(ValidationError, match="'Z' \\(1 objects of s1\\)"):
        apply_label_map(np.array(["Z"]), np.array(["s1"]), label_map)


def test_load_label_map(tmp_path):
    assert load_label_map("default") == DEFAULT_LABEL_MAP and load_label_map("none") == {}
    f = tmp_path / "map.json"
    f.write_text(json.dumps({"RRab": "RRL", "Rot": None}))
    assert load_label_map(str(f)) == {"RRab": "RRL", "Rot": None}
    f.write_text("{not json")
    with pytest.raises(ValidationError, match="not valid JSON"):
        load_label_map(str(f))
    f.write_text(json.dumps({"RRab": 3}))
    with pytest.raises(ValidationError, match="give a class name or null"):
        load_label_map(str(f))
    with pytest.raises(ValidationError, match="not a built-in map"):
        load_label_map(str(tmp_path / "missing.json"))


def _two_surveys(n=60, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.array(["A", "B", "C"] * n)
    surveys = np.array(["s1"] * (len(labels) // 2) + ["s2"] * (len(labels) - len(labels) // 2))
    return labels[rng.permutation(len(labels))], surveys


@pytest.mark.parametrize(
    "train,score", [(["s1", "s2"], ["s1", "s2"]), (["s1"], ["s2"]), (["s2"], ["s2"]), (["s1"], ["s1", "s2"])]
)
def test_cross_splits_keep_test_objects_unseen_and_surveys_apart(train, score):
    labels, surveys = _two_surveys()
    splits, report = make_cross_splits(labels, surveys, train, score, 2, [5, 10], 4, seed=3)
    assert len(splits) == 4 and all(k.startswith(("s1 | ", "s2 | ")) for k in report)
    for sp in splits:
        seen = np.concatenate([sp.train, sp.val])
        assert not np.intersect1d(sp.test, seen).size  # every test object is unseen
        assert set(surveys[sp.test]) == set(score) and set(surveys[seen]) == set(train)
        for s in score:  # 4 test objects per class per scored survey; per-survey sets are disjoint
            at = sp.test[surveys[sp.test] == s]
            assert sorted(np.unique(labels[at], return_counts=True)[1]) == [4, 4, 4]
        # spc objects per class from each training survey
        assert len(sp.train) == sp.spc * 3 * len(train)
    # a survey's test sets do not depend on the other surveys taking part
    ref, _ = make_cross_splits(labels, surveys, ["s2"], ["s2"], 2, [5, 10], 4, seed=3)
    if "s2" in score:
        for a, b in zip(splits, ref, strict=True):
            np.testing.assert_array_equal(a.test[surveys[a.test] == "s2"], b.test)


def _batch(labels, seed=0):
    from lcdash.lightcurve import LightCurveBatch

    rng = np.random.default_rng(seed)
    period = {"A": 0.5, "B": 3.0, "C": 40.0}
    times, mags = [], []
    for lab in labels:
        t = np.sort(rng.uniform(0, 400, 60))
        times.append(t)
        mags.append(
            (15 + 0.5 * np.sin(2 * np.pi * t / period[lab]) + rng.normal(0, 0.05, 60)).astype(np.float32)
        )
    return LightCurveBatch.from_arrays(times, mags)


def test_run_evaluation_scores_each_survey_on_its_own_objects():
    labels, surveys = _two_surveys(30)
    raw = np.where(surveys == "s1", np.char.add("s1-", labels), labels)  # s1 spells its classes differently
    label_map = {"s1-A": "A", "s1-B": "B", "s1-C": "C"}
    data = EvalData(_batch(labels), raw, surveys=surveys)
    cfg = EvalConfig(
        models=["rf"],
        spc=[8],
        folds=2,
        test_per_class=5,
        rf_trees=30,
        n_jobs=1,
        train_surveys=["s1", "s2"],
        score_surveys=["s1", "s2"],
        label_map=label_map,
    )
    res = run_evaluation(data, cfg)
    assert res.selection["classes"] == ["A", "B", "C"] and len(res.records) == 2
    for rec in res.records:
        per = rec["extra"]["per_survey"]
        assert set(per) == {"s1", "s2"} and all(p["n_test"] == 15 for p in per.values())
        assert rec["extra"]["n_test"] == 30 and rec["extra"]["n_train"] == 2 * 3 * 8
    table = cross_survey_markdown([res])
    assert "Scored on s1" in table and "trained on s1 + s2" in table
    # an unmapped label stops the run with its name
    with pytest.raises(ValidationError, match="'s1-A'"):
        run_evaluation(data, EvalConfig(**{**cfg.to_dict(), "label_map": {"s1-B": "B", "s1-C": "C"}}))
    with pytest.raises(ValidationError, match="both"):
        EvalConfig(models=["rf"], train_surveys=["s1"]).validate()


def test_evaluate_cli_across_surveys(tmp_path, capsys):
    from lcdash.io import prepare
    from lcdash.simulate import simulate_survey
    from lcdash.store import Store

    db = tmp_path / "two.duckdb"
    with Store(db) as store:
        for seed, survey, band in ((0, "north", "V"), (1, "south", "R")):
            obs, objs = simulate_survey(
                90, seed=seed, classes=["RRab", "EW", "LPV", "QSO"], bands=(band,), n_obs=(40, 80)
            )
            obs, objs, rep = prepare(obs, objects=objs.assign(survey=survey))
            store.ingest(obs, objs, survey=survey)
    base = [
        "evaluate",
        "--db",
        str(db),
        "--models",
        "rf",
        "--spc",
        "5",
        "--folds",
        "1",
        "--test-per-class",
        "5",
        "--threads",
        "1",
        "--train-surveys",
        "north",
        "south",
        "--score-surveys",
        "north",
        "south",
    ]
    assert main([*base, "--out", str(tmp_path / "bad")]) == 1
    err = capsys.readouterr().err
    assert "no entry for 'QSO'" in err and "Traceback" not in err
    label_map = tmp_path / "map.json"
    label_map.write_text(json.dumps({**DEFAULT_LABEL_MAP, "QSO": None}))
    assert main([*base, "--label-map", str(label_map), "--out", str(tmp_path / "out")]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["selection"]["classes"] == ["EB", "Mira", "RRLyrae"]
    assert res["selection"]["bands"] == {"north": "V", "south": "R"}
    per = res["records"][0]["extra"]["per_survey"]
    assert set(per) == {"north", "south"} and per["north"]["n_test"] == per["south"]["n_test"] == 15
    assert "Scored on south" in (tmp_path / "out" / "cross_survey.md").read_text()
    # the tables of several runs (modes) in one file
    assert (
        main(
            [
                *base[:-6],
                "--train-surveys",
                "north",
                "--score-surveys",
                "south",
                "--label-map",
                str(label_map),
                "--out",
                str(tmp_path / "transfer"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate-report",
                str(tmp_path / "out" / "results.json"),
                str(tmp_path / "transfer" / "results.json"),
                "--out",
                str(tmp_path / "both"),
            ]
        )
        == 0
    )
    text = (tmp_path / "both" / "cross_survey.md").read_text()
    assert "trained on north + south" in text and "| trained on north |" in text.replace(
        " | trained on north + south", ""
    )
