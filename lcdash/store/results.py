"""Read/write helpers for evaluation results: `eval_runs`, `eval_results`, `predictions` (schema.py).

A run is stored with its protocol config (models and their parameters, seeds), its data selection
(survey, band, classes, counts, sampling caps), library versions and timings, so runs can be
listed and compared later. JSON columns come back parsed.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from lcdash.errors import LcdashError, ValidationError
from lcdash.jsonio import to_json

RESULT_COLUMNS = (
    "model", "spc", "fold", "macro_f1", "macro_precision", "macro_recall", "accuracy", "per_class",
    "confusion", "train_seconds", "infer_lc_per_s", "extra",
)  # fmt: skip
_JSON_RESULT = ("per_class", "confusion", "extra")


def _json(value) -> str | None:
    """Lenient, unlike the jobs table: a value JSON does not know (beyond numpy and datetimes) is
    stored as its str()."""
    return to_json(value, fallback=str)


def _parse(value):
    if value is None or isinstance(value, dict | list):
        return value
    return json.loads(value)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def save_run(store, result, kind: str, config: dict | None = None, selection: dict | None = None,
             job_id: str | None = None, layer_weights=None, classes=None,
             note: str | None = None) -> str:  # fmt: skip
    """Store an EvalResult (eval_runs row + one eval_results row per record) in one transaction.

    `kind`: "compare" or "probe"; `config` / `selection` are merged over the result's own (e.g. the
    survey, label source or encoder name the caller knows). A probe run also stores its final fit's
    `layer_weights` (softmax gamma), `classes` and `note` (why the protocol was skipped). Returns the
    new run_id.
    """
    if kind not in ("compare", "probe"):
        raise ValidationError(f"run kind must be 'compare' or 'probe', got {kind!r}")
    run_id = new_run_id()
    cfg = {**(result.config or {}), **(config or {}), "versions": result.versions}
    sel = {**(result.selection or {}), **(selection or {})}
    rows = [
        (
            run_id, r["model"], int(r["spc"]), int(r["fold"]),
            *(None if r.get(k) is None else float(r[k]) for k in
              ("macro_f1", "macro_precision", "macro_recall", "accuracy")),
            _json(r.get("per_class")), _json(r.get("confusion")),
            None if r.get("train_seconds") is None else float(r["train_seconds"]),
            None if r.get("infer_lc_per_s") is None else float(r["infer_lc_per_s"]),
            _json(r.get("extra")),
        )
        for r in result.records
    ]  # fmt: skip
    with store.transaction() as cur:
        cur.execute(
            "INSERT INTO eval_runs (run_id, kind, config, selection, timings, job_id, layer_weights, "
            "classes, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, kind, _json(cfg), _json(sel), _json(result.timings), job_id, _json(layer_weights),
             _json(classes), note],
        )
        if rows:
            cur.executemany(
                "INSERT INTO eval_results (run_id, model, spc, fold, macro_f1, macro_precision, "
                "macro_recall, accuracy, per_class, confusion, train_seconds, infer_lc_per_s, extra) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
    return run_id


def save_predictions(store, run_id: str, oids, bands, labels, confidence, entropy) -> int:
    """Write a probe run's predictions (one row per oid, band); replaces earlier ones of the run."""
    df = pd.DataFrame(
        {
            "run_id": run_id,
            "oid": np.asarray(oids, dtype=np.int64),
            "band": [str(b) for b in bands],
            "label": [str(x) for x in labels],
            "confidence": np.asarray(confidence, dtype=np.float32),
            "entropy": np.asarray(entropy, dtype=np.float32),
        }
    )
    if df.duplicated(["oid", "band"]).any():
        raise ValidationError("predictions hold the same (oid, band) twice")
    with store.transaction() as cur:
        if cur.execute("SELECT count(*) FROM eval_runs WHERE run_id = ?", [run_id]).fetchone()[0] == 0:
            raise LcdashError(f"no evaluation run {run_id!r} in the store")
        cur.execute("DELETE FROM predictions WHERE run_id = ?", [run_id])
        cur.register("_lcdash_predictions", df)
        try:
            cur.execute(
                "INSERT INTO predictions SELECT run_id, oid, band, label, confidence, entropy "
                "FROM _lcdash_predictions"
            )
        finally:
            cur.unregister("_lcdash_predictions")
    return len(df)


