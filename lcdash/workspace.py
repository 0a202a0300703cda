"""First start and the app's working state: where the store lives, the demo store, the default
encoder, the background jobs that turn a fresh clone into a coloured UMAP, and saved selections.

No Streamlit here: the app calls these functions, and so can tests and the CLI.

The first start does only fast things in the app process (simulate + ingest the demo survey, register
the shipped encoder) and leaves the slow ones (embedding, UMAP) to job workers, queued in order by
`advance`: embed first, then project as soon as the embeddings are stored. Only the demo store gets
this (`is_demo_store`): a user's own store (`LCDASH_DB`) gets nothing computed unasked. UMAP's numba
kernels are compiled once at install time (`warm_numba_cache`, run by `make install`), so the first
map does not wait for the compiler; whichever encoder is shipped in data/encoders/astromer2-demo is used.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from lcdash.errors import LcdashError
from lcdash.jobs import JobManager
from lcdash.jobstates import ACTIVE_STATES
from lcdash.periods import FINDER_VERSION, PeriodResult, find_period
from lcdash.projection import umap_project
from lcdash.store import Store, embeddings, projections
from lcdash.store import labels as label_store
from lcdash.store.demo import create_demo_store
from lcdash.store.embeddings import default_encoder_dir
from lcdash.store.meta import get_meta, set_meta
from lcdash.store.results import list_runs, load_predictions
from lcdash.tasks import KINDS

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"
DEFAULT_DB = DATA_DIR / "lcdash.duckdb"
DEFAULT_ENCODER_NAME = "astromer2-logpe-folded-demo"
DEMO_OBJECTS = 2000
DEMO_SEED = 0
#: The projection queued at first start (UMAP on the layer-weighted embedding, uniform weights).
FIRST_PROJECTION = {"embedding": "weighted", "n_neighbors": 15, "min_dist": 0.1, "metric": "cosine",
                    "seed": 0}


def first_jobs_enabled() -> bool:
    """Whether the app queues the first-start jobs by itself (`LCDASH_FIRST_JOBS=0` turns it off, for
    tests that must not spawn workers)."""
    return os.environ.get("LCDASH_FIRST_JOBS", "1").strip() not in ("0", "false", "no", "")


def store_path() -> Path:
    """The store the app opens: `$LCDASH_DB`, else `data/lcdash.duckdb` in the checkout."""
    env = os.environ.get("LCDASH_DB")
    return Path(env).expanduser().resolve() if env else DEFAULT_DB


def configure_numba_cache(folder: Path | None = None) -> Path:
    """Point numba's on-disk cache at a writable folder (default `data/numba_cache`), so UMAP's
    ~30 s compilation is paid once per checkout rather than once per worker process.

    Must run before numba is imported; spawned job workers inherit it through the environment.
    An explicit `NUMBA_CACHE_DIR` in the environment wins.
    """
    folder = Path(os.environ.get("NUMBA_CACHE_DIR") or folder or DATA_DIR / "numba_cache")
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    return folder


def warm_numba_cache(folder: Path | None = None) -> float:
    """Compile UMAP's numba kernels once into the on-disk cache (`make install` runs this), so the
    first map of a fresh start loads them instead of compiling for ~30-60 s. Returns the seconds taken.

    A tiny random UMAP through `lcdash.projection.umap_project` compiles the same specialisations
    the app's projection jobs use (float32 input, spectral initialisation, both metrics).
    """
    configure_numba_cache(folder)
    t0 = time.monotonic()
    X = np.random.default_rng(0).normal(size=(1000, 8)).astype(np.float32)
    for metric in ("cosine", "euclidean"):
        umap_project(X, n_neighbors=15, min_dist=0.1, metric=metric, seed=0)
    return time.monotonic() - t0


@dataclass
class StartReport:
    """What `bootstrap` did, for the app to show."""

    path: Path
    created: bool = False
    encoder: str | None = None
    jobs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def open_store(path: Path | str | None = None, n_objects: int = DEMO_OBJECTS, seed: int = DEMO_SEED):
    """Open the store at `path` (default `store_path()`), creating the synthetic demo store when the
    file does not exist yet. Returns (store, created)."""
    path = Path(path) if path is not None else store_path()
    created = False
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        made = create_demo_store(path, n_objects=n_objects, seed=seed)
        store = made if isinstance(made, Store) else Store(path)
        set_meta(store, DEMO_KEY, "1")
        return store, True
    return Store(path), created


#: meta key marking a store that the app created as the synthetic demo store.
DEMO_KEY = "lcdash:demo_store"


def is_demo_store(store, path: Path | str | None = None) -> bool:
    """Whether `store` is the app's own demo store: created by `open_store` (marked in `meta`), or
    the checkout's default `data/lcdash.duckdb`. Only there does the app register the shipped encoder
    and queue embeddings and a UMAP by itself; a user's store gets nothing unasked."""
    if get_meta(store, DEMO_KEY) is not None:
        return True
    return path is not None and Path(path).resolve() == DEFAULT_DB.resolve()


