"""lcdash's period-aware Astromer variants (log-period encoding, folded windows), the probe's learned
layer weights, the hybrid probe, and the embedding-quality measures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lcdash.classifiers import AstromerProbe, HybridProbe, make_classifier
from lcdash.embed import embed_batch
from lcdash.errors import ModelError, ValidationError
from lcdash.lightcurve import fold_curves
from lcdash.models.astromer import (
    Astromer,
    AstromerConfig,
    log_period_rates,
    pe_rates,
    positional_encoding,
)
from lcdash.periods import folding_periods
from lcdash.projection import knn_accuracy, standardize
from lcdash.weights import load_encoder, save_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny(**kw):
    return AstromerConfig.astromer2(n_layers=2, n_heads=2, d_model=8, d_ff=8, window=16, **kw)


# ---------------------------------------------------------------- positional encodings
def test_log_period_rates_hand_checked():
    r = log_period_rates(8, 1.0, 1000.0).double()
    want = [2 * math.pi / p for p in (1, 1, 10, 10, 100, 100, 1000, 1000)]
    np.testing.assert_allclose(r.numpy(), want, rtol=1e-6)


def test_log_period_encoding_is_a_kernel_on_time_differences():
    rates = log_period_rates(8, 1.0, 1000.0)
    t = torch.tensor([[3.0, 3.4, 103.4]])
    pe = positional_encoding(t, rates)[0]  # [3, 8]
    # sin/cos pairs at one rate: PE(a) . PE(b) = sum_k cos(w_k (a - b))
    for a, b in ((0, 1), (0, 2), (1, 2)):
        dt = float(t[0, a] - t[0, b])
        want = sum(math.cos(2 * math.pi / p * dt) for p in (1, 10, 100, 1000))
        assert float(pe[a] @ pe[b]) == pytest.approx(want, abs=1e-4)


def test_faithful_defaults_unchanged():
    cfg = AstromerConfig.astromer1()
    assert (cfg.pe, cfg.fold, cfg.variant) == ("astromer", False, "astromer1")
    torch.testing.assert_close(Astromer(cfg).pe_rates, pe_rates(256))
    assert AstromerConfig.from_dict({"arch": "astromer2", "n_layers": 2}).pe == "astromer"  # old configs load


def test_variant_names_and_bad_configs():
    assert _tiny(pe="log-period", fold=True).variant == "astromer2-logpe-folded"
    assert _tiny(fold=True).variant == "astromer2-folded"
    with pytest.raises(ModelError, match="positional encoding"):
        _tiny(pe="fourier")
    with pytest.raises(ModelError, match="pe_min_period"):
        _tiny(pe="log-period", pe_min_period=10.0, pe_max_period=1.0)


# ---------------------------------------------------------------- folded windows
def test_fold_curves_deals_whole_cycles():
    t = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.25])
    m = np.arange(6, dtype=np.float32)
    subs, owner = fold_curves([(t, m), (t[:0], m[:0])], [1.0, 2.0], window=3)
    # phases 0, .25, .5, .75, 0, .25 -> phase order 0, 4, 1, 5, 2, 3; k = 2 interleaved sub-curves
    assert owner.tolist() == [0, 0]
    np.testing.assert_allclose(subs[0][0], [0.0, 0.25, 0.5])
    np.testing.assert_array_equal(subs[0][1], [0, 1, 2])
    np.testing.assert_allclose(subs[1][0], [0.0, 0.25, 0.75])
    np.testing.assert_array_equal(subs[1][1], [4, 5, 3])
    # time = phase x period keeps the period's scale
    subs2, _ = fold_curves([(t, m)], [4.0], window=10)
    np.testing.assert_allclose(subs2[0][0], [0.0, 0.25, 0.5, 0.75, 1.0, 1.25])
    with pytest.raises(ValidationError, match="no positive period"):
        fold_curves([(t, m)], [np.nan])


def test_folding_periods_found_where_missing():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 300, 300))
    m = np.sin(2 * np.pi * t / 0.37) + 0.05 * rng.normal(size=t.size)
    p = folding_periods([(t, m), (t, m), (t[:2], m[:2])], [5.0, np.nan, np.nan])
    assert p[0] == 5.0
    assert p[1] == pytest.approx(0.37, rel=1e-3)
    assert p[2] == 1.0  # too short for a period: folded at 1 d rather than refused


def test_folded_encoder_saves_loads_and_reproduces(tmp_path):
    torch.manual_seed(0)
    cfg = _tiny(pe="log-period", fold=True)
    model = Astromer(cfg).eval()
    rng = np.random.default_rng(1)
    curves = [(np.sort(rng.uniform(0, 50, n)), rng.normal(15, 0.3, n).astype(np.float32))
              for n in (5, 20, 40)]
    periods = [0.5, 3.0, 7.0]
    nw, layers = embed_batch(model, curves, periods=periods)
    assert nw.tolist() == [1, 2, 3]  # ceil(n / 16) whole-cycle sub-curves
    save_encoder(model, cfg, tmp_path / "enc")
    loaded, lcfg = load_encoder(tmp_path / "enc")
    assert (lcfg.pe, lcfg.fold, lcfg.window) == ("log-period", True, 16)
    nw2, layers2 = embed_batch(loaded, curves, periods=periods)
    np.testing.assert_array_equal(nw, nw2)
    np.testing.assert_allclose(layers, layers2, atol=1e-6)
    # the folded input differs from the raw one (the sub-curves are what the model reads)
    model.cfg = _tiny(pe="log-period")
    assert not np.allclose(embed_batch(model, curves)[1], layers)


def test_pretraining_a_folded_variant(tmp_path):
    from lcdash.train import TrainConfig, pretrain

    rng = np.random.default_rng(2)
    curves = []
    for _ in range(12):
        t = np.sort(rng.uniform(0, 100, 40))
        curves.append((t, (np.sin(2 * np.pi * t / rng.uniform(0.3, 3)) + 15).astype(np.float32)))
    res = pretrain(curves, None, TrainConfig(epochs=1, batch_size=4, seed=0),
                   _tiny(pe="log-period", fold=True), tmp_path / "out")
    assert res["epochs"] == 1 and np.isfinite(res["best_val_rmse"])
    _, cfg = load_encoder(tmp_path / "out")
    assert cfg.fold and cfg.pe == "log-period"


# ---------------------------------------------------------------- the probe's layer weights
def _layered(n=240, d=8, informative=2, seed=0):
    """Three 'layers'; only `informative` carries the class (two classes), the others are noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(0, 1, (n, 3, d)).astype(np.float32)
    X[:, informative, 0] += np.where(y == 1, 2.5, -2.5)
    return X, np.array(["a", "b"])[y]


