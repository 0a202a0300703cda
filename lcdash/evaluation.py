"""One few-shot evaluation protocol for every classifier (Astromer 2 paper, MODELS.md section 1).

Sampling (`make_splits`), per class, seeded:
- the class is shuffled and cut into `folds` stratified parts; fold k's test set is the first
  `test_per_class` objects of part k (fewer when the class is small: reported), so test sets of
  different folds never share an object;
- the rest of the class is fold k's pool. For each spc a fresh draw from the pool gives the
  validation set, ceil(val_fraction x spc) objects *per class* (the paper takes 0.2 x spc objects
  in total; per class keeps every class in the early-stopping loss even at 20 spc), then the
  training set, spc objects. "Drawn with replacement" is read as independent draws per fold and
  spc (one object may train several folds), without duplicates inside one set; when the pool is
  too small both are capped (validation keeps val_fraction / (1 + val_fraction) of the pool) and
  the caps are reported in `EvalResult.selection["sampling"]`.
- no object is ever in both the training (or validation) and the test set of one fold.

Scoring: "object" (default) scores each object once: the probe reads the object's embedding
averaged over its 200-observation windows, the other models read the whole light curve.
"window" splits every light curve into Astromer windows first (objects are split, never windows)
and scores windows, as the paper does; it also reports object scores from mean window
probabilities in each record's `extra`.

`run_evaluation` fits every model x spc x fold and returns one record per fit (macro F1 /
precision / recall, accuracy, per-class report, confusion matrix, training seconds, inference
light curves per second). `run_probe` runs the protocol for the probe only, then fits on all the
labelled data and predicts the rest (the app's Probe page).
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from lcdash import scores
from lcdash.classifiers import MODEL_NAMES, make_classifier
from lcdash.embed import embed_batch
from lcdash.errors import LcdashError, ModelError, ValidationError
from lcdash.features import extract_features
from lcdash.jsonio import json_default
from lcdash.lightcurve import LightCurveBatch, fold_batch
from lcdash.periods import best_periods
from lcdash.progress import Retotal, is_cancelled
from lcdash.train import TrainConfig, finetune
from lcdash.weights import load_encoder
from lcdash.windows import windows_of_batch

SCORINGS = ("object", "window")
SEQUENCE_INPUTS = ("raw", "folded")
PERIOD_SOURCES = ("catalogue", "found")
SEQUENCE_MODELS = ("rnn", "cnn")
HYBRID = "probe+features"  # the probe's embedding + the RF's features (classifiers.HybridProbe)


@dataclass
class EvalConfig:
    models: list[str] = field(default_factory=lambda: list(MODEL_NAMES))
    spc: list[int] = field(default_factory=lambda: [20, 100, 500])
    folds: int = 3
    test_per_class: int = 100
    val_fraction: float = 0.2  # validation objects per class = ceil(val_fraction * spc)
    seed: int = 0
    scoring: str = "object"  # "object" | "window"
    classes: list[str] | None = None  # None: every class with enough objects
    band: str | None = None  # recorded; the data selection happens where the batch is read
    max_epochs: int | dict | None = None  # cap on the neural models' epochs, or {model: cap}
    patience: int | None = None  # override every neural model's early-stopping patience
    device: str | None = None  # None: lcdash.device.pick_device()
    threads: int | None = None  # torch CPU threads (None: leave torch's default)
    n_jobs: int | None = None  # feature extraction / Random Forest threads
    probe_head: str = "mlp"  # "mlp" | "logreg"
    probe_pooling: str = "weighted"  # "weighted" | "last"
    rf_trees: int = 500
    class_weight: str = "balanced"  # every model: "balanced" or "none" (unweighted loss / forest)
    # what the RNN and CNN read: "raw" dt/dm sequences (the papers) or "folded" at each object's
    # period: time -> phase x period (lcdash.lightcurve.fold_batch)
    sequence_input: str = "raw"
    # where every fold's period comes from (folded RNN / CNN input, folded encoders): "catalogue"
    # (the catalogue's, found from the light curve where it has none) or "found" (the light curve
    # alone, lcdash.periods: what a survey without a catalogue gets; the headline rows)
    periods: str = "catalogue"
    finetune: bool = False  # masked fine-tuning of the encoder on each training split (probe)
    finetune_epochs: int | None = None
    # across surveys (Aguirre et al. 2019): train on these surveys, score on those (EvalData.surveys
    # gives each object's survey); labels pass through label_map (a dict, "default", "none" or a
    # JSON file; see DEFAULT_LABEL_MAP). None: the single-survey protocol.
    train_surveys: list[str] | None = None
    score_surveys: list[str] | None = None
    label_map: dict | str | None = None

    def validate(self) -> EvalConfig:
        bad = [m for m in self.models if m not in MODEL_NAMES]
        if bad or not self.models:
            raise ValidationError(f"unknown models {bad}: choose from {', '.join(MODEL_NAMES)}")
        if not self.spc or any(int(s) < 1 for s in self.spc):
            raise ValidationError(f"samples per class must be positive integers, got {self.spc}")
        if self.folds < 1:
            raise ValidationError(f"folds must be at least 1, got {self.folds}")
        if self.test_per_class < 1:
            raise ValidationError(f"test objects per class must be at least 1, got {self.test_per_class}")
        if not 0 < self.val_fraction < 1:
            raise ValidationError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.periods not in PERIOD_SOURCES:
            raise ValidationError(f"periods must be one of {PERIOD_SOURCES}, got {self.periods!r}")
        if self.sequence_input not in SEQUENCE_INPUTS:
            raise ValidationError(
                f"sequence_input must be one of {SEQUENCE_INPUTS}, got {self.sequence_input!r}"
            )
        if self.class_weight not in ("balanced", "none"):
            raise ValidationError(f"class_weight must be 'balanced' or 'none', got {self.class_weight!r}")
        if self.scoring not in SCORINGS:
            raise ValidationError(f"scoring must be one of {SCORINGS}, got {self.scoring!r}")
        if bool(self.train_surveys) != bool(self.score_surveys):
            raise ValidationError("give both the surveys to train on and the surveys to score on")
        if self.train_surveys:
            self.label_map = load_label_map(self.label_map)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EvalConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def model_params(self, name: str) -> dict:
        """Constructor arguments of one model under this config."""
        weight = None if self.class_weight == "none" else self.class_weight
        params = dict(device=self.device, seed=self.seed, class_weight=weight)
        if self.patience is not None:
            params["patience"] = self.patience
        if name in ("probe", HYBRID):
            params.update(head=self.probe_head, pooling=self.probe_pooling)
        if name == "rf":
            params.update(n_estimators=self.rf_trees, n_jobs=self.n_jobs)
            params.pop("device")
        cap = self.max_epochs.get(name) if isinstance(self.max_epochs, dict) else self.max_epochs
        if cap is not None and name != "rf":
            params["max_epochs"] = min(make_classifier(name).max_epochs, int(cap))
        return params


# ------------------------------------------------------------------------------------------------
# data handed to a worker
# ------------------------------------------------------------------------------------------------
@dataclass
class EvalData:
    """What an evaluation needs, without a store: light curves, labels, optional embeddings.

    `layers`: per-object per-layer mean embeddings [N, L+1, d] aligned with `batch` rows (needed
    for the probe); `encoder`: what produced them (name, dir, arch, n_layers, d_model, source);
    `periods`: catalogue periods in days (NaN where unknown), for folded sequence input;
    `surveys`: each object's survey, for training across surveys.
    """

    batch: LightCurveBatch
    labels: np.ndarray
    layers: np.ndarray | None = None
    encoder: dict | None = None
    periods: np.ndarray | None = None
    surveys: np.ndarray | None = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels).astype(str)
        n = len(self.batch.length)
        if len(self.labels) != n:
            raise ValidationError(f"{n} light curves but {len(self.labels)} labels")
        if self.layers is not None and len(self.layers) != n:
            raise ValidationError(f"{n} light curves but {len(self.layers)} embeddings")
        if self.periods is not None:
            self.periods = np.asarray(self.periods, dtype=np.float64)
            if len(self.periods) != n:
                raise ValidationError(f"{n} light curves but {len(self.periods)} periods")
        if self.surveys is not None:
            self.surveys = np.asarray(self.surveys).astype(str)
            if len(self.surveys) != n:
                raise ValidationError(f"{n} light curves but {len(self.surveys)} surveys")

    def save(self, folder) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.batch.save(folder / "batch.npz")
        np.save(folder / "labels.npy", self.labels)
        if self.layers is not None:
            np.save(folder / "layers.npy", np.asarray(self.layers, dtype=np.float32))
        if self.periods is not None:
            np.save(folder / "periods.npy", self.periods)
        if self.surveys is not None:
            np.save(folder / "surveys.npy", np.asarray(self.surveys, dtype=str))
        (folder / "encoder.json").write_text(json.dumps(self.encoder))
        return folder

    @classmethod
    def load(cls, folder) -> EvalData:
        folder = Path(folder)
        if not (folder / "batch.npz").exists():
            raise LcdashError(f"no evaluation data in {folder} (batch.npz is missing)")
        batch = LightCurveBatch.load(folder / "batch.npz")
        labels = np.load(folder / "labels.npy", allow_pickle=False)
        layers = np.load(folder / "layers.npy") if (folder / "layers.npy").exists() else None
        periods = np.load(folder / "periods.npy") if (folder / "periods.npy").exists() else None
        enc = folder / "encoder.json"
        encoder = json.loads(enc.read_text()) if enc.exists() else None
        sv = folder / "surveys.npy"
        surveys = np.load(sv, allow_pickle=False) if sv.exists() else None
        return cls(
            batch=batch, labels=labels, layers=layers, encoder=encoder, periods=periods, surveys=surveys
        )


# ------------------------------------------------------------------------------------------------
# sampling
# ------------------------------------------------------------------------------------------------
@dataclass
class Split:
    fold: int
    spc: int
    train: np.ndarray  # object indices
    val: np.ndarray
    test: np.ndarray


def min_class_size(folds: int) -> int:
    """Fewest objects a class needs: one test object per fold, one to train, one to validate."""
    return folds + 2


def make_splits(labels, folds: int, spc_list, test_per_class: int, val_fraction: float = 0.2, seed: int = 0):
    """The protocol's index sets -> (list of Split, sampling report {class: {...}}).

    Every class in `labels` must have at least `min_class_size(folds)` objects.
    """
    labels = np.asarray(labels)
    classes = sorted(str(c) for c in np.unique(labels))
    rng = np.random.default_rng(seed)
    parts = {}
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) < min_class_size(folds):
            raise ValidationError(
                f"class {c!r} has {len(members)} objects; {min_class_size(folds)} are needed "
                f"for {folds} folds"
            )
        parts[c] = np.array_split(rng.permutation(members), folds)
    report = {
        c: {"n": int((labels == c).sum()), "test": [], "train": {}, "val": {}, "capped": False}
        for c in classes
    }
    splits = []
    for k in range(folds):
        test_sets, pools = {}, {}
        for c in classes:
            test = parts[c][k][:test_per_class]
            test_sets[c] = test
            pools[c] = np.setdiff1d(np.flatnonzero(labels == c), test)
            report[c]["test"].append(len(test))
            report[c]["capped"] |= len(test) < test_per_class
        for spc in spc_list:
            spc = int(spc)
            draw = np.random.default_rng([seed, k, spc])
            train, val = [], []
            for c in classes:
                pool = draw.permutation(pools[c])
                n_val = math.ceil(val_fraction * spc)
                if len(pool) < spc + n_val:
                    n_val = max(1, int(len(pool) * val_fraction / (1 + val_fraction)))
                n_train = min(spc, len(pool) - n_val)
                val.append(pool[:n_val])
                train.append(pool[n_val : n_val + n_train])
                report[c]["train"].setdefault(spc, []).append(n_train)
                report[c]["val"].setdefault(spc, []).append(n_val)
                report[c]["capped"] |= n_train < spc
            splits.append(
                Split(
                    k,
                    spc,
                    np.sort(np.concatenate(train)),
                    np.sort(np.concatenate(val)),
                    np.sort(np.concatenate(list(test_sets.values()))),
                )
            )
    return splits, report


# ------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------
# --- the protocol seen from the app: what the labels allow, which fit a running job is in


def fitting_protocol(counts: dict, classes, folds: int, spc_choices, want_test: int = 100):
    """What the protocol can honour on these label counts: (test objects per class, spc choices).

    Fold k's test set comes from the k-th of `folds` parts of each class, so at most
    n_min // folds test objects per class exist without a cap; the rest of the class must hold
    spc training + ceil(0.2 x spc) validation objects. The demo store (222 per class, 3 folds) gives
    74 test objects and spc up to 100."""
    sizes = [int(counts[c]) for c in (classes or counts) if c in counts]
    if not sizes:
        return want_test, list(spc_choices)
    n_min = min(sizes)
    test = max(1, min(want_test, n_min // max(int(folds), 1)))
    fits = [s for s in spc_choices if s + math.ceil(0.2 * s) <= n_min - test]
    return test, fits or [min(spc_choices)]


def label_problems(counts: dict, classes, source: str) -> list[str]:
    """Plain-text reasons a probe or comparison cannot run on these labels (checked before the job
    starts): fewer than two classes, or a class too small for one test, training and validation
    object."""
    chosen = [c for c in (classes or list(counts)) if c in counts]
    what = "the catalogue labels" if source == "catalogue" else f"label set {source}"
    if len(chosen) < 2:
        have = ", ".join(f"{c} ({counts[c]})" for c in chosen) or "no labelled objects"
        return [f"A classifier needs at least two classes; {what} has {len(chosen)}: {have}. "
                "Label objects of another class on the Label page, or pick other labels."]
    small = [f"{c} ({counts[c]})" for c in chosen if counts[c] < 3]
    if small:
        return [f"Every class needs at least 3 labelled objects (one each to test, train and "
                f"validate); too few in {what}: {', '.join(small)}."]
    return []


def fit_in_progress(job) -> str | None:
    """What the comparison is fitting now. The job reports after each fit (its message then names the
    fit that just ended), and fits run fold by fold, spc by spc, model by model, so the next one
    follows from the step count."""
    params = job.params or {}
    models, spcs, folds = params.get("models") or [], sorted(params.get("spc") or []), params.get("folds")
    total = job.total or 0
    if not (models and spcs and folds) or job.state != "running":
        return None
    if not total:
        return "loading libraries and preparing the inputs (RF features, folded curves, embeddings)"
    if job.step >= total:
        return "writing the report"
    fit, n = int(job.step), len(models)
    model, spc = models[fit % n], spcs[(fit // n) % len(spcs)]
    fold = fit // (n * len(spcs))
    last = f" · last finished: {job.message}" if fit else ""
    return (f"training {scores.title(model)} (spc {spc}, fold {fold + 1} of {folds}) · "
            f"fit {fit + 1} of {total}{last}")


def metrics(y_true, y_pred, classes) -> dict:
    """Macro F1 / precision / recall, accuracy, per-class report and confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    classes = list(classes)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    return {
        "macro_f1": float(np.mean(f)),
        "macro_precision": float(np.mean(p)),
        "macro_recall": float(np.mean(r)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
        "confusion": {
            "classes": classes,
            "matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
        },
    }


def entropy(proba: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of class probabilities."""
    p = np.clip(np.asarray(proba, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(1)


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------
RECORD_COLUMNS = [
    "model",
    "spc",
    "fold",
    "macro_f1",
    "macro_precision",
    "macro_recall",
    "accuracy",
    "per_class",
    "confusion",
    "train_seconds",
    "infer_lc_per_s",
    "extra",
]


@dataclass
class EvalResult:
    records: list[dict]
    config: dict
    selection: dict
    timings: dict
    versions: dict = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """One row per model x spc x fold."""
        return pd.DataFrame(self.records, columns=RECORD_COLUMNS if not self.records else None)

    def summary(self) -> pd.DataFrame:
        """Mean and std over folds per model x spc."""
        df = self.frame()
        if df.empty:
            return pd.DataFrame()
        cols = ["macro_f1", "macro_precision", "macro_recall", "accuracy", "train_seconds", "infer_lc_per_s"]
        g = df.groupby(["model", "spc"], sort=False)[cols]
        out = g.mean().add_suffix("_mean").join(g.std(ddof=0).add_suffix("_std"))
        out["folds"] = g.size()
        return out.reset_index()

    def to_dict(self) -> dict:
        return {
            "records": self.records,
            "config": self.config,
            "selection": self.selection,
            "timings": self.timings,
            "versions": self.versions,
        }

    def to_json(self, path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1, default=partial(json_default, fallback=str)))
        return path

    @classmethod
    def from_dict(cls, d: dict) -> EvalResult:
        return cls(d["records"], d["config"], d["selection"], d.get("timings", {}), d.get("versions", {}))

    @classmethod
    def from_json(cls, path) -> EvalResult:
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_run(cls, info: dict, results: pd.DataFrame) -> EvalResult:
        """Rebuild a stored run (`lcdash.store.results.load_run`'s pair) for reports of earlier runs."""
        records = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in
                   results.to_dict("records")]  # fmt: skip
        cfg = dict(info["config"] or {})
        return cls(records, cfg, info["selection"] or {}, info["timings"] or {}, cfg.pop("versions", {}))


def versions() -> dict:
    import sklearn

    out = {"python": platform.python_version(), "numpy": np.__version__, "scikit-learn": sklearn.__version__}
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:
        pass
    try:
        import light_curve

        out["light-curve"] = light_curve.__version__
    except (ImportError, AttributeError):
        pass
    try:
        from lcdash import __version__

        out["lcdash"] = __version__
    except ImportError:
        pass
    return out


# ------------------------------------------------------------------------------------------------
# the protocol
# ------------------------------------------------------------------------------------------------
class _Cancelled(Exception):
    pass


def _notify(progress, step, total, message, metrics_=None):
    if progress is None:
        return
    if is_cancelled(progress):
        raise _Cancelled
    progress(step, total, message, metrics_)


def _select(data: EvalData, cfg: EvalConfig) -> tuple[np.ndarray, dict]:
    """Indices of the objects in the evaluated classes, and what was dropped and why."""
    labels = data.labels
    present = sorted(np.unique(labels))
    wanted = list(cfg.classes) if cfg.classes else present
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ValidationError(f"classes {missing} have no labelled objects; present: {present}")
    counts = {c: int((labels == c).sum()) for c in wanted}
    small = {c: n for c, n in counts.items() if n < min_class_size(cfg.folds)}
    keep = [c for c in wanted if c not in small]
    if len(keep) < 2:
        raise ValidationError(
            f"need at least 2 classes with {min_class_size(cfg.folds)}+ labelled objects, got {counts}"
        )
    idx = np.flatnonzero(np.isin(labels, keep))
    return idx, {"classes": keep, "counts": {c: counts[c] for c in keep}, "dropped_small_classes": small}


def _sample_periods(data: EvalData, idx, owner) -> np.ndarray | None:
    """Catalogue periods of the samples (row r belongs to object owner[r]) for folded encoders."""
    return None if data.periods is None else np.asarray(data.periods, np.float64)[idx][owner]


def _embed(encoder: dict | None, batch, cfg: EvalConfig, periods=None) -> np.ndarray:
    """Per-layer mean embeddings of a batch with the encoder in `encoder["dir"]`."""
    if not encoder or not encoder.get("dir"):
        raise ModelError(
            "the probe needs embeddings: compute them with `python -m lcdash embed` or give the encoder's dir"
        )
    model, _ = load_encoder(encoder["dir"])
    _, layers = embed_batch(model, batch, device=cfg.device, periods=periods)
    return np.asarray(layers, dtype=np.float32)


def run_evaluation(data: EvalData, cfg: EvalConfig, progress=None) -> EvalResult:
    """Fit and score every model x spc x fold (see the module docstring); `progress(step, total,
    message, metrics)` after each fit with the mean macro F1 so far per model and spc; stops early,
    keeping the finished records, when `progress.cancelled` becomes true."""
    cfg.validate()
    t_start = time.perf_counter()
    if cfg.threads:
        import torch

        torch.set_num_threads(int(cfg.threads))
    surveys_obj = None
    if cfg.train_surveys:  # across surveys: mapped labels, per-survey draws
        idx, labels_obj, selection = _select_cross(data, cfg)
        surveys_obj = data.surveys[idx]
        splits, report = make_cross_splits(
            labels_obj, surveys_obj, cfg.train_surveys, cfg.score_surveys, cfg.folds, cfg.spc,
            cfg.test_per_class, cfg.val_fraction, cfg.seed,
        )  # fmt: skip
    else:
        idx, selection = _select(data, cfg)
        labels_obj = data.labels[idx]
        splits, report = make_splits(
            labels_obj, cfg.folds, cfg.spc, cfg.test_per_class, cfg.val_fraction, cfg.seed
        )
    selection.update(
        n_objects=int(len(idx)),
        scoring=cfg.scoring,
        band=cfg.band,
        sampling=report,
        capped_classes=sorted(c for c, r in report.items() if r["capped"]),
    )
    classes = selection["classes"]
    timings: dict = {"prepare_seconds": {}}
    # --- the samples each model reads (row r of X belongs to object owner[r]) ---
    if cfg.scoring == "window":
        batch, owner = windows_of_batch(data.batch, idx)
    else:
        batch, owner = data.batch.take(idx), np.arange(len(idx))
    rows_of = _rows_by_object(owner, len(idx))
    y_rows = labels_obj[owner]
    inputs: dict[str, object] = {}
    prep_rate: dict[str, float] = {}  # samples/s of per-sample preparation counted in inference speed
    cache: dict[str, object] = {}  # embeddings and features, computed once for the models that share them

    def layers():
        if "layers" not in cache:
            if cfg.finetune:
                cache["layers"] = None  # embedded per split, after fine-tuning
            elif cfg.scoring == "object" and data.layers is not None:
                cache["layers"] = np.asarray(data.layers, dtype=np.float32)[idx]
            else:
                cache["layers"] = _embed(data.encoder, batch, cfg, _sample_periods(data, idx, owner))
        return cache["layers"]

    def features():
        if "features" not in cache:
            t0 = time.perf_counter()
            cache["features"] = extract_features(batch, n_jobs=cfg.n_jobs)
            cache["features_rate"] = len(owner) / max(time.perf_counter() - t0, 1e-9)
        return cache["features"]

    for name in cfg.models:
        t0 = time.perf_counter()
        if name in ("probe", HYBRID):
            inputs[name] = layers() if name == "probe" else (layers(), features())
            rate = (data.encoder or {}).get("embed_lc_per_s")
            if rate:
                prep_rate[name] = float(rate)
            if name == HYBRID:  # encoder and feature extraction per curve
                prep_rate[name] = 1.0 / (1.0 / prep_rate.get(name, np.inf) + 1.0 / cache["features_rate"])
        elif name == "rf":
            inputs[name] = features()
            prep_rate[name] = cache["features_rate"]
        elif cfg.sequence_input == "folded":
            folded = next((inputs[m] for m in SEQUENCE_MODELS if m in inputs), None)
            if folded is None:
                folded, selection["periods"] = _folded(data, idx, owner, batch, cfg)
            inputs[name] = folded
        else:
            inputs[name] = batch
        timings["prepare_seconds"][name] = time.perf_counter() - t0

    records: list[dict] = []
    total = len(splits) * len(cfg.models)
    step = 0
    cancelled = False
    try:
        _notify(progress, 0, total, "starting", None)
        for split in splits:
            rows = {part: _rows(rows_of, getattr(split, part)) for part in ("train", "val", "test")}
            for name in cfg.models:
                if is_cancelled(progress):
                    raise _Cancelled
                X = inputs[name]
                if name in ("probe", HYBRID) and cfg.finetune:
                    ft = cache.get(("finetuned", split.spc, split.fold))
                    if ft is None:
                        ft = cache[("finetuned", split.spc, split.fold)] = _finetuned_layers(
                            data, batch, owner, split, cfg)
                    X = ft if name == "probe" else (ft, features())
                record = _fit_one(name, X, y_rows, rows, owner, labels_obj, classes, split, cfg, prep_rate)
                if surveys_obj is not None:  # per-survey scores on each survey's own test objects
                    record["extra"]["per_survey"] = per_survey_metrics(
                        y_rows[rows["test"]], record.pop("_pred"), surveys_obj[owner[rows["test"]]], classes
                    )
                record.pop("_pred", None)
                records.append(record)
                step += 1
                _notify(
                    progress,
                    step,
                    total,
                    f"{name} spc={split.spc} fold={split.fold}: macro F1 {record['macro_f1']:.3f}",
                    _running_means(records),
                )
    except _Cancelled:
        cancelled = True
    timings.update(total_seconds=time.perf_counter() - t_start, cancelled=cancelled)
    config = cfg.to_dict()
    config["model_params"] = {m: _model_params(m, cfg) for m in cfg.models}
    if data.encoder:
        config["encoder"] = data.encoder
    return EvalResult(records, config, selection, timings, versions())


def record_name(model: str, cfg: EvalConfig) -> str:
    """The model's name in results: "rnn-folded" / "cnn-folded" on folded input, so raw and folded
    runs of one model sit side by side in a merged report."""
    return f"{model}-folded" if cfg.sequence_input == "folded" and model in SEQUENCE_MODELS else model


def _folded(data: EvalData, idx, owner, batch, cfg: EvalConfig):
    """`batch` folded at each object's given period (EvalData.periods: the catalogue's, none when
    the run's periods are "found"), or the period found from its light curve (`lcdash.periods`)
    where none is given -> (folded batch, {"catalogue": n, "found": n} objects)."""
    periods = np.full(len(idx), np.nan) if data.periods is None else np.array(data.periods[idx], dtype=float)
    missing = ~(np.isfinite(periods) & (periods > 0))
    if missing.any():
        periods[missing] = best_periods(data.batch.take(idx[missing]), n_jobs=cfg.n_jobs)
    still = ~(np.isfinite(periods) & (periods > 0))
    if still.any():
        raise ValidationError(
            f"{int(still.sum())} light curves have neither a catalogue period nor a period found from "
            "the light curve (too few observations, or constant); use sequence input 'raw' or drop them"
        )
    return fold_batch(batch, periods[owner]), {
        "catalogue": int((~missing).sum()),
        "found": int(missing.sum()),
    }


def _rows_by_object(owner: np.ndarray, n_objects: int) -> list[np.ndarray]:
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(n_objects + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n_objects)]


def _rows(rows_of, objects) -> np.ndarray:
    parts = [rows_of[i] for i in objects]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _subset(X, rows):
    if isinstance(X, tuple):  # probe+features: (layers, features)
        return tuple(_subset(x, rows) for x in X)
    if isinstance(X, np.ndarray):
        return X[rows]
    return X.take(rows)


def _model_params(name: str, cfg: EvalConfig) -> dict:
    est = make_classifier(name, **cfg.model_params(name))
    return {k: v for k, v in est.get_params().items() if isinstance(v, int | float | str | bool | type(None))}


def _fit_one(name, X, y_rows, rows, owner, labels_obj, classes, split, cfg, prep_rate) -> dict:
    est = make_classifier(name, **cfg.model_params(name))
    t0 = time.perf_counter()
    est.fit(_subset(X, rows["train"]), y_rows[rows["train"]], _subset(X, rows["val"]), y_rows[rows["val"]])
    train_seconds = time.perf_counter() - t0
    X_test = _subset(X, rows["test"])
    t0 = time.perf_counter()
    proba = est.predict_proba(X_test)
    predict_seconds = max(time.perf_counter() - t0, 1e-9)
    n_test = len(rows["test"])
    per_sample = predict_seconds / n_test + (1.0 / prep_rate[name] if name in prep_rate else 0.0)
    pred = est.classes_[np.argmax(proba, 1)]
    m = metrics(y_rows[rows["test"]], pred, classes)
    folded = " (folding not timed)" if cfg.sequence_input == "folded" else ""
    extra = {
        "n_train": int(len(split.train)),
        "n_val": int(len(split.val)),
        "n_test": int(len(split.test)),
        "n_train_samples": int(len(rows["train"])),
        "n_test_samples": int(n_test),
        "infer_includes": {
            "rf": "feature extraction + forest",
            "rnn": "dt/dm inputs + GRU" + folded,
            "cnn": "dt/dm inputs + CNN" + folded,
            "probe": "encoder + head" if name in prep_rate else "head only (embeddings precomputed)",
            HYBRID: "feature extraction + " + ("encoder + head" if "probe" in prep_rate or name in prep_rate
                                                else "head (embeddings precomputed)"),
        }.get(name, "model"),
    }
    if hasattr(est, "n_epochs_"):
        extra["epochs"] = int(est.n_epochs_)
    if hasattr(est, "layer_weights_"):
        extra["layer_weights"] = [float(w) for w in est.layer_weights_]
    if cfg.scoring == "window":  # object scores from mean window probabilities
        test_owner = owner[rows["test"]]
        objs, inv = np.unique(test_owner, return_inverse=True)
        mean_p = np.zeros((len(objs), proba.shape[1]))
        np.add.at(mean_p, inv, proba)
        obj_m = metrics(labels_obj[objs], est.classes_[np.argmax(mean_p, 1)], classes)
        extra.update(object_macro_f1=obj_m["macro_f1"], object_accuracy=obj_m["accuracy"])
    return {
        "model": record_name(name, cfg),
        "spc": int(split.spc),
        "fold": int(split.fold),
        **m,
        "train_seconds": float(train_seconds),
        "infer_lc_per_s": float(1.0 / per_sample),
        "extra": extra,
        "_pred": pred,
    }


def _running_means(records) -> dict:
    df = pd.DataFrame(records)
    means = df.groupby(["model", "spc"])["macro_f1"].mean()
    return {f"{m}@{s}": round(float(v), 4) for (m, s), v in means.items()}


def _finetuned_layers(data: EvalData, batch, owner, split: Split, cfg: EvalConfig) -> np.ndarray:
    """The paper's recipe: masked fine-tuning of the encoder on this split's training light curves
    (validation light curves for early stopping, labels unused), then embed every sample again."""
    import tempfile

    if not data.encoder or not data.encoder.get("dir"):
        raise ModelError("fine-tuning needs the encoder's folder (EvalData.encoder['dir'])")
    rows_of = _rows_by_object(owner, int(owner.max()) + 1)
    train_batch = batch.take(_rows(rows_of, split.train))
    val_batch = batch.take(_rows(rows_of, split.val))
    with tempfile.TemporaryDirectory() as tmp:
        tc = TrainConfig(seed=cfg.seed, device=cfg.device, num_threads=cfg.threads)
        if cfg.finetune_epochs:
            tc = dataclasses.replace(tc, epochs=int(cfg.finetune_epochs))
        finetune(train_batch, val_batch, tc, from_dir=data.encoder["dir"], out_dir=tmp)
        return _embed({**data.encoder, "dir": tmp}, batch, cfg)


# ------------------------------------------------------------------------------------------------
# the Probe page
# ------------------------------------------------------------------------------------------------
@dataclass
class ProbeResult:
    evaluation: EvalResult | None  # the protocol's records for the probe (None: too few labels)
    classes: list[str]
    layer_weights: np.ndarray  # softmax(gamma) of the final fit
    proba: np.ndarray | None = None  # [M, C] for predict_layers
    predicted: np.ndarray | None = None  # str[M]
    confidence: np.ndarray | None = None  # max probability
    entropy: np.ndarray | None = None
    note: str = ""

    def to_dict(self) -> dict:
        return {
            "evaluation": self.evaluation.to_dict() if self.evaluation else None,
            "classes": list(self.classes),
            "layer_weights": np.asarray(self.layer_weights).tolist(),
            "note": self.note,
        }


def run_probe(
    layers, labels, cfg: EvalConfig | None = None, predict_layers=None, progress=None
) -> ProbeResult:
    """The probe alone: the protocol when every class has enough labels, then one fit on all the
    labelled data (20% held out per class for early stopping when a class has 5+ labels) and
    predictions, confidence and entropy for `predict_layers` [M, L+1, d]."""
    cfg = dataclasses.replace(cfg or EvalConfig(), models=["probe"])
    layers = np.asarray(layers, dtype=np.float32)
    labels = np.asarray(labels).astype(str)
    if layers.ndim != 3 or len(layers) != len(labels):
        raise ValidationError(
            f"need embeddings [N, L+1, d] with N labels, got {layers.shape} and {len(labels)}"
        )
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise ValidationError(f"label at least 2 classes to train a probe (got {list(classes)})")
    evaluation, note = None, ""
    n_fits = len(cfg.spc) * cfg.folds
    if counts.min() >= min_class_size(cfg.folds):
        fake = LightCurveBatch(
            oid=np.arange(len(labels)),
            band=[""] * len(labels),
            time=np.zeros((len(labels), 1)),
            mag=np.zeros((len(labels), 1), np.float32),
            mag_err=np.zeros((len(labels), 1), np.float32),
            mask=np.ones((len(labels), 1), bool),
            length=np.ones(len(labels), np.int32),
        )
        cfg_eval = dataclasses.replace(cfg, scoring="object")

        wrapped = Retotal(progress, n_fits + 1) if progress is not None else None
        evaluation = run_evaluation(EvalData(fake, labels, layers), cfg_eval, wrapped)
        if evaluation.timings.get("cancelled"):
            return ProbeResult(evaluation, list(classes), np.zeros(layers.shape[1]), note="cancelled")
    else:
        note = (
            f"protocol skipped: the smallest class has {counts.min()} labels, "
            f"{min_class_size(cfg.folds)} are needed for {cfg.folds} folds"
        )
    # final fit on everything labelled
    rng = np.random.default_rng(cfg.seed)
    val = np.concatenate(
        [
            rng.permutation(np.flatnonzero(labels == c))[: int(n * 0.2)] if n >= 5 else []
            for c, n in zip(classes, counts, strict=True)
        ]
    ).astype(np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val)
    est = make_classifier("probe", **cfg.model_params("probe"))
    est.fit(
        layers[train], labels[train], layers[val] if len(val) else None, labels[val] if len(val) else None
    )
    _notify(progress, n_fits + 1, n_fits + 1, "final fit done", None)
    result = ProbeResult(evaluation, list(est.classes_), est.layer_weights_, note=note)
    if predict_layers is not None:
        proba = est.predict_proba(np.asarray(predict_layers, dtype=np.float32))
        result.proba = proba
        result.predicted = est.classes_[np.argmax(proba, 1)]
        result.confidence = proba.max(1)
        result.entropy = entropy(proba)
    return result


# ------------------------------------------------------------------------------------------------
# training across surveys (Aguirre, Pichara & Becker 2019)
# ------------------------------------------------------------------------------------------------
# The default label map between Catalina (CSS-SSS, Drake et al. 2017 classes) and EROS-1 (RAMP
# labels RRLyrae / Cepheid / EB / Mira). A value is the common class, None drops the label; a label
# that is itself a common class (EROS-1's) maps to itself. Catalina has no classical Cepheids: its
# anomalous (ACEP) and type II (Cep-II) Cepheids become "Cepheid", so that class mixes Cepheid types
# across the two surveys (EROS-1 LMC Cepheids are mostly classical). Rot and HADS_dScuti have no
# EROS-1 counterpart and are dropped.
DEFAULT_LABEL_MAP: dict = {
    "RRab": "RRLyrae", "RRc": "RRLyrae", "RRd": "RRLyrae", "Blazhko": "RRLyrae",
    "EW": "EB", "EA": "EB",
    "DCEP": "Cepheid", "CEP": "Cepheid", "Cep-I": "Cepheid", "ACEP": "Cepheid", "Cep-II": "Cepheid",
    "LPV": "Mira",
    "Rot": None, "HADS_dScuti": None,
}  # fmt: skip
LABEL_MAPS = {"default": DEFAULT_LABEL_MAP, "none": {}}


def load_label_map(spec) -> dict:
    """A label map from a dict, a built-in name ("default", "none": identity) or a JSON file.

    Format: {label: common class or null (drop)}; a value that is a dict is a section for the survey
    named by its key, whose entries override the common ones for that survey's objects.
    """
    if spec is None:
        return {}
    if isinstance(spec, dict):
        label_map = spec
    elif str(spec) in LABEL_MAPS:
        label_map = LABEL_MAPS[str(spec)]
    else:
        path = Path(str(spec))
        if not path.exists():
            raise ValidationError(
                f"label map {spec!r}: not a built-in map ({', '.join(LABEL_MAPS)}) nor a JSON file"
            )
        try:
            label_map = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"label map {path}: not valid JSON ({exc.msg}, line {exc.lineno})"
            ) from None
    if not isinstance(label_map, dict):
        raise ValidationError("a label map is a JSON object {label: class or null}")
    for key, value in label_map.items():
        entries = value.items() if isinstance(value, dict) else [(key, value)]
        for k, v in entries:
            if v is not None and not isinstance(v, str):
                raise ValidationError(f"label map: {k!r} maps to {v!r}; give a class name or null (drop)")
    return dict(label_map)