def shipped_encoder_name() -> str:
    """The shipped encoder's folder under data/encoders: DEFAULT_ENCODER_NAME, else the first holding
    a model.safetensors (a demo encoder shipped under another name works the same)."""
    if (default_encoder_dir(DEFAULT_ENCODER_NAME) / "model.safetensors").exists():
        return DEFAULT_ENCODER_NAME
    root = default_encoder_dir(DEFAULT_ENCODER_NAME).parent
    found = sorted(d.name for d in root.glob("*") if (d / "model.safetensors").exists())
    return found[0] if found else DEFAULT_ENCODER_NAME


def ensure_default_encoder(store) -> str | None:
    """Register the shipped default encoder (data/encoders/, see `shipped_encoder_name`) if present;
    return its name, or None when it is neither registered nor shipped."""
    name = shipped_encoder_name()
    if name in _encoder_names(store):
        return name
    made = embeddings.register_default_encoder(store, name)
    return name if made is not None else None


def _encoder_names(store) -> list[str]:
    return [str(n) for n in embeddings.list_encoders(store)["name"]]


def has_embeddings(store, encoder: str) -> bool:
    return embeddings.has_embeddings(store, encoder)


def has_projection(store, encoder: str) -> bool:
    return projections.has_projection(store, encoder)


def _active_job(jobs, kind: str, encoder: str) -> str | None:
    """The id of a queued or running job of `kind` for `encoder`, if any."""
    for job in jobs.list(states=list(ACTIVE_STATES), kinds=[kind]):
        if (job.params or {}).get("encoder") == encoder:
            return job.job_id
    return None


def _failed_before(jobs, kind: str, encoder: str) -> bool:
    """True when the last job of `kind` for `encoder` failed: do not loop resubmitting it."""
    mine = [j for j in jobs.list(kinds=[kind]) if (j.params or {}).get("encoder") == encoder]
    last = max(mine, key=lambda j: str(j.created_at), default=None)
    return last is not None and last.state == "failed"


def advance(store, jobs, encoder: str | None = DEFAULT_ENCODER_NAME) -> list[str]:
    """Queue the next first-start job for `encoder`: embeddings when it has none, then the UMAP
    projection once embeddings exist. Idempotent (never queues a second copy of an active job, never
    retries a failed one); returns the ids queued now. Cheap enough to call on every poll."""
    if encoder is None or not first_jobs_enabled() or encoder not in _encoder_names(store):
        return []
    queued: list[str] = []
    if not has_embeddings(store, encoder):
        if not _active_job(jobs, "embed", encoder) and not _failed_before(jobs, "embed", encoder):
            queued.append(jobs.submit("embed", {"encoder": encoder}))
    elif not has_projection(store, encoder):
        if not _active_job(jobs, "project", encoder) and not _failed_before(jobs, "project", encoder):
            queued.append(jobs.submit("project", {"encoder": encoder, **FIRST_PROJECTION}))
    return queued


