"""Named few-shot label sets made in the app (catalogue labels stay in objects.label).

A set is addressed by its integer ``set_id`` or by its name (every function accepts either). Labels
are (set, oid) -> label with upsert semantics, so labelling the current selection again simply
relabels it. `suggest_next` proposes which objects to label next (active learning).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from lcdash.errors import LcdashError


def _clean_name(name) -> str:
    name = str(name or "").strip()
    if not name:
        raise LcdashError("a label set needs a non-empty name")
    return name


def _set_id(cur, set_ref) -> int:
    """The set_id of a set given by id or name; unknown sets raise."""
    if isinstance(set_ref, (int, np.integer)) and not isinstance(set_ref, bool):
        rows = cur.execute("SELECT set_id FROM label_sets WHERE set_id = ?", [int(set_ref)]).fetchall()
    else:
        rows = cur.execute("SELECT set_id FROM label_sets WHERE name = ?", [str(set_ref)]).fetchall()
    if not rows:
        raise LcdashError(f"no label set {set_ref!r} in the store")
    return int(rows[0][0])


def _oids(oids) -> np.ndarray:
    return np.unique(np.asarray(list(oids) if not isinstance(oids, np.ndarray) else oids,
                                dtype=np.int64).reshape(-1))


def create_set(store, name: str, description: str = "") -> int:
    """Create an empty label set; returns its set_id. Names are unique."""
    name = _clean_name(name)
    with store.transaction() as cur:
        if cur.execute("SELECT 1 FROM label_sets WHERE name = ?", [name]).fetchall():
            raise LcdashError(f"a label set named {name!r} already exists")
        set_id = cur.execute("SELECT nextval('label_set_seq')").fetchall()[0][0]
        cur.execute("INSERT INTO label_sets (set_id, name, description) VALUES (?, ?, ?)",
                    [set_id, name, description or ""])
    return int(set_id)


def list_sets(store) -> pd.DataFrame:
    """set_id, name, description, created_at, n_labels, n_classes; oldest first."""
    cur = store.cursor()
    try:
        return cur.execute(
            "SELECT s.set_id, s.name, s.description, s.created_at, count(l.oid) AS n_labels, "
            "count(DISTINCT l.label) AS n_classes "
            "FROM label_sets s LEFT JOIN labels l USING (set_id) GROUP BY ALL ORDER BY s.set_id"
        ).df()
    finally:
        cur.close()


#: The names lcdash.tasks and the Label page use.
list_label_sets = list_sets


def get_set(store, set_ref) -> dict:
    """One set's row of `list_sets` as a dict."""
    cur = store.cursor()
    try:
        set_id = _set_id(cur, set_ref)
    finally:
        cur.close()
    sets = list_sets(store)
    return sets[sets["set_id"] == set_id].iloc[0].to_dict()


create_label_set = create_set


def rename_set(store, set_ref, new_name: str, description: str | None = None) -> None:
    """Rename a set (and optionally replace its description)."""
    new_name = _clean_name(new_name)
    with store.transaction() as cur:
        set_id = _set_id(cur, set_ref)
        clash = cur.execute("SELECT set_id FROM label_sets WHERE name = ?", [new_name]).fetchall()
        if clash and int(clash[0][0]) != set_id:
            raise LcdashError(f"a label set named {new_name!r} already exists")
        cur.execute("UPDATE label_sets SET name = ? WHERE set_id = ?", [new_name, set_id])
        if description is not None:
            cur.execute("UPDATE label_sets SET description = ? WHERE set_id = ?", [description, set_id])


def delete_set(store, set_ref) -> None:
    """Delete a set and all its labels."""
    with store.transaction() as cur:
        set_id = _set_id(cur, set_ref)
        cur.execute("DELETE FROM labels WHERE set_id = ?", [set_id])
        cur.execute("DELETE FROM label_sets WHERE set_id = ?", [set_id])


delete_label_set = delete_set