def list_runs(store, kind: str | None = None) -> pd.DataFrame:
    """One row per run, newest first: run_id, created_at, kind, job_id, models, classes, spc, folds,
    best (model@spc with the highest mean macro F1), best_macro_f1, total_seconds."""
    with store.cursor() as cur:
        q = "SELECT run_id, created_at, kind, config, selection, timings, job_id FROM eval_runs"
        runs = cur.execute(q + (" WHERE kind = ?" if kind else "") + " ORDER BY created_at DESC, run_id DESC",
                           [kind] if kind else []).df()  # fmt: skip
        means = cur.execute(
            "SELECT run_id, model, spc, avg(macro_f1) AS f1 FROM eval_results GROUP BY ALL"
        ).df()
    out = []
    for row in runs.itertuples(index=False):
        cfg, sel, tim = _parse(row.config) or {}, _parse(row.selection) or {}, _parse(row.timings) or {}
        m = means[means["run_id"] == row.run_id]
        best = m.loc[m["f1"].idxmax()] if len(m) and m["f1"].notna().any() else None
        out.append(
            {
                "run_id": row.run_id, "created_at": row.created_at, "kind": row.kind, "job_id": row.job_id,
                "models": ",".join(cfg.get("models", [])), "classes": len(sel.get("classes", [])),
                "spc": ",".join(str(s) for s in cfg.get("spc", [])), "folds": cfg.get("folds"),
                "best": None if best is None else f"{best['model']}@{int(best['spc'])}",
                "best_macro_f1": None if best is None else float(best["f1"]),
                "total_seconds": tim.get("total_seconds"),
            }
        )  # fmt: skip
    columns = ["run_id", "created_at", "kind", "job_id", "models", "classes", "spc", "folds", "best",
               "best_macro_f1", "total_seconds"]  # fmt: skip
    return pd.DataFrame(out, columns=columns)


_RUN_COLUMNS = ("run_id", "created_at", "kind", "config", "selection", "timings", "job_id", "layer_weights",
                "classes", "note")  # fmt: skip


def load_run(store, run_id: str) -> tuple[dict, pd.DataFrame]:
    """(run info: run_id, created_at, kind, config, selection, timings, job_id, layer_weights,
    classes, note; results, one row per model x spc x fold with JSON columns parsed)."""
    with store.cursor() as cur:
        row = cur.execute(
            f"SELECT {', '.join(_RUN_COLUMNS)} FROM eval_runs WHERE run_id = ?",
            [run_id],
        ).fetchone()
        if row is None:
            raise LcdashError(f"no evaluation run {run_id!r} in the store")
        results = cur.execute(
            f"SELECT {', '.join(RESULT_COLUMNS)} FROM eval_results WHERE run_id = ? "
            "ORDER BY model, spc, fold",
            [run_id],
        ).df()
    info = dict(zip(_RUN_COLUMNS, row, strict=True))
    for k in ("config", "selection", "timings", "layer_weights", "classes"):
        info[k] = _parse(info[k])
    for k in _JSON_RESULT:
        results[k] = results[k].map(_parse)
    return info, results


def load_predictions(store, run_id: str) -> pd.DataFrame:
    """oid, band, label, confidence, entropy of a run's predictions."""
    with store.cursor() as cur:
        return cur.execute(
            "SELECT oid, band, label, confidence, entropy FROM predictions WHERE run_id = ? "
            "ORDER BY oid, band",
            [run_id],
        ).df()


def latest_predictions(store) -> pd.DataFrame | None:
    """oid, band, entropy of the newest probe run that wrote predictions; None when there is none."""
    cur = store.cursor()
    try:
        runs = cur.execute(
            "SELECT r.run_id FROM eval_runs r WHERE r.run_id IN (SELECT DISTINCT run_id FROM predictions) "
            "ORDER BY r.created_at DESC, r.run_id DESC LIMIT 1"
        ).fetchall()
        if not runs:
            return None
        return cur.execute("SELECT oid, band, entropy FROM predictions WHERE run_id = ?", [runs[0][0]]).df()
    finally:
        cur.close()
