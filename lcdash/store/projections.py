"""Stored 2-D projections (UMAP) of embeddings: computed once per parameter set, then reused.

A projection is identified by (encoder, embedding kind, params, layer weights); `find_projection`
looks one up so that the Explore page reuses coordinates instead of recomputing UMAP. Callers put
everything that changes the map into ``params`` (n_neighbors, min_dist, metric, seed, band, the
probe run whose layer weights were used, ...).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from lcdash.errors import LcdashError


def _canonical(params: dict | None) -> dict:
    """JSON round trip: numpy scalars become plain numbers, so stored and asked params compare equal."""
    try:
        return json.loads(json.dumps(dict(params or {}), sort_keys=True, default=_plain))
    except (TypeError, ValueError) as exc:
        raise LcdashError(f"projection parameters must be JSON-serialisable: {exc}") from exc


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def save_projection(store, encoder: str, embedding: str, params: dict, oids, bands: Sequence[str] | str,
                    xy, layer_weights=None) -> int:
    """Store the coordinates ``xy`` [N, 2] of the points (oids[i], bands[i]); returns the new proj_id.

    ``bands`` may be one band name for all points.
    """
    oids = np.asarray(oids, dtype=np.int64).reshape(-1)
    xy = np.asarray(xy, dtype=np.float32)
    n = oids.size
    if isinstance(bands, str):
        bands = [bands] * n
    bands = [str(b) for b in bands]
    if xy.shape != (n, 2):
        raise LcdashError(f"projection coordinates must be [{n}, 2] for {n} points, got {xy.shape}")
    if len(bands) != n:
        raise LcdashError(f"projection has {n} points but {len(bands)} band values")
    if n == 0:
        raise LcdashError("a projection needs at least one point")
    if not np.isfinite(xy).all():
        raise LcdashError("projection coordinates contain NaN or infinite values")
    keys = pd.DataFrame({"oid": oids, "band": bands})
    if keys.duplicated().any():
        first = keys[keys.duplicated()].iloc[0]
        raise LcdashError(f"projection lists point (oid {first.oid}, band {first.band!r}) twice")
    weights = None if layer_weights is None else [float(w) for w in np.asarray(layer_weights).reshape(-1)]
    points = pa.table({"oid": oids, "band": pa.array(bands, pa.string()),
                       "x": xy[:, 0], "y": xy[:, 1]})
    with store.transaction() as cur:
        proj_id = cur.execute("SELECT nextval('projection_seq')").fetchall()[0][0]
        cur.execute(
            "INSERT INTO projections (proj_id, encoder, embedding, layer_weights, params) "
            "VALUES (?, ?, ?, ?, ?)",
            [proj_id, str(encoder), str(embedding), weights, json.dumps(_canonical(params), sort_keys=True)],
        )
        cur.register("_points", points)
        cur.execute(f"INSERT INTO projection_points SELECT {int(proj_id)}, oid, band, x, y FROM _points")
        cur.unregister("_points")
    return int(proj_id)


#: The params key under which `lcdash.tasks` records a sampled fit (`lcdash.projection.sampled_fit_params`).
AUTO_PARAMS = "sampled_fit"


def find_projection(store, encoder: str, embedding: str, params: dict, layer_weights=None) -> int | None:
    """The newest stored projection with exactly these settings, or None (a stored "sampled_fit"
    entry matches any request that does not name one).

    ``layer_weights`` (when given) must match too (to 1e-6): a "weighted" map depends on them.
    """
    want = _canonical(params)
    cur = store.cursor()
    try:
        rows = cur.execute(
            "SELECT proj_id, params, layer_weights FROM projections WHERE encoder = ? AND embedding = ? "
            "ORDER BY proj_id DESC",
            [str(encoder), str(embedding)],
        ).fetchall()
    finally:
        cur.close()
    for proj_id, stored, weights in rows:
        stored = json.loads(stored)
        if AUTO_PARAMS not in want:  # how a large map was fitted is chosen by size, not asked for
            stored.pop(AUTO_PARAMS, None)
        if stored != want:
            continue
        if layer_weights is not None:
            w = np.asarray(layer_weights, dtype=np.float64).reshape(-1)
            if weights is None or len(weights) != w.size or not np.allclose(weights, w, atol=1e-6):
                continue
        return int(proj_id)
    return None


def load_projection(store, proj_id: int) -> pd.DataFrame:
    """Points of a projection: oid, band, x, y, object_id, survey, label, period, n_obs (by oid, band)."""
    cur = store.cursor()
    try:
        found = cur.execute("SELECT count(*) FROM projections WHERE proj_id = ?", [int(proj_id)]).fetchall()
        if not found[0][0]:
            raise LcdashError(f"no projection with id {proj_id} in the store")
        return cur.execute(
            "SELECT p.oid, p.band, p.x, p.y, o.object_id, o.survey, o.label, o.period, o.n_obs "
            "FROM projection_points p LEFT JOIN objects o USING (oid) "
            "WHERE p.proj_id = ? ORDER BY p.oid, p.band",
            [int(proj_id)],
        ).df()
    finally:
        cur.close()


def projection_points(store, proj_id: int) -> pd.DataFrame:
    """oid, band, x, y of a projection joined with the object columns the scatter colours by
    (object_id, label, survey, period, n_obs, synthetic, ra, dec): one row per (object, band)."""
    cur = store.cursor()
    try:
        return cur.execute(
            "SELECT p.oid, p.band, p.x, p.y, o.object_id, o.label, o.survey, o.period, o.n_obs, "
            "o.synthetic, o.ra, o.dec FROM projection_points p JOIN objects o USING (oid) "
            "WHERE p.proj_id = ? ORDER BY p.oid, p.band", [int(proj_id)]).df()
    finally:
        cur.close()


def latest_projection_points(store) -> pd.DataFrame | None:
    """oid, band, x, y of the newest stored projection; None when there is none."""
    found = list_projections(store)
    if found.empty:
        return None
    return load_projection(store, int(found["proj_id"].iloc[0]))[["oid", "band", "x", "y"]]


def map_coverage(store, encoder: str, proj_id: int | None) -> dict:
    """How much of the store a map shows: objects in the store, objects with an `encoder` embedding,
    objects without one ("unembedded"), and embedded objects missing from projection `proj_id`
    ("unmapped"; 0 without a map)."""
    cur = store.cursor()
    try:
        def count(sql, params):
            return int(cur.execute(sql, params).fetchone()[0])

        objects = count("SELECT count(*) FROM objects", [])
        embedded = count("SELECT count(DISTINCT oid) FROM embeddings WHERE encoder = ?", [encoder])
        unembedded = count("SELECT count(*) FROM objects o WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
                           "WHERE e.encoder = ? AND e.oid = o.oid)", [encoder])
        unmapped = 0
        if proj_id is not None:
            unmapped = count(
                "SELECT count(DISTINCT e.oid) FROM embeddings e WHERE e.encoder = ? AND NOT EXISTS "
                "(SELECT 1 FROM projection_points p WHERE p.proj_id = ? AND p.oid = e.oid)",
                [encoder, int(proj_id)],
            )
    finally:
        cur.close()
    return {"objects": objects, "embedded": embedded, "unembedded": unembedded, "unmapped": unmapped}


def has_projection(store, encoder: str) -> bool:
    cur = store.cursor()
    try:
        found = cur.execute("SELECT count(*) FROM projections WHERE encoder = ?", [encoder]).fetchone()
        return bool(found[0])
    finally:
        cur.close()


def list_projections(store) -> pd.DataFrame:
    """One row per projection, newest first: proj_id, encoder, embedding, params (dict),
    layer_weights, n_points, created_at."""
    cur = store.cursor()
    try:
        df = cur.execute(
            "SELECT p.proj_id, p.encoder, p.embedding, p.params, p.layer_weights, "
            "count(pp.oid) AS n_points, p.created_at "
            "FROM projections p LEFT JOIN projection_points pp USING (proj_id) "
            "GROUP BY ALL ORDER BY p.proj_id DESC"
        ).df()
    finally:
        cur.close()
    df["params"] = [json.loads(p) for p in df["params"]]
    df["layer_weights"] = [None if w is None or (np.ndim(w) == 0 and pd.isna(w)) else list(map(float, w))
                           for w in df["layer_weights"]]
    return df


def delete_projection(store, proj_id: int) -> None:
    """Remove a projection and its points."""
    with store.transaction() as cur:
        cur.execute("DELETE FROM projection_points WHERE proj_id = ?", [int(proj_id)])
        cur.execute("DELETE FROM projections WHERE proj_id = ?", [int(proj_id)])