def set_labels(store, set_ref, oids, label: str) -> int:
    """Give every object in ``oids`` the label ``label`` in the set (insert or relabel).

    Returns the number of objects labelled. Unknown oids raise and nothing is written.
    """
    label = str(label or "").strip()
    if not label:
        raise LcdashError("a label must be a non-empty name")
    oids = _oids(oids)
    if oids.size == 0:
        return 0
    with store.transaction() as cur:
        set_id = _set_id(cur, set_ref)
        cur.register("_new", pa.table({"oid": oids}))
        missing = cur.execute(
            "SELECT n.oid FROM _new n ANTI JOIN objects o USING (oid) ORDER BY n.oid LIMIT 5"
        ).fetchall()
        if missing:
            cur.unregister("_new")
            raise LcdashError(f"cannot label unknown objects (oid {', '.join(str(r[0]) for r in missing)})")
        cur.execute(
            "INSERT INTO labels (set_id, oid, label, updated_at) "
            f"SELECT {set_id}, oid, ?, current_timestamp FROM _new "
            "ON CONFLICT (set_id, oid) DO UPDATE "
            "SET label = excluded.label, updated_at = excluded.updated_at",
            [label],
        )
        cur.unregister("_new")
    return int(oids.size)


def remove_labels(store, set_ref, oids) -> int:
    """Unlabel ``oids`` in the set; returns how many labels were removed."""
    oids = _oids(oids)
    with store.transaction() as cur:
        set_id = _set_id(cur, set_ref)
        if oids.size == 0:
            return 0
        cur.register("_gone", pa.table({"oid": oids}))
        n = cur.execute(
            "SELECT count(*) FROM labels WHERE set_id = ? AND oid IN (SELECT oid FROM _gone)", [set_id]
        ).fetchall()[0][0]
        cur.execute("DELETE FROM labels WHERE set_id = ? AND oid IN (SELECT oid FROM _gone)", [set_id])
        cur.unregister("_gone")
    return int(n)


def get_labels(store, set_ref) -> pd.DataFrame:
    """oid, object_id, label, updated_at, survey of every labelled object in the set, by oid."""
    cur = store.cursor()
    try:
        set_id = _set_id(cur, set_ref)
        return cur.execute(
            "SELECT l.oid, o.object_id, l.label, l.updated_at, o.survey "
            "FROM labels l JOIN objects o USING (oid) WHERE l.set_id = ? ORDER BY l.oid",
            [set_id],
        ).df()
    finally:
        cur.close()


def label_counts(store, set_ref) -> pd.Series:
    """Objects per label in the set (largest first; ties by name)."""
    df = get_labels(store, set_ref)
    counts = df.groupby("label").size().rename("count")
    return counts.sort_index().sort_values(ascending=False, kind="stable")


def export_labels(store, set_ref, path=None):
    """The set keyed by the user's (survey, object_id), so it stands outside the store: survey,
    object_id, label, label_set, updated_at.

    ``path`` ending in .csv or .parquet/.pq: written there and the path returned; None: the
    DataFrame itself (for a download button).
    """
    suffix = None if path is None else Path(path).suffix.lower()
    if suffix not in (None, ".csv", ".parquet", ".pq"):
        raise LcdashError(f"{path}: export labels to a .csv or .parquet file")
    info = get_set(store, set_ref)
    df = get_labels(store, info["set_id"])
    out = pd.DataFrame({
        "survey": df["survey"], "object_id": df["object_id"], "label": df["label"],
        "label_set": info["name"], "updated_at": df["updated_at"],
    })
    if path is None:
        return out
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        out.to_csv(path, index=False)
    else:
        out.to_parquet(path, index=False)
    return path


_LATEST = "latest"


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


def latest_projection_points(store) -> pd.DataFrame | None:
    """oid, band, x, y of the newest stored projection; None when there is none."""
    from lcdash.store.projections import list_projections, load_projection

    found = list_projections(store)
    if found.empty:
        return None
    return load_projection(store, int(found["proj_id"].iloc[0]))[["oid", "band", "x", "y"]]