def apply_label_map(labels, surveys, label_map: dict) -> np.ndarray:
    """Labels in the common classes (object dtype; None where the map drops the label).

    An empty map is the identity. Otherwise every label must be a key of the map (or of its survey's
    section) or one of the common classes itself; any other label is an error that names it, its
    survey and its count, so that no class is dropped or merged silently.
    """
    labels = np.asarray(labels).astype(str)
    if not label_map:
        return labels.astype(object)
    surveys = np.asarray(surveys).astype(str) if surveys is not None else np.full(len(labels), "")
    common = {k: v for k, v in label_map.items() if not isinstance(v, dict)}
    targets = {v for v in common.values() if v is not None}
    for section in (v for v in label_map.values() if isinstance(v, dict)):
        targets |= {v for v in section.values() if v is not None}
    out = np.empty(len(labels), dtype=object)
    unmapped: dict[tuple[str, str], int] = {}
    for survey in np.unique(surveys):
        rows = np.flatnonzero(surveys == survey)
        table = {**common, **(label_map.get(survey) if isinstance(label_map.get(survey), dict) else {})}
        for label in np.unique(labels[rows]):
            at = rows[labels[rows] == label]
            if label in table:
                out[at] = table[label]
            elif label in targets:
                out[at] = label
            else:
                unmapped[(str(survey), str(label))] = len(at)
    if unmapped:
        listed = ", ".join(
            f"{label!r} ({n} objects{f' of {survey}' if survey else ''})"
            for (survey, label), n in unmapped.items()
        )
        raise ValidationError(f"label map: no entry for {listed}; map each to a class or to null to drop it")
    return out


