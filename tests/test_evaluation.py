"""The few-shot protocol: sampling, metrics, the evaluation loop, the probe run, results storage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lcdash.errors import ValidationError
from lcdash.evaluation import (
    EvalConfig,
    EvalData,
    EvalResult,
    make_splits,
    metrics,
    run_evaluation,
    run_probe,
)
from lcdash.lightcurve import LightCurveBatch
from lcdash.simulate import simulate_survey

# tiny models: one torch thread (tests/conftest.py explains why)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sim_batch(n=90, classes=("RRab", "EA", "LPV"), seed=0, n_obs=(60, 120)):
    """A LightCurveBatch and labels from the simulated survey."""
    obs, objs = simulate_survey(n, seed=seed, classes=list(classes), n_obs=n_obs)
    groups = list(obs.groupby("object_id", sort=False))
    L = max(len(g) for _, g in groups)
    B = len(groups)
    b = LightCurveBatch(
        oid=np.arange(1, B + 1), band=["V"] * B, time=np.zeros((B, L)), mag=np.zeros((B, L), np.float32),
        mag_err=np.full((B, L), np.nan, np.float32), mask=np.zeros((B, L), bool),
        length=np.zeros(B, np.int32),
    )  # fmt: skip
    for i, (_, g) in enumerate(groups):
        n_i = len(g)
        b.time[i, :n_i], b.mag[i, :n_i], b.mag_err[i, :n_i] = g.time, g.mag, g.mag_err
        b.mask[i, :n_i], b.length[i] = True, n_i
    labels = objs.set_index("object_id").loc[[k for k, _ in groups], "label"].to_numpy()
    return b, labels




LABELS = np.array(["a"] * 300 + ["b"] * 40 + ["c"] * 7)


def test_sampling_counts_caps_and_no_overlap():
    splits, report = make_splits(LABELS, folds=3, spc_list=[20, 100], test_per_class=50, seed=1)
    assert len(splits) == 6
    tests = {}
    for s in splits:
        tr, va, te = set(s.train), set(s.val), set(s.test)
        assert not (tr & te) and not (va & te) and not (tr & va)  # no overlap by object
        counts = {c: int((LABELS[s.train] == c).sum()) for c in "abc"}
        vcounts = {c: int((LABELS[s.val] == c).sum()) for c in "abc"}
        tcounts = {c: int((LABELS[s.test] == c).sum()) for c in "abc"}
        assert tcounts["a"] == 50 and tcounts["b"] in (13, 14) and tcounts["c"] in (2, 3)  # fewer when small
        assert counts["a"] == s.spc and vcounts["a"] == int(np.ceil(0.2 * s.spc))
        pool_b = 40 - tcounts["b"]
        assert counts["b"] == min(s.spc, pool_b - vcounts["b"]) and vcounts["b"] >= 1
        assert counts["c"] >= 1 and vcounts["c"] >= 1
        tests.setdefault(s.fold, te)
        assert tests[s.fold] == te  # the test set is per fold, the same for every spc
    folds = list(tests.values())
    assert not (folds[0] & folds[1]) and not (folds[1] & folds[2])  # stratified folds
    assert report["a"]["capped"] is False and report["b"]["capped"] and report["c"]["capped"]
    assert report["b"]["test"] == [13, 13, 13] or sum(report["b"]["test"]) == 40
    assert report["b"]["train"][100] == [min(100, 40 - t - v) for t, v in
                                         zip(report["b"]["test"], report["b"]["val"][100], strict=True)]


def test_sampling_is_reproducible_with_a_seed():
    a, _ = make_splits(LABELS, 3, [20], 50, seed=4)
    b, _ = make_splits(LABELS, 3, [20], 50, seed=4)
    c, _ = make_splits(LABELS, 3, [20], 50, seed=5)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.train, y.train)
        np.testing.assert_array_equal(x.test, y.test)
    assert any(not np.array_equal(x.train, z.train) for x, z in zip(a, c, strict=True))


def test_too_small_class_is_refused():
    with pytest.raises(ValidationError, match="class 'c' has 3 objects"):
        make_splits(np.array(["a"] * 10 + ["c"] * 3), 3, [5], 5)


def test_metrics():
    m = metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert m["accuracy"] == 0.75
    assert m["confusion"]["matrix"] == [[1, 1], [0, 2]]
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


@pytest.fixture(scope="module")
def small():
    return sim_batch(90)


def test_run_evaluation_records_progress_and_json(small, tmp_path):
    batch, labels = small
    rng = np.random.default_rng(0)
    layers = rng.normal(size=(len(labels), 3, 8)).astype(np.float32)
    calls = []

    def progress(step, total, message, m=None):
        calls.append((step, total, message, m))

    cfg = EvalConfig(models=["rf", "probe", "rnn"], spc=[5, 10], folds=2, test_per_class=6, max_epochs=3,
                     rf_trees=50, n_jobs=1)  # fmt: skip
    res = run_evaluation(EvalData(batch, labels, layers, {"name": "rand"}), cfg, progress)
    assert len(res.records) == 3 * 2 * 2
    r = res.records[0]
    for k in ("macro_f1", "macro_precision", "macro_recall", "accuracy", "train_seconds", "infer_lc_per_s"):
        assert np.isfinite(r[k])
    assert set(r["per_class"]) == {"EA", "LPV", "RRab"}
    assert r["extra"]["n_test"] == 18
    assert calls[-1][0] == calls[-1][1] == 12 and "rf@5" in calls[-1][3]
    rf = [x["accuracy"] for x in res.records if x["model"] == "rf"]
    assert np.mean(rf) > 0.6  # features separate these classes easily
    assert len(res.records[1]["extra"]["layer_weights"]) == 3
    s = res.summary()
    assert len(s) == 6 and (s["folds"] == 2).all()
    back = EvalResult.from_json(res.to_json(tmp_path / "r.json"))
    assert back.records[0]["macro_f1"] == r["macro_f1"]
    json.loads((tmp_path / "r.json").read_text())


def test_cancel_keeps_finished_records(small):
    batch, labels = small

    class P:
        cancelled = False

        def __call__(self, step, total, message, m=None):
            if step >= 2:
                self.cancelled = True

    cfg = EvalConfig(models=["rf"], spc=[5], folds=3, test_per_class=5, rf_trees=20, n_jobs=1)
    res = run_evaluation(EvalData(batch, labels), cfg, P())
    assert len(res.records) == 2 and res.timings["cancelled"]


def test_window_scoring_splits_objects_not_windows():
    batch, labels = sim_batch(30, n_obs=(150, 450), seed=2)
    cfg = EvalConfig(models=["rf"], spc=[4], folds=2, test_per_class=3, scoring="window", rf_trees=20,
                     n_jobs=1)  # fmt: skip
    res = run_evaluation(EvalData(batch, labels), cfg)
    ex = res.records[0]["extra"]
    assert ex["n_test"] == 9 and ex["n_test_samples"] > 9  # several windows per object
    assert 0 <= ex["object_macro_f1"] <= 1


def test_eval_data_save_load(small, tmp_path):
    batch, labels = small
    sub = batch.take([3, 1, 2])
    assert sub.time.shape[1] == sub.length.max() and list(sub.oid) == [4, 2, 3]
    layers = np.ones((3, 2, 4), np.float32)
    data = EvalData(sub, labels[[3, 1, 2]], layers, {"name": "x", "dir": "/tmp/x"})
    back = EvalData.load(data.save(tmp_path / "d"))
    np.testing.assert_array_equal(back.batch.time, sub.time)
    np.testing.assert_array_equal(back.batch.mask, sub.mask)
    assert back.batch.band == ["V"] * 3 and list(back.labels) == list(labels[[3, 1, 2]])
    np.testing.assert_array_equal(back.layers, layers)
    assert back.encoder == {"name": "x", "dir": "/tmp/x"}


def test_config_validation():
    with pytest.raises(ValidationError, match="unknown models"):
        EvalConfig(models=["svm"]).validate()
    with pytest.raises(ValidationError, match="scoring"):
        EvalConfig(scoring="night").validate()
    cfg = EvalConfig(spc=[5], max_epochs=4)
    assert EvalConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.model_params("rnn")["max_epochs"] == 4


def test_run_probe_protocol_final_fit_and_predictions():
    rng = np.random.default_rng(0)
    y = np.repeat(["x", "y"], 20)
    X = rng.normal(size=(40, 3, 8)).astype(np.float32)
    X[:, :, 0] += np.where(y == "x", 3.0, -3.0)[:, None]  # like real embeddings: in every layer
    P = rng.normal(size=(10, 3, 8)).astype(np.float32)
    P[:5, :, 0] += 3.0
    P[5:, :, 0] -= 3.0
    cfg = EvalConfig(spc=[5], folds=2, test_per_class=4, max_epochs=30, patience=10)
    res = run_probe(X, y, cfg, predict_layers=P)
    assert res.evaluation is not None and len(res.evaluation.records) == 2
    assert list(res.predicted) == ["x"] * 5 + ["y"] * 5
    assert res.proba.shape == (10, 2) and np.all(res.confidence >= 0.5)
    assert np.all(res.entropy >= 0) and np.all(res.entropy <= np.log(2) + 1e-6)
    assert res.layer_weights.shape == (3,)
    few = run_probe(X[[0, 1, 20, 21]], y[[0, 1, 20, 21]], cfg)
    assert few.evaluation is None and "protocol skipped" in few.note


def test_results_storage_round_trip(tmp_path):
    from lcdash.store import Store
    from lcdash.store.results import (
        list_runs,
        load_predictions,
        load_run,
        save_predictions,
        save_run,
    )

    rec = {"model": "rf", "spc": 5, "fold": 0, **metrics(["a", "b", "b"], ["a", "b", "a"], ["a", "b"]),
           "train_seconds": 1.5, "infer_lc_per_s": 900.0, "extra": {"n_train": 10}}  # fmt: skip
    res = EvalResult([rec, {**rec, "fold": 1, "macro_f1": 0.5}], {"models": ["rf"], "spc": [5], "folds": 2},
                     {"classes": ["a", "b"]}, {"total_seconds": 3.0}, {"numpy": "x"})  # fmt: skip
    with Store(tmp_path / "s.duckdb") as store:
        run_id = save_run(store, res, "compare", config={"encoder": None}, selection={"survey": "demo"},
                          job_id="job-1")  # fmt: skip
        info, df = load_run(store, run_id)
        assert info["kind"] == "compare" and info["job_id"] == "job-1"
        assert info["config"]["versions"] == {"numpy": "x"} and info["selection"]["survey"] == "demo"
        assert info["timings"]["total_seconds"] == 3.0
        assert len(df) == 2 and df["per_class"][0]["a"]["support"] == 1
        assert df["confusion"][0]["matrix"] == [[1, 0], [1, 1]]
        runs = list_runs(store)
        assert runs.loc[0, "run_id"] == run_id and runs.loc[0, "best"] == "rf@5"
        back = EvalResult.from_run(*load_run(store, run_id))
        assert back.summary()["macro_f1_mean"].iloc[0] == pytest.approx((rec["macro_f1"] + 0.5) / 2)
        n = save_predictions(store, run_id, [1, 2], ["V", "V"], ["a", "b"], [0.9, 0.6], [0.1, 0.5])
        assert n == 2
        pred = load_predictions(store, run_id)
        assert list(pred["label"]) == ["a", "b"] and pred["confidence"][0] == pytest.approx(0.9)
        with pytest.raises(ValidationError):
            save_run(store, res, "nonsense")


def test_merge_and_report(tmp_path):
    from lcdash.report import merge_results, write_report

    def result(model, spc, f1s):
        m = metrics(["a", "b"], ["a", "b"], ["a", "b"])
        recs = [{"model": model, "spc": spc, "fold": k, **m, "train_seconds": 1.0, "infer_lc_per_s": 10.0,
                 "extra": {}} for k in range(len(f1s))]  # fmt: skip
        for r, f in zip(recs, f1s, strict=True):
            r["macro_f1"] = f
        cfg = {"models": [model], "spc": [spc], "folds": len(f1s), "test_per_class": 5, "seed": 0}
        sel = {"classes": ["a", "b"], "sampling": {"a": {"n": 9, "test": [2], "train": {spc: [spc]},
                                                         "val": {spc: [1]}, "capped": False}}}  # fmt: skip
        return EvalResult(recs, cfg, sel, {"total_seconds": 5.0})

    merged = merge_results([result("rf", 5, [0.5, 0.7]), result("probe", 10, [0.8, 0.9])])
    assert merged.config["models"] == ["rf", "probe"] and merged.config["spc"] == [5, 10]
    s = merged.summary().set_index(["model", "spc"])
    assert s.loc[("rf", 5), "macro_f1_mean"] == pytest.approx(0.6)
    assert s.loc[("rf", 5), "macro_f1_std"] == pytest.approx(0.1)
    path = write_report(merged, tmp_path)
    text = path.read_text()
    assert "| Feature RF | 60.0 ± 10.0 | - |" in text and "Astromer probe" in text
    assert (tmp_path / "f1_vs_spc.png").exists() and (tmp_path / "confusion_rf_spc5.png").exists()
    with pytest.raises(ValueError, match="not comparable"):
        merge_results([result("rf", 5, [0.5]), result("cnn", 5, [0.5, 0.6])])
    # two encoders' probes side by side: evaluate-report PATH::TAG
    from lcdash.cli import main

    for name, f1 in (("a", [0.4, 0.5]), ("b", [0.8, 0.9])):
        (tmp_path / name).mkdir()
        result("probe", 5, f1).to_json(tmp_path / name / "results.json")
    assert main(["evaluate-report", f"{tmp_path}/a/results.json::enc-a", f"{tmp_path}/b/results.json::enc-b",
                 "--out", str(tmp_path / "ab")]) == 0
    text = (tmp_path / "ab" / "report.md").read_text()
    assert "| Astromer probe [enc-a] | 45.0 ± 5.0 |" in text
    assert "| Astromer probe [enc-b] | 85.0 ± 5.0 |" in text


def test_probe_with_masked_finetuning_per_split(tmp_path):
    """The paper's recipe: fine-tune the encoder on each training split, re-embed, then probe."""
    from lcdash.models.astromer import Astromer, AstromerConfig
    from lcdash.weights import save_encoder

    cfg_enc = AstromerConfig(n_layers=1, n_heads=1, d_model=8, d_ff=8)
    save_encoder(Astromer(cfg_enc), cfg_enc, tmp_path / "enc")
    batch, labels = sim_batch(30, seed=4)
    cfg = EvalConfig(models=["probe"], spc=[3], folds=2, test_per_class=3, max_epochs=3, finetune=True,
                     finetune_epochs=1)  # fmt: skip
    res = run_evaluation(EvalData(batch, labels, encoder={"name": "tiny", "dir": str(tmp_path / "enc")}), cfg)
    assert len(res.records) == 2 and len(res.records[0]["extra"]["layer_weights"]) == 2