def bootstrap(path: Path | str | None = None, jobs_factory=None, queue_jobs: bool = True,
              n_objects: int = DEMO_OBJECTS, seed: int = DEMO_SEED):
    """Everything the app needs on start: the store (demo store on a fresh clone), the default
    encoder registered, and the embed/project jobs queued. Returns (store, jobs, StartReport);
    `jobs_factory(store)` builds the JobManager (default `lcdash.jobs.JobManager`)."""
    configure_numba_cache()
    path = Path(path) if path is not None else store_path()
    store, created = open_store(path, n_objects=n_objects, seed=seed)
    report = StartReport(path=path, created=created)
    if created:
        report.notes.append(f"created the synthetic demo store ({n_objects} objects)")
    if is_demo_store(store, path):  # a user's own store gets nothing demo-specific unasked
        try:
            report.encoder = ensure_default_encoder(store)
        except LcdashError as exc:  # a broken shipped encoder must not keep the app from starting
            report.notes.append(f"default encoder not registered: {exc}")
    if jobs_factory is None:
        jobs_factory = partial(JobManager, kinds=KINDS)
    jobs = jobs_factory(store)
    if queue_jobs and first_jobs_enabled() and report.encoder:
        report.jobs = advance(store, jobs, report.encoder)
    return store, jobs, report


def pca_preview(X: np.ndarray) -> np.ndarray:
    """First two principal components of X [N, D] (float32 [N, 2]): an instant stand-in for the
    UMAP while its job runs. Always label it as PCA where shown."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2:
        raise LcdashError(f"PCA needs at least two embedded objects, got array of shape {X.shape}")
    Xc = X - X.mean(axis=0)
    # The top right-singular vectors of the centred data; thin SVD of [N, D] is fast for D <= ~2k.
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    out = Xc @ vt[:2].T
    if out.shape[1] < 2:
        out = np.column_stack([out, np.zeros(len(out))])
    return out.astype(np.float32)


# --- selections: kept in the store so a browser refresh (or another page) finds them again -----

_SEL_PREFIX = "selection:"


def save_selection(store, oids, token: str | None = None) -> str:
    """Store a list of object ids under a short random token (put the token in st.query_params)."""
    token = token or secrets.token_urlsafe(6)
    value = json.dumps([int(o) for o in oids])
    set_meta(store, _SEL_PREFIX + token, value)
    return token


def load_selection(store, token: str | None) -> list[int]:
    """The object ids saved under `token` ([] when unknown or empty)."""
    if not token:
        return []
    value = get_meta(store, _SEL_PREFIX + str(token))
    return [int(o) for o in json.loads(value)] if value else []


# --- what the Explore page shows: stored projections joined with object columns ------------------

#: Object columns offered for colouring the scatter.
OBJECT_COLOURS = ("label", "survey", "period", "n_obs", "synthetic", "ra", "dec")


def encoders_with_projection(store) -> list[str]:
    """Encoders that have at least one stored projection."""
    return sorted(set(projections.list_projections(store)["encoder"]))


def find_projection(store, encoder: str, embedding: str, params: dict) -> int | None:
    """The newest stored projection of (encoder, embedding) with exactly these UMAP parameters."""
    return projections.find_projection(store, encoder, embedding, params)


def projection_points(store, proj_id: int):
    """oid, band, x, y of a stored projection joined with the object columns (object_id and
    OBJECT_COLOURS): one row per (object, band). (`store.projections.load_projection` gives fewer
    object columns; the scatter wants them all in one read.)"""
    return projections.projection_points(store, proj_id)


def colour_options(store, max_runs: int = 5) -> list[str]:
    """What the scatter can be coloured by: object columns, each few-shot label set ("set: NAME"),
    and the newest probe runs' predictions ("prediction: RUN", "confidence: RUN")."""
    out = list(OBJECT_COLOURS)
    out += [f"set: {n}" for n in label_store.list_sets(store)["name"]]

    for run_id in list_runs(store, kind="probe")["run_id"].head(max_runs):
        out += [f"prediction: {run_id}", f"confidence: {run_id}"]
    return out


def colour_values(store, points, option: str):
    """The values of colour `option` for each row of `points` (oid, band[, object columns]), as a
    Series aligned with `points`; missing values are NA."""
    if option in points.columns:
        return points[option]
    kind, _, name = option.partition(": ")
    if kind == "set":
        lab = label_store.get_labels(store, name)
        return points["oid"].map(dict(zip(lab["oid"], lab["label"], strict=True))).rename(option)
    if kind in ("prediction", "confidence"):
        pred = load_predictions(store, name)
        col = "label" if kind == "prediction" else "confidence"
        # by (oid, band) where the band matches, else the object's first predicted band
        exact = pd.Series(pred[col].to_numpy(), index=pd.MultiIndex.from_arrays([pred["oid"], pred["band"]]))
        first = pred.drop_duplicates("oid").set_index("oid")[col]
        key = pd.MultiIndex.from_arrays([points["oid"], points["band"]])
        values = pd.Series(exact.reindex(key).to_numpy(), index=points.index)
        return values.fillna(points["oid"].map(first)).rename(option)
    raise LcdashError(f"unknown colour {option!r}")


