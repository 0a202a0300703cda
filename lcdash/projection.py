"""2-D maps and neighbours of per-object embeddings.

`umap_project` runs UMAP (McInnes et al. 2018) once per parameter set; the coordinates are stored
(`lcdash.store.projections`) because importing umap (~11 s) and the first fit (~30 s of numba
compilation) are far too slow for a page render. Embeddings arrive as per-layer means
``[N, L+1, d]``; `select_embedding` turns them into one vector per object: the last layer, one
given layer, or Astromer 2's weighted sum over layers (Donoso-Oliva et al. 2026).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from lcdash.errors import LcdashError

Progress = Callable[..., None]


def _numba_cache() -> None:
    """Point numba's on-disk cache at a writable folder so compiled UMAP kernels survive restarts."""
    if not os.environ.get("NUMBA_CACHE_DIR"):
        path = Path.home() / ".cache" / "lcdash" / "numba"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            import tempfile

            path = Path(tempfile.gettempdir()) / "lcdash-numba"
            path.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(path)


def _as_matrix(X, name: str = "X") -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise LcdashError(f"{name} must be a non-empty [N, D] array, got shape {X.shape}")
    bad = ~np.isfinite(X.sum(axis=1, dtype=np.float64))   # NaN/inf anywhere in a row; no N x D mask
    if bad.any():
        raise LcdashError(f"{name} has {int(bad.sum())} rows with NaN or infinite values (first: row "
                          f"{int(np.flatnonzero(bad)[0])})")
    return X


def umap_project(X, n_neighbors: int = 15, min_dist: float = 0.1, metric: str = "cosine", seed: int = 0,
                 progress: Progress | None = None) -> np.ndarray:
    """UMAP of ``X`` [N, D] to float32 [N, 2]; deterministic for a given ``seed``.

    ``n_neighbors`` is capped at N - 1 so that small selections still project.
    """
    X = _as_matrix(X)
    n = X.shape[0]
    if n < 3:
        raise LcdashError(f"UMAP needs at least 3 points, got {n}")
    if not 0.0 <= float(min_dist) <= 1.0:
        raise LcdashError(f"min_dist must lie in [0, 1], got {min_dist}")
    if int(n_neighbors) < 2:
        raise LcdashError(f"n_neighbors must be at least 2, got {n_neighbors}")
    if progress:
        progress(0, 3, "importing UMAP")
    _numba_cache()
    with _cached_numba():
        import umap  # heavy: numba compiles on first use (cached on disk, see _cached_numba)

        if progress:
            progress(1, 3, f"UMAP of {n} points (n_neighbors={n_neighbors}, min_dist={min_dist}, {metric})")
        data, umap_metric, extra = X, metric, {}
        if n < SMALL_DATA and metric in ("cosine", "euclidean"):
            # umap's own small-data path fills the same N x N matrix through a Python callback per
            # pair (~10 s for 2,000 points); numpy does it in milliseconds.
            data, umap_metric = _pairwise(X, metric), "precomputed"
            extra = {"disconnection_distance": 2.0} if metric == "cosine" else {}
        xy = _fit(umap, data, n, umap_metric, extra, int(n_neighbors), float(min_dist), int(seed))
    if progress:
        progress(3, 3, "projected")
    return np.asarray(xy, dtype=np.float32)


#: Below this many points umap computes all pairwise distances itself (its `_small_data` path).
SMALL_DATA = 4096


def _pairwise(X: np.ndarray, metric: str) -> np.ndarray:
    """The full distance matrix [N, N] (float32): 1 - cosine similarity, or euclidean."""
    X64 = X.astype(np.float64)
    sq = np.einsum("nd,nd->n", X64, X64)
    if metric == "cosine":
        norms = np.sqrt(sq)
        norms[norms == 0] = 1.0
        Xn = X64 / norms[:, None]
        d = 1.0 - Xn @ Xn.T
    else:
        d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (X64 @ X64.T), 0.0))
    np.fill_diagonal(d, 0.0)
    return np.maximum(d, 0.0).astype(np.float32)