def suggest_next(store, set_ref, candidates_xy: pd.DataFrame | None = None,
                 predictions: pd.DataFrame | str | None = _LATEST, k: int = 20, seed: int = 0,
                 n: int | None = None) -> pd.DataFrame:
    """Which unlabelled objects to label next: oid, x, y, entropy (NaN without predictions), rank.

    ``candidates_xy`` (oid, x, y) defaults to the newest stored projection; ``predictions`` (oid,
    entropy) defaults to the newest probe run's ("latest"), None means none. ``n`` is an alias of k.
    Without a map, the most uncertain objects are returned (x, y NaN); with neither, nothing.

    With ``predictions`` (oid, entropy): the most uncertain objects under the current probe, spread
    over the map: the most uncertain quarter of the candidates (at least 5k of them) is split into k
    k-means clusters in (x, y) and each cluster offers its most uncertain object, so suggestions do
    not all come from one confused clump. Without: farthest-point sampling in (x, y), starting from
    the labelled objects, so the picks cover the regions nobody has labelled yet.
    """
    if n is not None:
        k = n
    if isinstance(predictions, str):
        if predictions != _LATEST:
            raise LcdashError(f"predictions must be a DataFrame, None or 'latest', got {predictions!r}")
        predictions = latest_predictions(store)
    if candidates_xy is None:
        candidates_xy = latest_projection_points(store)
        if candidates_xy is None:
            if predictions is None:
                candidates_xy = pd.DataFrame({"oid": pd.Series(dtype=np.int64), "x": [], "y": []})
            else:  # no map: rank by uncertainty alone
                candidates_xy = pd.DataFrame({"oid": predictions["oid"].unique(), "x": np.nan, "y": np.nan})
    need = {"oid", "x", "y"}
    if not need <= set(candidates_xy.columns):
        raise LcdashError(f"candidates need columns {sorted(need)}, got {list(candidates_xy.columns)}")
    k = int(k)
    if k < 1:
        raise LcdashError(f"k must be at least 1, got {k}")
    labelled = set(get_labels(store, set_ref)["oid"].tolist())
    # Multi-band objects appear once per band in a projection: one point per object is enough.
    pts = candidates_xy[["oid", "x", "y"]].drop_duplicates("oid").reset_index(drop=True)
    is_lab = pts["oid"].isin(labelled).to_numpy()
    cand = pts[~is_lab].reset_index(drop=True)
    empty = pd.DataFrame({"oid": pd.Series(dtype=np.int64), "x": pd.Series(dtype=np.float32),
                          "y": pd.Series(dtype=np.float32), "entropy": pd.Series(dtype=np.float64),
                          "rank": pd.Series(dtype=np.int64)})
    if cand.empty:
        return empty
    xy = cand[["x", "y"]].to_numpy(np.float64)

    if predictions is not None:
        if not {"oid", "entropy"} <= set(predictions.columns):
            raise LcdashError(f"predictions need columns oid and entropy, got {list(predictions.columns)}")
        ent = predictions.groupby("oid")["entropy"].max()
        cand["entropy"] = cand["oid"].map(ent).astype(float)
        cand = cand[cand["entropy"].notna()].reset_index(drop=True)
        if cand.empty:
            return empty
        pool = cand.nlargest(min(len(cand), max(5 * k, len(cand) // 4)), "entropy").reset_index(drop=True)
        n_clusters = min(k, len(pool))
        if n_clusters < len(pool) and np.isfinite(pool[["x", "y"]].to_numpy(np.float64)).all():
            from sklearn.cluster import KMeans

            cluster = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit_predict(
                pool[["x", "y"]].to_numpy(np.float64))
            pool["cluster"] = cluster
            picks = pool.loc[pool.groupby("cluster")["entropy"].idxmax()]
        else:
            picks = pool
        out = picks.sort_values("entropy", ascending=False, kind="stable")
    else:
        picked = _farthest_points(xy, pts.loc[is_lab, ["x", "y"]].to_numpy(np.float64), k)
        out = cand.iloc[picked].assign(entropy=np.nan)
    out = out[["oid", "x", "y", "entropy"]].head(k).reset_index(drop=True)
    out["oid"] = out["oid"].astype(np.int64)
    out["rank"] = np.arange(1, len(out) + 1, dtype=np.int64)
    return out


def _farthest_points(xy: np.ndarray, seeds: np.ndarray, k: int) -> list[int]:
    """Greedy farthest-point sampling of k rows of xy away from ``seeds`` (and from each other).

    With no seeds, starts from the candidate nearest the centre of the map.
    """
    k = min(k, len(xy))
    if len(seeds):
        from scipy.spatial import cKDTree

        d = cKDTree(seeds).query(xy)[0]
        picked: list[int] = []
    else:
        first = int(np.argmin(np.linalg.norm(xy - xy.mean(axis=0), axis=1)))
        picked = [first]
        d = np.linalg.norm(xy - xy[first], axis=1)
        d[first] = -1.0
    while len(picked) < k:
        nxt = int(np.argmax(d))
        picked.append(nxt)
        d = np.minimum(d, np.linalg.norm(xy - xy[nxt], axis=1))
        d[picked] = -1.0          # never twice, even among duplicate coordinates
    return picked
