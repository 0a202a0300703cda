"""Trained Becker RNNs and each object's saved RNN read (tables rnn_models / rnn_states).

A trained RNN is a folder (`BeckerRNN.save`) registered under a name with the sha256 of its
weights; a saved read is keyed (model, oid, band) and holds a `lcdash.models.rnn.StreamState` row:
the GRU state after n_steps steps, the observations from tail_start(n_obs) on, and the class
probabilities. A state is stale when the light curve no longer has n_obs observations (new ones were
ingested) or is missing; `lcdash.rnn_update.update_states` refreshes stale states.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from lcdash.errors import ModelError
from lcdash.store.embeddings import _weights_sha256


def register_rnn(store, name: str, path: str | os.PathLike) -> dict:
    """Add (or update) RNN `name` pointing at folder `path`. Re-registering a name with other
    weights deletes that name's saved states (they were computed by the old weights)."""
    if not name or not str(name).strip():
        raise ModelError("an RNN needs a non-empty name")
    path = Path(path).resolve()
    sha = _weights_sha256(path)
    if sha is None or not (path / "config.json").exists():
        raise ModelError(f"{path} is not a saved Becker RNN folder (model.safetensors + config.json)")
    meta = json.loads((path / "config.json").read_text())
    if meta.get("model") != "becker-rnn":
        raise ModelError(f"{path} is not a saved Becker RNN (config.json model={meta.get('model')!r})")
    with store.transaction() as cur:
        old = cur.execute("SELECT sha256 FROM rnn_models WHERE name = ?", [name]).fetchall()
        if old and old[0][0] != sha:
            cur.execute("DELETE FROM rnn_states WHERE model = ?", [name])
        cur.execute(
            "INSERT OR REPLACE INTO rnn_models (name, path, sha256, classes, config) VALUES (?, ?, ?, ?, ?)",
            [name, str(path), sha, list(meta["classes"]), json.dumps(meta)],
        )
    return get_rnn(store, name)


def get_rnn(store, name: str) -> dict:
    """The registered RNN `name` as a dict (name, path, sha256, classes, config)."""
    with store.cursor() as cur:
        rows = cur.execute(
            "SELECT name, path, sha256, classes, config FROM rnn_models WHERE name = ?", [name]
        ).fetchall()
        known = [r[0] for r in cur.execute("SELECT name FROM rnn_models ORDER BY name").fetchall()]
    if not rows:
        raise ModelError(f"no RNN named {name!r} in this store (registered: {', '.join(known) or 'none'})")
    n, path, sha, classes, config = rows[0]
    return {"name": n, "path": path, "sha256": sha, "classes": list(classes), "config": json.loads(config)}


def save_states(store, model: str, oids, bands, state, classes) -> int:
    """Insert or replace the saved reads of (oid, band) rows from a StreamState."""
    classes = np.asarray(classes)
    n = len(state)
    hidden = state.hidden.reshape(n, -1).astype(np.float32)
    table = pa.table(
        {
            "model": pa.array([model] * n, pa.string()),
            "oid": pa.array(np.asarray(oids, np.int64)),
            "band": pa.array([str(b) for b in bands], pa.string()),
            "n_obs": pa.array(np.asarray(state.n_obs, np.int32)),
            "n_steps": pa.array(np.asarray(state.n_steps, np.int32)),
            "hidden": pa.array(list(hidden), pa.list_(pa.float32())),
            "tail_time": pa.array(
                [np.asarray(t, np.float64) for t in state.tail_time], pa.list_(pa.float64())
            ),
            "tail_mag": pa.array([np.asarray(m, np.float64) for m in state.tail_mag], pa.list_(pa.float64())),
            "proba": pa.array(list(state.proba.astype(np.float32)), pa.list_(pa.float32())),
            "label": pa.array([str(c) for c in classes[np.argmax(state.proba, 1)]] if n else [], pa.string()),
        }
    )
    with store.transaction() as cur:
        cur.register("_states", table)
        cur.execute(
            "INSERT OR REPLACE INTO rnn_states (model, oid, band, n_obs, n_steps, hidden, tail_time, "
            "tail_mag, proba, label) SELECT model, oid, band, n_obs, n_steps, hidden, tail_time, tail_mag, "
            "proba, label FROM _states"
        )
        cur.unregister("_states")
    return n