class _cached_numba:
    """While active, `numba.njit` defaults to `cache=True`.

    umap-learn 0.5 decorates its kernels without `cache=True`, so every fresh process (each UMAP job)
    recompiled them: ~25 s before any work on 2 cores. With this, the compiled kernels land in
    `$NUMBA_CACHE_DIR` and later processes load them (`lcdash.workspace.warm_numba_cache` fills the
    cache once at install time). Kernels numba cannot cache are compiled as before, with a warning.
    """

    def __enter__(self):
        import numba

        self._numba, self._njit = numba, numba.njit

        def njit(*args, **kwargs):
            kwargs.setdefault("cache", True)
            return self._njit(*args, **kwargs)

        numba.njit = njit
        return self

    def __exit__(self, *exc):
        self._numba.njit = self._njit
        return False


def _fit(umap, data, n: int, metric: str, extra: dict, n_neighbors: int, min_dist: float, seed: int):
    import warnings

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(int(n_neighbors), n - 1),
        min_dist=float(min_dist),
        metric=metric,
        **extra,
        random_state=int(seed),
        # Spectral initialisation needs a connected, large enough graph; tiny sets start at random.
        init="spectral" if n > 2 * int(n_neighbors) else "random",
        low_memory=True,
        n_jobs=1,  # random_state forces one thread anyway; saying so silences umap's warning
    )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(cache|precomputed).*")
            return reducer.fit_transform(data)
    except ValueError as exc:  # e.g. an unknown metric
        raise LcdashError(f"UMAP failed: {exc}") from exc


def _check_layers(layers) -> np.ndarray:
    layers = np.asarray(layers, dtype=np.float32)
    if layers.ndim == 2:
        layers = layers[None]
    if layers.ndim != 3 or layers.shape[1] == 0:
        raise LcdashError(f"layers must be [N, L+1, d] per-layer embeddings, got shape {layers.shape}")
    return layers


def _softmax(gamma: np.ndarray) -> np.ndarray:
    e = np.exp(gamma - gamma.max())
    return e / e.sum()


def weighted_embedding(layers, gamma=None) -> np.ndarray:
    """Astromer 2's per-object embedding: z = 1/(L+1) * sum_l softmax(gamma)_l x_l.

    ``layers`` [N, L+1, d] (or [L+1, d] for one object) -> [N, d]; ``gamma`` [L+1] raw (pre-softmax)
    weights, uniform when None.
    """
    layers = _check_layers(layers)
    n_layers = layers.shape[1]
    gamma = np.zeros(n_layers) if gamma is None else np.asarray(gamma, dtype=np.float64).reshape(-1)
    if gamma.size != n_layers:
        raise LcdashError(f"gamma has {gamma.size} values for {n_layers} layers")
    return _combine(layers, _softmax(gamma))


def _combine(layers: np.ndarray, weights: np.ndarray) -> np.ndarray:
    w = (np.asarray(weights, dtype=np.float64) / layers.shape[1]).astype(np.float32)
    return np.einsum("nld,l->nd", layers, w)


def select_embedding(layers, kind: str = "weighted", weights=None) -> np.ndarray:
    """One vector per object from per-layer embeddings [N, L+1, d].

    ``kind``: "last" (the final block), "layer_<l>" (0 = input embedding), or "weighted" (Astromer 2's
    weighted sum; ``weights`` are the softmax layer weights w_l, e.g. learned by a probe, summing to 1;
    uniform when None).
    """
    layers = _check_layers(layers)
    n_layers = layers.shape[1]
    if kind == "last":
        return layers[:, -1].copy()
    if kind == "weighted":
        if weights is None:
            return weighted_embedding(layers)
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.size != n_layers or np.any(w < 0) or not np.isclose(w.sum(), 1.0, atol=1e-3):
            raise LcdashError(f"layer weights must be {n_layers} non-negative values summing to 1, got {w}")
        return _combine(layers, w)
    m = re.fullmatch(r"layer_(\d+)", str(kind))
    if m:
        layer = int(m.group(1))
        if layer >= n_layers:
            raise LcdashError(f"{kind}: the encoder has layers 0..{n_layers - 1}")
        return layers[:, layer].copy()
    raise LcdashError(f"unknown embedding {kind!r}: use 'last', 'weighted' or 'layer_<l>'")


