"""The store's versioned DuckDB schema: every table lcdash keeps, in one place.

Identity: an object is (survey, object_id) as given by the user; the store assigns it a
compact integer `oid` that every other table uses. Multi-band objects have one objects row
and observations per band; models that read one band at a time key their outputs by
(oid, band).

Bump SCHEMA_VERSION and add a step to MIGRATIONS whenever a table changes; `Store` applies
the missing steps on open inside one transaction.
"""

from __future__ import annotations

import json

SCHEMA_VERSION = 4

# The physical layout of light curves, chosen by measurement (bench/store_bench.py, catalina_train,
# 10,000 random light curves read as padded arrays, same DuckDB file, same numpy padding): one row
# per (oid, band) with LIST columns read 44,000-68,000 light curves per CPU-second against
# 7,700-9,100 for a long table sorted by (oid, band, time) (wall: 0.14-0.9 s against 0.55-8.6 s on
# a shared, loaded 2-core machine). A batch read is one row per light curve whose flat list
# children map straight onto the padded arrays, instead of millions of rows to transfer and regroup.
# Drawing one light curve costs about the same either way (~1.6-1.8 ms of CPU per query), with the
# oid index below. The long form stays available to SQL users as the `observations` view (UNNEST of
# the lists). Invariant: each list is sorted by time with unique times; n_obs = len(time).
OBSERVATIONS_DDL = """
CREATE TABLE IF NOT EXISTS lightcurves (
    oid      BIGINT    NOT NULL,
    band     VARCHAR   NOT NULL,
    n_obs    INTEGER   NOT NULL,
    time     DOUBLE[]  NOT NULL,   -- days (MJD or the survey's own epoch), ascending, unique
    mag      FLOAT[]   NOT NULL,   -- magnitudes
    mag_err  FLOAT[]   NOT NULL,   -- elements are NULL when the survey gives no error
    PRIMARY KEY (oid, band)
);
-- one light curve is a handful of rows among tens of thousands whose lists fill whole row groups, so
-- zone maps cannot skip anything: the index makes drawing one object ~3x faster (10 -> 3 ms)
CREATE INDEX IF NOT EXISTS lightcurves_oid ON lightcurves (oid);

CREATE OR REPLACE VIEW observations AS
SELECT oid, band, unnest(time) AS time, unnest(mag) AS mag, unnest(mag_err) AS mag_err
FROM lightcurves;
"""

TABLES_DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR
);

CREATE SEQUENCE IF NOT EXISTS oid_seq START 1;

CREATE TABLE IF NOT EXISTS objects (
    oid        BIGINT PRIMARY KEY,
    object_id  VARCHAR NOT NULL,
    survey     VARCHAR NOT NULL,
    label      VARCHAR,          -- catalogue label (NULL when unknown)
    ra         DOUBLE,
    dec        DOUBLE,
    period     DOUBLE,           -- catalogue period in days
    n_obs      INTEGER NOT NULL, -- all bands together
    bands      VARCHAR[] NOT NULL,
    synthetic  BOOLEAN NOT NULL DEFAULT false,
    meta       JSON,             -- any other catalogue columns
    UNIQUE (survey, object_id)
);

