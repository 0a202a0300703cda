"""Becker et al. 2020's incremental update: continuing a saved RNN read with new observations gives
the same state and class probabilities as reading the whole curve again."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lcdash.classifiers import BeckerRNN
from lcdash.cli import main
from lcdash.errors import ModelError
from lcdash.models.rnn import n_steps, tail_start

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _curves(n_curves=40, seed=0, lo=1, hi=90):
    rng = np.random.default_rng(seed)
    out = []
    for n in rng.integers(lo, hi, n_curves):
        t = np.cumsum(rng.exponential(2.0, n)) + 50_000.0
        m = (15 + 0.5 * np.sin(t / rng.uniform(0.3, 5)) + rng.normal(0, 0.05, n)).astype(np.float32)
        out.append((t, m))
    return out


@pytest.fixture(scope="module")
def fitted():
    curves = _curves(60, seed=1, lo=5)
    y = np.array(["A", "B", "C"] * 20)
    return BeckerRNN(max_epochs=2, hidden=8, max_steps=None, seed=0).fit(curves, y)


def test_tail_start_keeps_what_the_next_step_needs():
    w, s = 4, 2
    for n in range(1, 40):
        N = int(n_steps(n, w, s))
        a = tail_start(n, w, s)
        if N:
            assert w - s + 1 <= n - a <= w  # the overlapping observations, and no more
            # step N reads observations N*s .. N*s + w: the first of them is kept
            assert a == N * s
        else:
            assert a == 0


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5, 6, 9, 30])
def test_incremental_equals_full(fitted, cut):
    curves = _curves(40, seed=2)
    full = fitted.stream_states(curves)
    ref = fitted.predict_proba(curves)  # the faithful forward over the whole curve
    np.testing.assert_allclose(full.proba, ref, atol=1e-5)
    first = fitted.stream_states([(t[:cut], m[:cut]) for t, m in curves])
    inc = fitted.update_stream(first, [(t[cut:], m[cut:]) for t, m in curves])
    np.testing.assert_allclose(inc.proba, ref, atol=1e-5)
    np.testing.assert_allclose(inc.hidden, full.hidden, atol=1e-5)
    assert (inc.n_obs == [len(t) for t, _ in curves]).all()
    assert (inc.n_steps == full.n_steps).all()
    for a, b in zip(inc.tail_time, full.tail_time, strict=True):
        np.testing.assert_array_equal(a, b)


def test_one_observation_at_a_time(fitted):
    curves = _curves(12, seed=3, lo=2, hi=40)
    ref = fitted.predict_proba(curves)
    state = fitted.stream_states([(t[:1], m[:1]) for t, m in curves])
    longest = max(len(t) for t, _ in curves)
    for k in range(1, longest):
        state = fitted.update_stream(state, [(t[k : k + 1], m[k : k + 1]) for t, m in curves])
    np.testing.assert_allclose(state.proba, ref, atol=1e-5)


def test_stream_ignores_the_training_step_cap(fitted):
    """predict_proba keeps the first max_steps steps; the stream reads all of them."""
    curves = _curves(5, seed=4, lo=200, hi=260)
    capped = fitted.set_params(max_steps=20).predict_proba(curves)
    whole = fitted.set_params(max_steps=None).predict_proba(curves)
    state = fitted.stream_states(curves)
    np.testing.assert_allclose(state.proba, whole, atol=1e-5)
    assert np.abs(capped - whole).max() > 1e-4


def test_unsorted_curves_with_repeated_times_read_as_the_classifier_reads_them(fitted):
    rng = np.random.default_rng(9)
    curves = []
    for t, m in _curves(8, seed=9, lo=10, hi=40):
        t = np.concatenate([t, t[:3]])  # repeated times (the first value is kept), then shuffled
        m = np.concatenate([m, m[:3] + 1]).astype(np.float32)
        order = rng.permutation(len(t))
        curves.append((t[order], m[order]))
    np.testing.assert_allclose(fitted.stream_states(curves).proba, fitted.predict_proba(curves), atol=1e-5)


def test_new_observations_before_the_last_one_are_refused(fitted):
    curves = _curves(3, seed=5, lo=10, hi=20)
    state = fitted.stream_states(curves)
    with pytest.raises(ModelError, match="after the last one read"):
        fitted.update_stream(state, [(t[:2], m[:2]) for t, m in curves])


def test_save_load_round_trip(fitted, tmp_path):
    fitted.save(tmp_path / "rnn")
    back = BeckerRNN.load(tmp_path / "rnn")
    curves = _curves(10, seed=6)
    np.testing.assert_allclose(back.predict_proba(curves), fitted.predict_proba(curves), atol=1e-6)
    assert list(back.classes_) == list(fitted.classes_)
    (tmp_path / "x").mkdir()
    with pytest.raises(ModelError, match="not a saved Becker RNN"):
        BeckerRNN.load(tmp_path / "x")


def _obs(curves, ids, band="V"):
    return pd.concat(
        [
            pd.DataFrame({"object_id": i, "band": band, "time": t, "mag": m, "mag_err": 0.02})
            for i, (t, m) in zip(ids, curves, strict=True)
        ]
    )


def test_update_cli_incremental_equals_full(tmp_path, capsys):
    """rnn-train, update (all read in full), ingest 10 more observations of some objects through
    `update PATH` (incremental), then an observation before the last one read (recomputed); the
    stored probabilities always equal a full read of the stored curve."""
    from lcdash.rnn_update import load_rnn
    from lcdash.store import Store
    from lcdash.store.rnn_states import load_states

    rng = np.random.default_rng(7)
    curves = _curves(36, seed=7, lo=20, hi=60)
    ids = [f"obj{i}" for i in range(len(curves))]
    early = [(t[:-10], m[:-10]) for t, m in curves]
    objects = pd.DataFrame({"object_id": ids, "label": ["A", "B", "C"] * 12})
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        store.ingest(_obs(early, ids), objects, survey="toy")
    assert (
        main(
            [
                "rnn-train",
                "--db",
                str(db),
                "--out",
                str(tmp_path / "toy-rnn"),
                "--max-epochs",
                "2",
                "--hidden",
                "8",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert main(["update", "--db", str(db), "--model", "toy-rnn"]) == 0
    assert "36 object(s) read in full" in capsys.readouterr().out
    assert main(["update", "--db", str(db), "--model", "toy-rnn"]) == 0  # nothing stale
    assert "0 object(s) read in full, 0 updated" in capsys.readouterr().out

    grow = sorted(rng.choice(len(curves), 12, replace=False))
    late = _obs([(curves[i][0][-10:], curves[i][1][-10:]) for i in grow], [ids[i] for i in grow])
    late.to_csv(tmp_path / "late.csv", index=False)
    assert (
        main(["update", str(tmp_path / "late.csv"), "--db", str(db), "--model", "toy-rnn", "--survey", "toy"])
        == 0
    )
    out = capsys.readouterr().out
    assert "12 updated from their saved state with 120 new observation(s), 0 recomputed" in out

    # an observation between two read ones: the saved read no longer matches, so it is read again
    t, m = curves[grow[0]]
    between = _obs([(np.array([(t[3] + t[4]) / 2]), np.array([m[3]]))], [ids[grow[0]]])
    between.to_csv(tmp_path / "between.csv", index=False)
    assert (
        main(
            [
                "update",
                str(tmp_path / "between.csv"),
                "--db",
                str(db),
                "--model",
                "toy-rnn",
                "--survey",
                "toy",
            ]
        )
        == 0
    )
    assert (
        "0 updated from their saved state with 0 new observation(s), 1 recomputed" in capsys.readouterr().out
    )

    with Store(db, read_only=True) as store:
        est, _ = load_rnn(store, "toy-rnn")
        oids = store.objects(columns=["oid"])["oid"].to_numpy()
        held, state = load_states(store, "toy-rnn", oids, "V", est.n_layers, est.hidden)
        batch = store.read_batch(held, band="V")
    full = est.stream_states(batch)
    np.testing.assert_allclose(state.proba, full.proba, atol=1e-5)
    np.testing.assert_allclose(state.hidden, full.hidden, atol=1e-5)
    assert (state.n_obs == batch.length).all()


def test_update_cli_errors(tmp_path, capsys):
    from lcdash.store import Store

    db = tmp_path / "s.duckdb"
    Store(db).close()
    assert main(["update", "--db", str(db), "--model", "nope"]) == 1
    err = capsys.readouterr().err
    assert "no RNN named 'nope'" in err and "Traceback" not in err


def test_registry_keeps_states_with_their_weights(fitted, tmp_path):
    """Re-registering a name with other weights drops its saved reads; weights changed on disk after
    registration are refused instead of silently mixing states of two models."""
    import torch

    from lcdash.rnn_update import load_rnn
    from lcdash.store import Store
    from lcdash.store.rnn_states import register_rnn, save_states, stale_oids, states_frame

    fitted.save(tmp_path / "a")
    other = BeckerRNN.load(tmp_path / "a")
    with torch.no_grad():
        next(other.module_.parameters()).add_(0.1)
    other.save(tmp_path / "b")
    curves = _curves(3, seed=8, lo=10, hi=20)
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        store.ingest(_obs(curves, ["x", "y", "z"]), survey="toy")
        oids = store.objects(columns=["oid"])["oid"].to_numpy()
        register_rnn(store, "m", tmp_path / "a")
        assert len(stale_oids(store, "m", "V")[0]) == 3
        save_states(store, "m", oids, ["V"] * 3, fitted.stream_states(curves), fitted.classes_)
        assert [len(x) for x in stale_oids(store, "m", "V")] == [0, 0]
        register_rnn(store, "m", tmp_path / "a")  # same weights: kept
        assert len(states_frame(store, "m")) == 3
        register_rnn(store, "m", tmp_path / "b")  # other weights: dropped
        assert len(states_frame(store, "m")) == 0
        other.save(tmp_path / "a")  # the folder of a registered name changes under it
        register_rnn(store, "n", tmp_path / "b")
        fitted.save(tmp_path / "b")
        with pytest.raises(ModelError, match="changed since RNN 'n' was registered"):
            load_rnn(store, "n")


def test_a_version_1_store_gets_the_rnn_tables(tmp_path):
    from lcdash.store import Store
    from lcdash.store.schema import SCHEMA_VERSION

    db = tmp_path / "old.duckdb"
    with Store(db) as store:
        store.con.execute("DROP TABLE rnn_states; DROP TABLE rnn_models")
        store.con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with Store(db) as store:
        assert store.schema_version() == SCHEMA_VERSION >= 2
        tables = set(store.con.execute("SELECT table_name FROM duckdb_tables()").df()["table_name"])
        assert {"rnn_models", "rnn_states"} <= tables