def test_folded_sequence_input(small, tmp_path):
    """RNN / CNN on curves folded at catalogue periods, found ones where the catalogue has none."""
    from lcdash.report import write_report

    batch, labels = small
    periods = np.where(labels == "RRab", 0.6, np.nan)  # only some objects have a catalogue period
    cfg = EvalConfig(models=["rnn", "cnn", "rf"], spc=[5], folds=1, test_per_class=6, max_epochs=2,
                     rf_trees=20, n_jobs=1, sequence_input="folded")  # fmt: skip
    res = run_evaluation(EvalData(batch, labels, periods=periods), cfg)
    assert [r["model"] for r in res.records] == ["rnn-folded", "cnn-folded", "rf"]  # rf reads raw curves
    src, rrab = res.selection["periods"], int((labels == "RRab").sum())
    assert src == {"catalogue": rrab, "found": len(labels) - rrab}
    text = write_report(res, tmp_path).read_text()
    assert "Becker RNN, folded" in text and "folded at their period" in text
    row = next(line for line in text.splitlines() if line.startswith("| Becker RNN, folded | 5 |"))
    assert row.rstrip(" |").endswith("(2)")  # epochs (cap) found under the unsuffixed model name
    back = EvalData.load(EvalData(batch, labels, periods=periods).save(tmp_path / "d"))
    np.testing.assert_array_equal(back.periods, periods)
    with pytest.raises(ValidationError, match="sequence_input"):
        EvalConfig(sequence_input="phase").validate()
