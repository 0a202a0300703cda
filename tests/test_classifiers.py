"""The four classifiers share one scikit-learn interface and learn above chance on simulated data."""

from __future__ import annotations

import numpy as np
import pytest

from lcdash.classifiers import AguirreCNN, AstromerProbe, BeckerRNN, FeatureRF, make_classifier
from lcdash.errors import ModelError
from lcdash.simulate import simulate_survey

# tiny models: one torch thread (tests/conftest.py explains why)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def survey():
    """Three simulated classes, 150 objects: (train, val, test) lists of (time, mag, err) and labels."""
    obs, objs = simulate_survey(150, seed=3, classes=["RRab", "EA", "LPV"], n_obs=(60, 140))
    groups = obs.groupby("object_id", sort=False)
    curves = [(g.time.to_numpy(), g.mag.to_numpy(), g.mag_err.to_numpy()) for _, g in groups]
    labels = objs.set_index("object_id").loc[list(groups.groups), "label"].to_numpy()
    parts = {"train": slice(0, 90), "val": slice(90, 110), "test": slice(110, 150)}
    return {k: (curves[s], labels[s]) for k, s in parts.items()}




def _score(est, survey):
    (Xtr, ytr), (Xv, yv), (Xte, yte) = survey["train"], survey["val"], survey["test"]
    est.fit(Xtr, ytr, Xv, yv)
    proba = est.predict_proba(Xte)
    assert proba.shape == (len(Xte), 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert list(est.classes_) == ["EA", "LPV", "RRab"]
    return float(np.mean(est.predict(Xte) == yte))


def test_feature_rf_learns(survey):
    assert _score(FeatureRF(n_estimators=100, n_jobs=1), survey) > 0.8


def test_becker_rnn_learns(survey):
    est = BeckerRNN(hidden=16, max_epochs=8, patience=8, batch_size=32, seed=0)
    assert _score(est, survey) > 0.55  # chance is 1/3
    assert 1 <= est.n_epochs_ <= 8


def test_aguirre_cnn_learns(survey):
    est = AguirreCNN(max_epochs=6, patience=6, batch_size=32, seed=0)
    assert _score(est, survey) > 0.55


def test_torch_models_are_reproducible(survey):
    (Xtr, ytr), _, (Xte, _) = survey["train"], survey["val"], survey["test"]
    a = BeckerRNN(hidden=8, max_epochs=2, seed=5).fit(Xtr, ytr).predict_proba(Xte)
    b = BeckerRNN(hidden=8, max_epochs=2, seed=5).fit(Xtr, ytr).predict_proba(Xte)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _layers(n_per_class, seed=0, n_states=3, d=16):
    """Synthetic per-layer embeddings: only layer 1 carries the class signal."""
    rng = np.random.default_rng(seed)
    y = np.repeat(["a", "b", "c"], n_per_class)
    X = rng.normal(size=(len(y), n_states, d)).astype(np.float32)
    centers = np.random.default_rng(99).normal(scale=2.0, size=(3, d))
    X[:, 1] += centers[np.searchsorted(["a", "b", "c"], y)]
    return X, y


@pytest.mark.parametrize("head", ["mlp", "logreg"])
def test_probe_learns_and_weights_the_informative_layer(head):
    X, y = _layers(60)
    Xv, yv = _layers(10, seed=1)
    Xt, yt = _layers(30, seed=2)
    est = AstromerProbe(head=head, max_epochs=60, patience=20, batch_size=64, seed=0).fit(X, y, Xv, yv)
    assert np.mean(est.predict(Xt) == yt) > 0.75  # chance is 1/3
    w = est.layer_weights_
    assert w.shape == (3,) and abs(w.sum() - 1) < 1e-5
    assert np.argmax(w) == 1  # gamma learns which layer carries the classes


def test_probe_last_layer_pooling_and_shape_errors():
    X, y = _layers(10)
    est = AstromerProbe(pooling="last", max_epochs=2).fit(X, y)
    np.testing.assert_array_equal(est.layer_weights_, [0, 0, 1])
    with pytest.raises(ModelError, match="embeddings"):
        est.predict(X[:, :2])
    with pytest.raises(ModelError, match="per-layer"):
        AstromerProbe().fit(X[:, 0], y)


def test_common_interface():
    for name in ("probe", "rnn", "cnn", "rf"):
        est = make_classifier(name, seed=3, max_epochs=7, not_a_param=1)
        params = est.get_params()
        assert params["seed"] == 3
        if name != "rf":
            assert params["max_epochs"] == 7
    with pytest.raises(ModelError, match="unknown model"):
        make_classifier("svm")
    with pytest.raises(ModelError, match="not fitted"):
        BeckerRNN().predict_proba([(np.arange(10.0), np.zeros(10))])


def test_balanced_class_weight_recovers_a_small_class():
    """Protocol caps leave small classes with few training objects; macro F1 counts them fully."""
    def draw(n_big, n_small, seed):
        r = np.random.default_rng(seed)
        y = np.array(["big"] * n_big + ["small"] * n_small)
        X = r.normal(size=(len(y), 2, 8)).astype(np.float32)
        X[y == "small", 1, :2] += 1.5  # overlapping classes: the loss weighting decides the boundary
        return X, y

    X, y = draw(400, 20, 1)
    Xt, yt = draw(200, 200, 2)
    recall = {}
    for weight in ("balanced", None):
        est = make_classifier("probe", head="logreg", class_weight=weight, max_epochs=40, patience=40, seed=0)
        recall[weight] = np.mean(est.fit(X, y).predict(Xt)[yt == "small"] == "small")
    assert recall["balanced"] > recall[None] + 0.2
    with pytest.raises(ModelError, match="class_weight"):
        AstromerProbe(class_weight="equal", max_epochs=1).fit(X, y)