-- Few-shot label sets made in the app (catalogue labels stay in objects.label).
CREATE SEQUENCE IF NOT EXISTS label_set_seq START 1;
CREATE TABLE IF NOT EXISTS label_sets (
    set_id      INTEGER PRIMARY KEY,
    name        VARCHAR NOT NULL UNIQUE,
    description VARCHAR,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS labels (
    set_id     INTEGER NOT NULL,
    oid        BIGINT  NOT NULL,
    label      VARCHAR NOT NULL,
    updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (set_id, oid)
);

-- Encoders known to this store (the weights live on disk as safetensors + config.json).
CREATE TABLE IF NOT EXISTS encoders (
    name       VARCHAR PRIMARY KEY,
    path       VARCHAR NOT NULL,
    arch       VARCHAR NOT NULL,   -- astromer1 | astromer2
    n_layers   INTEGER NOT NULL,
    d_model    INTEGER NOT NULL,
    source     VARCHAR,            -- "official macho_a0", "pretrained on demo", ...
    config     JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Per-object embeddings: the mean over valid steps and windows of every layer's output,
-- flattened row-major from [n_layers + 1, d_model] (layer 0 = input embedding).
CREATE TABLE IF NOT EXISTS embeddings (
    encoder    VARCHAR NOT NULL,
    oid        BIGINT  NOT NULL,
    band       VARCHAR NOT NULL,
    n_windows  INTEGER NOT NULL,
    layers     FLOAT[] NOT NULL,
    PRIMARY KEY (encoder, oid, band)
);

-- 2-D projections (UMAP) of an embedding, computed once and stored with their parameters.
CREATE SEQUENCE IF NOT EXISTS projection_seq START 1;
CREATE TABLE IF NOT EXISTS projections (
    proj_id       INTEGER PRIMARY KEY,
    encoder       VARCHAR NOT NULL,
    embedding     VARCHAR NOT NULL,  -- "last" | "weighted" | "layer_<l>"
    layer_weights FLOAT[],           -- the softmax weights used for "weighted"
    params        JSON NOT NULL,     -- n_neighbors, min_dist, metric, seed, band, ...
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS projection_points (
    proj_id INTEGER NOT NULL,
    oid     BIGINT  NOT NULL,
    band    VARCHAR NOT NULL,
    x       FLOAT   NOT NULL,
    y       FLOAT   NOT NULL,
    PRIMARY KEY (proj_id, oid, band)
);

-- Background jobs (lcdash.jobs): the app process is the only writer.
CREATE TABLE IF NOT EXISTS jobs (
    job_id      VARCHAR PRIMARY KEY,
    kind        VARCHAR NOT NULL,  -- embed | pretrain | finetune | project | probe | evaluate
    params      JSON NOT NULL,
    state       VARCHAR NOT NULL,  -- queued | running | done | failed | cancelled
    step        BIGINT NOT NULL DEFAULT 0,
    total       BIGINT,
    message     VARCHAR,
    metrics     JSON,
    error       VARCHAR,
    result      JSON,
    pid         INTEGER,
    workdir     VARCHAR,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    started_at  TIMESTAMP,
    finished_at TIMESTAMP
);

-- Evaluation runs (lcdash.evaluation): one run = models x spc x folds on one data selection.
CREATE TABLE IF NOT EXISTS eval_runs (
    run_id     VARCHAR PRIMARY KEY,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    kind       VARCHAR NOT NULL,   -- "compare" | "probe"
    config     JSON NOT NULL,      -- protocol settings, seeds, models and their versions
    selection  JSON NOT NULL,      -- survey, band, classes, label source, counts per class
    timings    JSON,               -- seconds per step, total, cancelled
    job_id     VARCHAR
    -- version 3 adds layer_weights, classes and note (PROBE_COLUMNS_DDL)
);
CREATE TABLE IF NOT EXISTS eval_results (
    run_id         VARCHAR NOT NULL,
    model          VARCHAR NOT NULL,
    spc            INTEGER NOT NULL,
    fold           INTEGER NOT NULL,
    macro_f1       DOUBLE,
    macro_precision DOUBLE,
    macro_recall   DOUBLE,
    accuracy       DOUBLE,
    per_class      JSON,   -- {class: {precision, recall, f1, support}}
    confusion      JSON,   -- {"classes": [...], "matrix": [[...]]}
    train_seconds  DOUBLE,
    infer_lc_per_s DOUBLE,
    extra          JSON,   -- e.g. learned layer weights of the probe
    PRIMARY KEY (run_id, model, spc, fold)
);

-- Predictions written back by a probe run, so Explore can colour by them.
CREATE TABLE IF NOT EXISTS predictions (
    run_id     VARCHAR NOT NULL,
    oid        BIGINT  NOT NULL,
    band       VARCHAR NOT NULL,
    label      VARCHAR NOT NULL,
    confidence FLOAT   NOT NULL,   -- max class probability
    entropy    FLOAT   NOT NULL,   -- for "most uncertain" suggestions
    PRIMARY KEY (run_id, oid, band)
);
"""

# Trained Becker RNNs and each object's saved RNN read (lcdash.store.rnn_states), so that new
# observations cost O(new): the GRU state after n_steps steps and the observations from
# tail_start(n_obs) on (w-s+1 .. w of them) are what the next step needs.
RNN_STATES_DDL = """
CREATE TABLE IF NOT EXISTS rnn_models (
    name       VARCHAR PRIMARY KEY,
    path       VARCHAR NOT NULL,    -- folder with model.safetensors + config.json
    sha256     VARCHAR NOT NULL,    -- of model.safetensors: saved states belong to these weights
    classes    VARCHAR[] NOT NULL,
    config     JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS rnn_states (
    model      VARCHAR NOT NULL,
    oid        BIGINT  NOT NULL,
    band       VARCHAR NOT NULL,
    n_obs      INTEGER NOT NULL,    -- observations read (the light curve's first n_obs)
    n_steps    INTEGER NOT NULL,    -- GRU steps taken
    hidden     FLOAT[] NOT NULL,    -- [n_layers, hidden] row-major, after n_steps steps
    tail_time  DOUBLE[] NOT NULL,   -- observations tail_start(n_obs) .. n_obs-1
    tail_mag   DOUBLE[] NOT NULL,
    proba      FLOAT[] NOT NULL,    -- class probabilities, in rnn_models.classes order
    label      VARCHAR NOT NULL,    -- the most probable class
    updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (model, oid, band)
);
"""

# A probe run's own results, in columns named for what they hold (before version 3 they sat inside
# `timings`): the final fit's softmax layer weights (gamma), its classes, and why the protocol was
# skipped, if it was. NULL for comparison runs.
PROBE_COLUMNS_DDL = """
ALTER TABLE eval_runs ADD COLUMN IF NOT EXISTS layer_weights JSON;
ALTER TABLE eval_runs ADD COLUMN IF NOT EXISTS classes JSON;
ALTER TABLE eval_runs ADD COLUMN IF NOT EXISTS note VARCHAR;
"""
PROBE_KEYS = ("layer_weights", "classes", "note")


def _probe_columns(cur) -> None:
    """Version 3: add the probe columns and move their values out of `timings` in existing runs."""
    cur.execute(PROBE_COLUMNS_DDL)
    rows = cur.execute("SELECT run_id, timings FROM eval_runs WHERE timings IS NOT NULL").fetchall()
    for run_id, timings in rows:
        t = json.loads(timings) if isinstance(timings, str) else timings
        if not isinstance(t, dict) or not any(k in t for k in PROBE_KEYS):
            continue
        weights, classes, note = (t.pop(k, None) for k in PROBE_KEYS)
        cur.execute(
            "UPDATE eval_runs SET timings = ?, layer_weights = ?, classes = ?, note = ? WHERE run_id = ?",
            [json.dumps(t), None if weights is None else json.dumps(weights),
             None if classes is None else json.dumps(classes), note, run_id],
        )  # fmt: skip


# Periods found from the light curves (lcdash.periods), one per (oid, band), beside the catalogue's
# objects.period, which they never overwrite. `finder` is the finder's version: a period of another
# version, or of a light curve that has grown since (n_obs), is recomputed, not used. `candidates`
# are the other periods judged, best first.
PERIODS_DDL = """
CREATE TABLE IF NOT EXISTS periods (
    oid         BIGINT  NOT NULL,
    band        VARCHAR NOT NULL,
    period      DOUBLE,            -- days; NULL when the finder found none (see reason)
    score       DOUBLE,            -- BIC of the winning Fourier model below a constant's
    n_harmonics INTEGER,
    reason      VARCHAR NOT NULL,  -- why this period, or why none
    candidates  DOUBLE[],          -- periods judged, best first (the first is `period`)
    finder      VARCHAR NOT NULL,  -- lcdash.periods.FINDER_VERSION
    n_obs       INTEGER NOT NULL,  -- of the light curve it was found on: more observations, find again
    computed_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (oid, band)
);
"""

# version -> what brings a store from version-1 to version: SQL, or a function of a cursor.
MIGRATIONS: dict = {
    1: TABLES_DDL + OBSERVATIONS_DDL,
    2: RNN_STATES_DDL,
    3: _probe_columns,
    4: PERIODS_DDL,
}
