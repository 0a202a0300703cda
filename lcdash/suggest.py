"""Active learning: which unlabelled objects to label next, from the map and the probe's uncertainty.

The data come from the store (a label set, the newest projection, the newest probe run's
predictions); the choice is geometry: k-means over the most uncertain objects, or farthest-point
sampling on the map when there is no probe yet.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from sklearn.cluster import KMeans

from lcdash.errors import LcdashError
from lcdash.store.labels import get_labels
from lcdash.store.projections import latest_projection_points
from lcdash.store.results import latest_predictions

_LATEST = "latest"


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