def make_cross_splits(
    labels, surveys, train_surveys, score_surveys, folds: int, spc_list, test_per_class: int,
    val_fraction: float = 0.2, seed: int = 0,
):  # fmt: skip
    """The protocol per survey, combined -> (list of Split, report {"survey | class": {...}}).

    Each survey is sampled on its own with `make_splits` (the same seed, so a survey's test sets do
    not depend on which other surveys take part): test sets of `test_per_class` objects per class
    come from the scoring surveys, training and validation draws of spc objects per class from
    *each* training survey (train on A+B: 2 x spc per class). A survey that only trains keeps all its
    objects in its pool. Objects of different surveys are different rows, and within one survey
    make_splits keeps test and training objects apart, so every test object is unseen in training
    and the per-survey test sets are disjoint.
    """
    labels, surveys = np.asarray(labels).astype(str), np.asarray(surveys).astype(str)
    per: dict[str, list[Split]] = {}
    report = {}
    for survey in dict.fromkeys([*train_surveys, *score_surveys]):
        rows = np.flatnonzero(surveys == survey)
        splits, rep = make_splits(
            labels[rows], folds, spc_list, test_per_class if survey in score_surveys else 0,
            val_fraction, seed,
        )  # fmt: skip
        per[survey] = [Split(s.fold, s.spc, rows[s.train], rows[s.val], rows[s.test]) for s in splits]
        report.update({f"{survey} | {c}": r for c, r in rep.items()})
    combined = []
    for j, first in enumerate(next(iter(per.values()))):

        def join(part, among, j=j):
            return np.sort(np.concatenate([getattr(per[s][j], part) for s in among]))

        combined.append(
            Split(first.fold, first.spc, join("train", train_surveys), join("val", train_surveys),
                  join("test", score_surveys))
        )  # fmt: skip
    return combined, report