def test_gamma_gets_gradient_and_moves_to_the_informative_layer():
    X, y = _layered()
    kw = dict(head="logreg", lr=1e-2, max_epochs=15, patience=15, seed=0)  # 15 epochs x 16 steps
    probe = AstromerProbe(**kw).fit(X[:200], y[:200])
    assert probe.module_.pool.gamma.grad is not None
    w = probe.layer_weights_
    assert w.argmax() == 2 and w[2] > 0.6, w
    assert np.mean(probe.predict(X[200:]) == y[200:]) > 0.9
    # with the paper's single learning rate (1e-3) Adam moves each gamma by at most ~1e-3 a step: in
    # the same 240 steps the weights stay much closer to uniform (what the Catalina runs showed)
    slow = AstromerProbe(gamma_lr=1e-3, **kw).fit(X[:200], y[:200])
    assert slow.layer_weights_[2] < w[2] - 0.15, (slow.layer_weights_, w)
    # the ablation: uniform gamma stays exactly uniform
    uni = AstromerProbe(head="logreg", pooling="uniform", max_epochs=5, seed=0).fit(X[:200], y[:200])
    np.testing.assert_allclose(uni.layer_weights_, 1 / 3, atol=1e-7)


def test_probe_refuses_embeddings_of_another_width():
    X, y = _layered()
    probe = AstromerProbe(head="logreg", max_epochs=2).fit(X, y)
    with pytest.raises(ModelError, match="fitted on"):
        probe.predict(np.zeros((3, 3, 16), np.float32))