def load_states(store, model: str, oids, band: str, n_layers: int, hidden: int):
    """(oid int64[M], StreamState) of the saved reads among `oids` in `band` (those that exist)."""
    from lcdash.models.rnn import StreamState

    with store.cursor() as cur:
        cur.register("_want", pa.table({"oid": np.asarray(oids, np.int64)}))
        tb = cur.sql(
            "SELECT oid, n_obs, n_steps, hidden, tail_time, tail_mag, proba FROM rnn_states "
            "WHERE model = ? AND band = ? AND oid IN (SELECT oid FROM _want) ORDER BY oid",
            params=[model, band],
        ).to_arrow_table()
    n = tb.num_rows
    col = tb.column
    state = StreamState(
        np.stack(col("hidden").to_pylist()).astype(np.float32).reshape(n, n_layers, hidden)
        if n
        else np.zeros((0, n_layers, hidden), np.float32),
        col("n_obs").to_numpy().astype(np.int64),
        col("n_steps").to_numpy().astype(np.int64),
        [np.asarray(t, np.float64) for t in col("tail_time").to_pylist()],
        [np.asarray(m, np.float64) for m in col("tail_mag").to_pylist()],
        np.asarray(col("proba").to_pylist(), np.float32).reshape(n, -1),
    )
    return col("oid").to_numpy().astype(np.int64), state


def stale_oids(store, model: str, band: str, survey: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(oids with no saved read in `band`, oids whose saved read is behind the stored light curve)."""
    params: list = [model, band]
    where = ""
    if survey:
        where = "AND l.oid IN (SELECT oid FROM objects WHERE survey = ?)"
        params.append(survey)
    with store.cursor() as cur:
        df = cur.execute(
            f"""SELECT l.oid, s.n_obs IS NULL AS missing
                FROM lightcurves l LEFT JOIN rnn_states s
                  ON s.model = ? AND s.oid = l.oid AND s.band = l.band
                WHERE l.band = ? AND (s.n_obs IS NULL OR s.n_obs <> l.n_obs) {where}
                ORDER BY l.oid""",
            params,
        ).df()
    missing = df["missing"].to_numpy(bool)
    oid = df["oid"].to_numpy(np.int64)
    return oid[missing], oid[~missing]


def states_frame(store, model: str, oids=None) -> pd.DataFrame:
    """Saved reads as a table: oid, band, n_obs, n_steps, label, proba, updated_at."""
    sql = "SELECT oid, band, n_obs, n_steps, label, proba, updated_at FROM rnn_states WHERE model = ?"
    with store.cursor() as cur:
        if oids is not None:
            cur.register("_want", pa.table({"oid": np.asarray(oids, np.int64)}))
            sql += " AND oid IN (SELECT oid FROM _want)"
        return cur.execute(sql + " ORDER BY oid, band", [model]).df()


def read_from(store, oids, band: str, starts) -> tuple[np.ndarray, list, list]:
    """(oid, times, mags) of each light curve in `band` from observation starts[i] on (0-based), in
    oid order: an incremental update reads only the saved tail's observations and the new ones."""
    want = pa.table({"oid": np.asarray(oids, np.int64), "start": np.asarray(starts, np.int64)})
    with store.cursor() as cur:
        cur.register("_from", want)
        tb = cur.sql(
            "SELECT w.oid, list_slice(l.time, w.start + 1, l.n_obs) AS time, "
            "list_slice(l.mag, w.start + 1, l.n_obs) AS mag FROM _from w "
            "JOIN lightcurves l ON l.oid = w.oid AND l.band = ? ORDER BY w.oid",
            params=[band],
        ).to_arrow_table()
    times = [np.asarray(t, np.float64) for t in tb.column("time").to_pylist()]
    mags = [np.asarray(m, np.float64) for m in tb.column("mag").to_pylist()]
    return tb.column("oid").to_numpy().astype(np.int64), times, mags