def _select_cross(data: EvalData, cfg: EvalConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """Cross-survey selection -> (object indices, their common-class labels, selection report).

    Classes: those with min_class_size objects in every scoring survey and in at least one training
    survey (so every scored class can be learned); a class too small in one training survey is left
    out of that survey's draws only.
    """
    if data.surveys is None:
        raise ValidationError("training across surveys needs each object's survey (EvalData.surveys)")
    surveys = np.asarray(data.surveys).astype(str)
    train, score = list(cfg.train_surveys or []), list(cfg.score_surveys or [])
    missing = [s for s in dict.fromkeys(train + score) if s not in set(surveys)]
    if missing:
        raise ValidationError(f"surveys {missing} have no labelled objects; present: {sorted(set(surveys))}")
    label_map = load_label_map(cfg.label_map)
    mapped = apply_label_map(data.labels, surveys, label_map)
    kept = np.array([m is not None for m in mapped], dtype=bool)
    need = min_class_size(cfg.folds)
    counts = {
        s: dict(zip(*np.unique(mapped[kept & (surveys == s)].astype(str), return_counts=True), strict=True))
        for s in dict.fromkeys(train + score)
    }
    candidates = sorted(set().union(*(counts[s] for s in score)))
    classes = [
        c for c in candidates
        if all(counts[s].get(c, 0) >= need for s in score) and any(counts[s].get(c, 0) >= need for s in train)
    ]  # fmt: skip
    if cfg.classes:
        absent = [c for c in cfg.classes if c not in classes]
        if absent:
            raise ValidationError(
                f"classes {absent} are not in every scoring survey after mapping; have {classes}"
            )
        classes = [c for c in classes if c in cfg.classes]
    if len(classes) < 2:
        raise ValidationError(
            f"need at least 2 common classes with {need}+ objects in every scoring survey, got {counts}"
        )
    ok = np.zeros(len(mapped), dtype=bool)
    for s in dict.fromkeys(train + score):
        for c in classes:
            member = kept & (surveys == s) & (mapped == c)
            ok |= member if member.sum() >= need else False
    idx = np.flatnonzero(ok)
    selection = {
        "classes": classes,
        "counts": {c: int((mapped[idx] == c).sum()) for c in classes},
        "counts_per_survey": {s: {c: int(n) for c, n in counts[s].items()} for s in counts},
        "dropped_by_map": {
            lab: int(n)
            for lab, n in zip(*np.unique(np.asarray(data.labels)[~kept], return_counts=True), strict=True)
        },
        "train_surveys": train,
        "score_surveys": score,
        "label_map": label_map,
    }  # fmt: skip
    return idx, mapped[idx].astype(str), selection


def per_survey_metrics(y_true, y_pred, surveys, classes) -> dict:
    """Metrics per survey over its own test objects, on the classes it has test objects of."""
    y_true, y_pred, surveys = np.asarray(y_true), np.asarray(y_pred), np.asarray(surveys).astype(str)
    out = {}
    for s in dict.fromkeys(surveys):
        at = surveys == s
        present = [c for c in classes if (y_true[at] == c).any()]
        m = metrics(y_true[at], y_pred[at], present)
        out[s] = {k: m[k] for k in ("macro_f1", "macro_precision", "macro_recall", "accuracy", "per_class")}
        out[s]["n_test"] = int(at.sum())
    return out


def cross_survey_table(results: list[EvalResult]) -> pd.DataFrame:
    """One row per model x spc x training surveys x scored survey: macro F1 / accuracy mean and std
    over folds, from the records' per-survey scores (runs with train_surveys set)."""
    rows = []
    for res in results:
        train = " + ".join(res.config.get("train_surveys") or [])
        for rec in res.records:
            for survey, m in (rec.get("extra") or {}).get("per_survey", {}).items():
                rows.append({
                    "model": rec["model"], "spc": rec["spc"], "fold": rec["fold"], "trained on": train,
                    "scored on": survey, "macro_f1": m["macro_f1"], "accuracy": m["accuracy"],
                    "n_test": m["n_test"],
                })  # fmt: skip
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    g = df.groupby(["scored on", "model", "spc", "trained on"], sort=False)
    out = g[["macro_f1", "accuracy"]].agg(["mean", "std"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    out["folds"] = g.size()
    out["n_test"] = g["n_test"].first()
    return out.reset_index().sort_values(["scored on", "model", "spc", "trained on"], kind="stable")