# ---------------------------------------------------------------- the hybrid probe
def test_hybrid_probe_uses_features_and_embeddings():
    X, y = _layered()
    X[:, 2, 0] = np.random.default_rng(4).normal(size=len(y))  # embeddings: noise only
    rng = np.random.default_rng(3)
    feats = rng.normal(0, 1, (len(y), 5)).astype(np.float32)
    feats[:, 0] += np.where(y == "b", 2.5, -2.5)  # the class is in the features
    feats[:, 3] = np.nan  # an undefined feature is imputed, not propagated
    est = make_classifier("probe+features", head="logreg", lr=1e-2, max_epochs=30)
    assert isinstance(est, HybridProbe)
    est.fit((X[:200], feats[:200]), y[:200])
    proba = est.predict_proba((X[200:], feats[200:]))
    assert np.isfinite(proba).all() and np.mean(est.classes_[proba.argmax(1)] == y[200:]) > 0.9
    with pytest.raises(ModelError, match="features"):
        est.predict_proba((X[:3], feats[:3, :2]))
    with pytest.raises(ModelError, match="needs X"):
        est.fit(X, y)


def test_hybrid_runs_through_the_evaluation_loop():
    from lcdash.evaluation import EvalConfig, EvalData, run_evaluation
    from lcdash.simulate import simulate_survey

    obs, objs = simulate_survey(90, seed=4, classes=["RRab", "EA", "LPV"], n_obs=(40, 80))
    groups = obs.groupby("object_id", sort=False)
    curves = [(g.time.to_numpy(), g.mag.to_numpy(np.float32), g.mag_err.to_numpy(np.float32))
              for _, g in groups]
    labels = objs.set_index("object_id").loc[list(groups.groups), "label"].to_numpy()
    from lcdash.lightcurve import LightCurveBatch

    batch = LightCurveBatch.from_arrays(*zip(*curves, strict=True))
    layers = np.random.default_rng(0).normal(size=(len(labels), 3, 8)).astype(np.float32)
    cfg = EvalConfig(models=["probe+features", "rf"], spc=[5], folds=1, test_per_class=10, n_jobs=1,
                     rf_trees=20, max_epochs=3)
    res = run_evaluation(EvalData(batch, labels, layers, {"name": "random"}), cfg)
    names = [r["model"] for r in res.records]
    assert names == ["probe+features", "rf"]
    assert res.records[0]["extra"]["infer_includes"].startswith("feature extraction")


# ---------------------------------------------------------------- embedding quality
def test_knn_accuracy_and_standardize():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (50, 4)) + [10, 0, 0, 0], rng.normal(0, 1, (50, 4)) - [10, 0, 0, 0]]
    y = np.r_[["a"] * 50, ["b"] * 50].astype(object)
    assert knn_accuracy(X, y, k=5, metric="euclidean") == 1.0
    y[0] = None  # unlabelled objects are left out
    assert knn_accuracy(X, y, k=5, metric="euclidean") == 1.0
    # a few high-variance noise dimensions drown the one that separates the classes: standardising
    # gives every dimension the same weight
    Z = np.c_[X[:, :1] * 0.01, rng.normal(0, 10, (100, 2))] + 100.0
    assert knn_accuracy(standardize(Z), y, k=5) > knn_accuracy(Z, y, k=5) + 0.2
    s = standardize(Z)
    np.testing.assert_allclose(s.mean(0), 0, atol=1e-5)
    with pytest.raises(Exception, match="more than k"):
        knn_accuracy(X[:3], y[:3], k=5)