def map_coverage(store, encoder: str, proj_id: int | None) -> dict:
    """How much of the store a map shows: objects in the store, objects without an `encoder`
    embedding ("unembedded": e.g. uploaded after the embedding job), and embedded objects missing
    from projection `proj_id` ("unmapped": embedded after the map was computed; 0 without a map)."""
    return projections.map_coverage(store, encoder, proj_id)


def colour_label(store, max_runs: int = 5):
    """A `format_func` for `colour_options`: probe runs by what they are (when, which labels) rather
    than by their run id."""
    names = {}
    runs = list_runs(store, kind="probe").head(max_runs)
    for row in runs.to_dict("records"):
        when = pd.Timestamp(row["created_at"]).strftime("%b %d %H:%M")
        names[str(row["run_id"])] = f"probe of {when} ({row['classes']} classes)"

    def label(option: str) -> str:
        kind, _, name = option.partition(": ")
        if kind in ("prediction", "confidence") and name in names:
            return f"{kind}: {names[name]}"
        if kind == "set":
            return f"label set: {name}"
        return option

    return label


# --- what the light-curve viewer shows: the period finder's answer for one object -----------------


@dataclass(frozen=True)
class FoundPeriod:
    """The period finder's answer for one light curve (one band of an object), as the viewer shows it.

    `period` and `reason` are the store's (periods table, this FINDER_VERSION) when it has them
    (`stored`), else those of `result`. `result` is `find_period` on the light curve as it is now
    (a few tens of ms): its ranked candidates and the Fourier model drawn over the fold, which the
    periods table does not keep. The two agree unless the light curve changed after it was stored.
    """

    band: str
    period: float
    reason: str
    stored: bool
    result: PeriodResult

    @property
    def found(self) -> bool:
        return bool(np.isfinite(self.period))

    def model_fits(self, period: float, rtol: float = 1e-6) -> bool:
        """Whether the Fourier model belongs to a fold at `period` (its own period, to `rtol`)."""
        p = self.result.period
        return bool(self.result.found and np.isfinite(period) and period > 0 and abs(period / p - 1) < rtol)

    def choices(self) -> list[tuple[str, float, str]]:
        """(button label, period, help) of each candidate, best first, labels short and distinct
        ("0.53828 d · 2 x LS peak 1"); the stored period comes first when it is not a candidate."""
        out = []
        if self.found and not any(abs(c.period / self.period - 1) < 1e-6 for c in self.result.candidates):
            out.append((f"{self.period:.5g} d · stored", self.period, "the period stored for this curve"))
        for c in self.result.candidates:
            more = "the best" if c.delta_bic == 0 else f"BIC {c.delta_bic:+.1f} against the best"
            out.append((f"{c.period:.5g} d · {c.origin}", c.period, f"{more}; {c.n_harmonics} Fourier terms"))
        return out


def found_periods(store, oid: int) -> list[FoundPeriod]:
    """The period finder's answer for each band of object `oid` (bands in the light curve's order):
    the stored period of this FINDER_VERSION where the store has one, else the one found now."""
    from lcdash.store.periods import read_periods

    lc = store.lightcurve(int(oid))
    stored = read_periods(store, oids=[int(oid)], finder=FINDER_VERSION).set_index("band")
    out = []
    for band in lc.bands:
        sub = lc.select(band)
        result = find_period(sub.time, sub.mag, sub.mag_err)
        if band in stored.index:
            row = stored.loc[band]
            period = float(row["period"]) if pd.notna(row["period"]) else float("nan")
            out.append(FoundPeriod(band, period, str(row["reason"]), True, result))
        else:
            out.append(FoundPeriod(band, result.period, result.reason, False, result))
    return out