def nearest_neighbours(X, index, k: int = 10, metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``X`` to row(s) ``index``, closest first, excluding the query itself.

    ``index`` an int -> (indices int64[k], distances float32[k]); an array of ints -> [q, k] each.
    ``metric``: "cosine" (1 - cosine similarity) or "euclidean". Exact brute force: one query over
    50,000 x 256 takes milliseconds, no index to build or keep in step with the store.
    """
    X = _as_matrix(X)
    n = X.shape[0]
    single = np.ndim(index) == 0
    idx = np.atleast_1d(np.asarray(index)).astype(np.int64)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise LcdashError(f"query index out of range for {n} points: {index}")
    idx = np.where(idx < 0, idx + n, idx)
    k = int(min(k, n - 1))
    if k < 1:
        raise LcdashError(f"need at least 2 points for neighbours, got {n}")
    # Two passes over X (dot products with the queries, squared norms) and no normalised copy of it.
    dots = X[idx] @ X.T                                   # [q, N]
    sq = np.einsum("nd,nd->n", X, X)
    if metric == "cosine":
        norms = np.sqrt(sq)
        norms[norms == 0] = 1.0
        d = 1.0 - dots / (norms[idx][:, None] * norms[None, :])
    elif metric == "euclidean":
        d = np.sqrt(np.maximum(sq[idx][:, None] + sq[None, :] - 2.0 * dots, 0.0))
    else:
        raise LcdashError(f"unknown metric {metric!r}: use 'cosine' or 'euclidean'")
    d = np.asarray(d, dtype=np.float32)
    d[np.arange(idx.size), idx] = np.inf            # never return the query itself
    part = np.argpartition(d, k - 1, axis=1)[:, :k]
    pd_ = np.take_along_axis(d, part, axis=1)
    order = np.argsort(pd_, axis=1, kind="stable")
    nn = np.take_along_axis(part, order, axis=1).astype(np.int64)
    dist = np.take_along_axis(pd_, order, axis=1)
    return (nn[0], dist[0]) if single else (nn, dist)


def standardize(X) -> np.ndarray:
    """Each dimension z-scored over the objects (a zero-variance dimension is only centred).

    Why: mean-pooled transformer states share a large common direction (every object's vector points
    nearly the same way, cosine distances ~1e-4), and a few high-variance dimensions dominate the rest;
    centring and scaling lets neighbours and UMAP see the dimensions that differ between objects."""
    X = _as_matrix(X).astype(np.float64)
    std = X.std(0)
    return ((X - X.mean(0)) / np.where(std > 1e-12, std, 1.0)).astype(np.float32)


def knn_accuracy(X, labels, k: int = 10, metric: str = "cosine", chunk: int = 2048) -> float:
    """Leave-one-out k-nearest-neighbour accuracy of ``labels`` on ``X`` [N, D] (majority vote, ties
    to the nearest): how well neighbours on a map input share a class, a cheap check of an embedding.
    Objects whose label is missing (None / NaN / "") are neither queried nor voted."""
    X = _as_matrix(X)
    labels = np.asarray(labels, dtype=object)
    known = np.array([not pd.isna(lab) and str(lab) != "" for lab in labels])
    X, labels = X[known], labels[known].astype(str)
    if len(X) < k + 1:
        raise LcdashError(f"kNN accuracy needs more than k={k} labelled objects, got {len(X)}")
    classes, y = np.unique(labels, return_inverse=True)
    hits = 0
    for lo in range(0, len(X), chunk):
        idx = np.arange(lo, min(lo + chunk, len(X)))
        nn, _ = nearest_neighbours(X, idx, k=k, metric=metric)
        votes = np.zeros((len(idx), len(classes)))
        # weights 1 + tiny rank bonus: a tie goes to the class of the nearer neighbours
        np.add.at(votes, (np.repeat(np.arange(len(idx)), k), y[nn].ravel()),
                  np.tile(1.0 + 1e-6 * np.arange(k, 0, -1), len(idx)))
        hits += int((votes.argmax(1) == y[idx]).sum())
    return hits / len(X)


def map_input(layers, kind: str = "weighted", weights=None) -> np.ndarray:
    """What the map (UMAP) and the nearest neighbours read: `select_embedding`, then `standardize`.

    Measured with kNN(10) accuracy on the demo survey (bench/embedding_quality.py,
    docs/results/embeddings.md): standardising gains 1-5 points on the period-folded encoders
    (shipped demo encoder 0.828 -> 0.845) and loses 3 on the zero-shot macho_a0 (0.533 -> 0.502);
    the map follows the default encoder."""
    return standardize(select_embedding(layers, kind, weights))


def embedding_knn(store, encoder: str, kind: str = "weighted", k: int = 10, band: str | None = None) -> dict:
    """kNN(k) accuracy of an encoder's map input on the store's labels:
    {"knn": float | None, "n_labelled": int, "n_classes": int} (None when fewer than k + 1 labels or
    fewer than 2 classes)."""
    from lcdash.store.embeddings import load_embeddings

    oids, _, layers = load_embeddings(store, encoder, band=band)
    if len(oids) == 0:
        return {"knn": None, "n_labelled": 0, "n_classes": 0}
    labels = store.objects(oids=oids, columns=["oid", "label"]).set_index("oid")["label"].reindex(oids)
    known = labels.notna().to_numpy()
    n_classes = int(labels[known].nunique())
    if known.sum() <= k or n_classes < 2:
        return {"knn": None, "n_labelled": int(known.sum()), "n_classes": n_classes}
    X = map_input(layers[known], kind)
    return {"knn": knn_accuracy(X, labels.to_numpy(object)[known], k=k), "n_labelled": int(known.sum()),
            "n_classes": n_classes}


# ------------------------------------------------------------------------------------------------
# projection at scale: fit on a sample, transform the rest in batches
# ------------------------------------------------------------------------------------------------
#: Above this many points `project` fits UMAP on a random sample and places the rest with the fitted
#: model (`umap_project_sampled`). A full fit's neighbour graph and optimisation grow with N (hours and
#: many GB at a million points on 2 cores); the sampled fit costs a fixed fit plus a transform that is
#: linear in N with bounded memory (bench/million_bench.py, docs/results/million.md).
SAMPLED_FIT_ABOVE = 100_000
#: Points in the sampled fit, and points placed per `transform` call.
FIT_SAMPLE = 30_000
TRANSFORM_BATCH = 20_000


def sampled_fit_params(n: int, sample_size: int | None = None, threshold: int | None = None,
                       seed: int = 0, batch_size: int | None = None) -> dict | None:
    """The sampled-fit settings `project` uses for n points (recorded with the projection under
    params["sampled_fit"]), or None when n is small enough for a full UMAP fit."""
    threshold = SAMPLED_FIT_ABOVE if threshold is None else int(threshold)
    if n <= threshold:
        return None
    size = min(int(sample_size or FIT_SAMPLE), n)
    return {"sample_size": size, "sample_seed": int(seed), "threshold": threshold,
            "transform_batch": int(batch_size or TRANSFORM_BATCH)}


def project(X, n_neighbors: int = 15, min_dist: float = 0.1, metric: str = "cosine", seed: int = 0,
            progress: Progress | None = None, sampled_fit: dict | None = None) -> np.ndarray:
    """UMAP of X [N, D] -> float32 [N, 2]: a full fit (`umap_project`), or, when `sampled_fit` (from
    `sampled_fit_params`) is given, a fit on a sample and a batched transform of the rest."""
    if not sampled_fit:
        return umap_project(X, n_neighbors, min_dist, metric, seed, progress)
    return umap_project_sampled(X, n_neighbors, min_dist, metric, seed, progress,
                                sample_size=sampled_fit["sample_size"],
                                sample_seed=sampled_fit.get("sample_seed", seed),
                                batch_size=sampled_fit.get("transform_batch", TRANSFORM_BATCH))


def umap_project_sampled(X, n_neighbors: int = 15, min_dist: float = 0.1, metric: str = "cosine",
                         seed: int = 0, progress: Progress | None = None, sample_size: int = FIT_SAMPLE,
                         sample_seed: int = 0, batch_size: int = TRANSFORM_BATCH) -> np.ndarray:
    """UMAP fitted on `sample_size` random rows of X, then `transform` of the other rows `batch_size`
    at a time (each placed against the fitted sample's neighbour index and layout, the sample keeping
    its fitted coordinates). Time and memory: one fit of the sample plus O(batch) per step, so a
    million points stay within the fit's memory. Progress: (done points, N, message)."""
    X = _as_matrix(X)
    n = X.shape[0]
    size = int(min(sample_size, n))
    if size < 3 * int(n_neighbors):
        raise LcdashError(f"a sampled UMAP fit needs at least {3 * int(n_neighbors)} sample points, "
                          f"got {size}")
    if int(batch_size) < 1:
        raise LcdashError(f"transform batch size must be at least 1, got {batch_size}")
    rng = np.random.default_rng(int(sample_seed))
    sample = np.sort(rng.choice(n, size=size, replace=False))
    rest = np.setdiff1d(np.arange(n), sample, assume_unique=True)
    if progress:
        progress(0, n, f"UMAP fit on a sample of {size:,} of {n:,} points")
    _numba_cache()
    with _cached_numba():
        import umap

        reducer = _reducer(umap, size, metric, int(n_neighbors), float(min_dist), int(seed))
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*(cache|precomputed|n_jobs|transform).*")
                xy = np.empty((n, 2), np.float32)
                xy[sample] = reducer.fit_transform(X[sample])
                done = size
                if progress:
                    progress(done, n, f"fitted {size:,} points; placing the other {rest.size:,}")
                for lo in range(0, rest.size, int(batch_size)):
                    idx = rest[lo:lo + int(batch_size)]
                    xy[idx] = reducer.transform(X[idx])
                    done += idx.size
                    if progress:
                        progress(done, n, f"placed {done:,} of {n:,} points")
        except ValueError as exc:
            raise LcdashError(f"UMAP failed: {exc}") from exc
    if not np.isfinite(xy).all():
        raise LcdashError("UMAP transform produced non-finite coordinates")
    return xy


def _reducer(umap, n: int, metric: str, n_neighbors: int, min_dist: float, seed: int):
    return umap.UMAP(
        n_components=2, n_neighbors=min(n_neighbors, n - 1), min_dist=min_dist, metric=metric,
        random_state=seed, init="spectral" if n > 2 * n_neighbors else "random", low_memory=True,
        n_jobs=1)


def map_input_chunks(chunks, kind: str = "weighted", weights=None) -> tuple[list, np.ndarray]:
    """`map_input` over an iterable of (keys, layers [n, L+1, d]) chunks, holding one chunk of
    per-layer embeddings at a time: [N, d] float32 selected vectors, then standardised in place.
    Returns (the chunks' keys in order, X). At a million objects of 6 x 128 this holds 0.5 GB (X)
    instead of the 3 GB of all layers."""
    keys, parts = [], []
    for k, layers in chunks:
        keys.append(k)
        parts.append(np.asarray(select_embedding(layers, kind, weights), np.float32))
    if not parts:
        raise LcdashError("no embeddings to project")
    X = np.concatenate(parts)
    del parts
    X = _as_matrix(X)
    step = 65_536  # float64 sums by blocks (two passes, as X.std): no float64 copy of X
    mean = sum(X[lo:lo + step].astype(np.float64).sum(0) for lo in range(0, X.shape[0], step))
    mean = mean / X.shape[0]
    var = sum(((X[lo:lo + step].astype(np.float64) - mean) ** 2).sum(0) for lo in range(0, X.shape[0], step))
    std = np.sqrt(var / X.shape[0])
    scale = np.where(std > 1e-12, std, 1.0)
    for lo in range(0, X.shape[0], step):
        X[lo:lo + step] = ((X[lo:lo + step] - mean) / scale).astype(np.float32)
    return keys, X
