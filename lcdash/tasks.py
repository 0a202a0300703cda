"""The job kinds: what each job prepares (app process), runs (worker) and stores (app process).

Each kind is three small functions, listed in `KINDS` (which the app hands to its JobManager); the
work itself is in the library (`embed`, `train`, `weights`, `projection`, `evaluation`, `report`).
`prepare` reads the store and writes the worker's inputs into the job folder (LightCurveBatch npz,
embeddings npz, labels); `run` never opens the store; `finalize` writes the results into the store.

Kinds and their params (JSON values; the pages and the CLI build them):

- `embed`: encoder, band=None (each band), oids=None (all objects), overwrite=False, batch_size=256
- `pretrain`: name, survey=None, band=None, max_objects=None, val_fraction=0.1, train={TrainConfig
  fields}, model={AstromerConfig fields} (a fresh Astromer 2 by default), base=None (start from)
- `finetune`: name, base (encoder to start from), the rest as pretrain (lr 1e-5 by default)
- `import_weights`: name, and path (archive / folder / checkpoint) or official ("macho_a0", ...)
- `project`: encoder, embedding ("last" | "weighted" | "layer_<l>"), run_id=None (probe run whose
  layer weights "weighted" uses; uniform without), band=None, n_neighbors, min_dist, metric, seed
- `probe`: encoder, labels ("catalogue" or a label-set name), survey=None, band=None, spc=[...],
  folds, seed, classes=None, max_epochs=None, predict=True (write predictions for all embedded objects)
- `evaluate`: models, encoder (for the probe), labels, survey, band, spc, folds, test_per_class,
  max_epochs, seed, classes, scoring, max_per_class=None (subsample big classes before the protocol)
- `periods`: survey=None, band=None, overwrite=False (`lcdash periods` as a job: the period finder on
  every light curve without a period of this finder version, stored beside the catalogue period)
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np

from lcdash.embed import embed_batch
from lcdash.errors import LcdashError, ValidationError
from lcdash.jobs import TaskKind, task_kind
from lcdash.lightcurve import LightCurveBatch
from lcdash.periods import catalogue_periods, fold_periods_of
from lcdash.progress import JobCancelled, Scaled, is_cancelled
from lcdash.projection import map_input_chunks, project, sampled_fit_params
from lcdash.train import TrainConfig, finetune, pretrain
from lcdash.weights import download, import_official, load_encoder, read_encoder_config

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
EMBED_CHUNK = 2048  # objects per exported batch file: bounds the worker's memory


# --------------------------------------------------------------------------------------------------
# shared helpers


def store_dir(store) -> Path:
    return Path(store.path).resolve().parent


def encoders_dir(store) -> Path:
    """Where jobs put new encoders: <store dir>/encoders/<name>."""
    return store_dir(store) / "encoders"


def save_upload(store, filename: str, data: bytes) -> Path:
    """Keep an uploaded file (e.g. an official weights archive) beside the store for a job to read."""
    folder = store_dir(store) / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / Path(filename).name
    path.write_bytes(data)
    return path


def _check_new_encoder(store, name: str) -> Path:
    from lcdash.store.embeddings import list_encoders

    if not name or not NAME_RE.match(name):
        raise ValidationError(
            f"encoder name {name!r}: use 1-64 letters, digits, '_', '-' or '.' "
            "(starting with a letter or digit)"
        )
    if name in _names(list_encoders(store)):
        raise ValidationError(f"an encoder named {name!r} already exists; choose another name")
    out = encoders_dir(store) / name
    if out.exists() and any(out.iterdir()):
        raise ValidationError(f"{out} already exists and is not empty; choose another name")
    return out


def _names(listed) -> list[str]:
    if hasattr(listed, "columns"):
        return [str(n) for n in listed["name"]]
    return [e["name"] if isinstance(e, dict) else getattr(e, "name", e) for e in listed]


def _encoder(store, name: str) -> dict:
    from lcdash.store.embeddings import get_encoder

    if not name:
        raise ValidationError("choose an encoder")
    return get_encoder(store, name)


def _pick_oids(store, params: dict, labelled: bool | None = None) -> np.ndarray:
    oids = params.get("oids")
    df = store.objects(
        survey=params.get("survey") or None,
        band=params.get("band") or None,
        labelled=labelled,
        oids=oids,
        columns=["oid"],
    )
    return df["oid"].to_numpy(np.int64)


def _band_of(store, oids: np.ndarray, band: str | None) -> str | None:
    """The band to read: the given one, else the only band of these objects, else None (each
    object's first band, as Store.read_batch does)."""
    if band:
        return band
    bands = store.bands(oids)
    return bands[0] if len(bands) == 1 else None


def _cancel_check(progress) -> None:
    """Library loops stop quietly when cancelled; turn that into a cancelled job."""
    if is_cancelled(progress):
        raise JobCancelled("cancelled")


class _LightCurves(Scaled):
    """Embedding progress in light curves throughout (embed_batch itself counts windows, which made
    the job's message switch units between batches)."""

    def __call__(self, step, total=None, message=None, metrics=None):
        n = self.position(step, total)
        self.progress(n, self.total, f"embedded {n}/{self.total} light curves", metrics)


# --------------------------------------------------------------------------------------------------
# embeddings (prepare side)


def _embeddings(store, encoder: str, oids=None, band: str | None = None):
    """(oid, band, layers[N, L+1, d]) of `encoder`, restricted to one band when given."""
    from lcdash.store.embeddings import load_embeddings

    oid, bands, layers = load_embeddings(store, encoder, oids=oids, band=band or None)
    bands = np.asarray(bands, dtype=str)
    return np.asarray(oid, np.int64), bands, np.asarray(layers, np.float32)


def _align(oid: np.ndarray, bands: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Row index into (oid, bands) for each wanted oid (its first band); -1 when missing."""
    first: dict[int, int] = {}
    order = np.lexsort((bands, oid))
    for i in order:
        first.setdefault(int(oid[i]), int(i))
    return np.array([first.get(int(o), -1) for o in want], dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# embed


def embed_prepare(store, params, folder):
    from lcdash.store.embeddings import embedded_keys

    enc = _encoder(store, params.get("encoder"))
    oids = _pick_oids(store, params)
    bands = [params["band"]] if params.get("band") else store.bands(oids)
    files, n_objects = [], 0
    have, have_bands = embedded_keys(store, enc["name"])
    for band in bands:
        sel = store.objects(oids=oids, band=band, columns=["oid"])["oid"].to_numpy(np.int64)
        if not params.get("overwrite"):
            sel = sel[~np.isin(sel, have[have_bands == band])]
        for i in range(0, len(sel), EMBED_CHUNK):
            name = f"batch_{band}_{i // EMBED_CHUNK:04d}.npz"
            store.export_batch(sel[i : i + EMBED_CHUNK], band, folder / name)
            # catalogue, else stored found periods; the worker finds the rest (finalize stores them)
            np.save(folder / name.replace(".npz", ".periods.npy"),
                    fold_periods_of(store, sel[i : i + EMBED_CHUNK], band, compute=False))
            files.append(name)
        n_objects += len(sel)
    return {"encoder_path": str(enc["path"]), "batches": files, "n_objects": int(n_objects)}


def embed_run(folder, params, progress):
    total = int(params["n_objects"])
    progress(0, total, "loading the encoder")
    model, _ = load_encoder(params["encoder_path"])
    done = windows = 0
    t0 = time.monotonic()
    outputs = []
    for name in params["batches"]:
        batch = LightCurveBatch.load(folder / name)
        sub = _LightCurves(progress, done, done + len(batch), total)
        periods = folder / name.replace(".npz", ".periods.npy")  # for folded encoders
        periods = np.load(periods) if periods.exists() else None
        out = name.replace("batch_", "emb_")
        if model.cfg.fold and periods is not None:
            periods = _find_missing_periods(batch, periods, folder / out.replace(".npz", ".periods.parquet"))
        n_windows, layers = embed_batch(
            model, batch, batch_size=params.get("batch_size"), progress=sub, periods=periods,
        )
        np.savez(
            folder / out,
            oid=batch.oid,
            band=np.asarray(batch.band, dtype=str),
            n_windows=n_windows,
            layers=layers,
        )
        outputs.append(out)
        done += len(batch)
        windows += int(n_windows.sum())
        progress(done, total, f"embedded {done}/{total} light curves")
    seconds = time.monotonic() - t0
    return {
        "files": outputs,
        "objects": done,
        "windows": windows,
        "seconds": seconds,
        "lc_per_s": done / seconds if seconds > 0 else None,
    }


def _find_missing_periods(batch, periods: np.ndarray, path) -> np.ndarray:
    """Fill the NaN periods of `batch` with the period finder's; its results go to `path` (Parquet)
    for finalize to store, so that the next fold reads them instead of finding them again."""
    from lcdash.periods import find_periods, results_frame

    missing = np.flatnonzero(~(np.isfinite(periods) & (periods > 0)))
    if not len(missing):
        return periods
    sub = batch.take(missing)
    results = find_periods(sub)
    results_frame(sub.oid, sub.band, results).to_parquet(path, index=False)
    out = periods.copy()
    out[missing] = [r.period for r in results]
    return out


def embed_finalize(store, folder, params, result):
    from lcdash.periods import FINDER_VERSION
    from lcdash.store.embeddings import save_embeddings
    from lcdash.store.periods import save_periods

    rows = 0
    for name in result["files"]:
        found = folder / name.replace(".npz", ".periods.parquet")
        if found.exists():
            import pandas as pd

            save_periods(store, pd.read_parquet(found), FINDER_VERSION)
        with np.load(folder / name) as z:
            keep = z["n_windows"] > 0  # objects without observations in the band
            if keep.any():
                save_embeddings(
                    store,
                    params["encoder"],
                    z["oid"][keep],
                    [str(b) for b in z["band"][keep]],
                    z["n_windows"][keep],
                    z["layers"][keep],
                )
            rows += int(keep.sum())
    return {k: v for k, v in result.items() if k != "files"} | {"rows": rows, "encoder": params["encoder"]}


# --------------------------------------------------------------------------------------------------
# embed on a Dask cluster (lcdash.scale): the store's light curves are exported here, in the process
# that holds the store; the job's worker drives the cluster; the embeddings come back in finalize


def catalog_chunk_size(n_curves: int, workers: int) -> int:
    """Light curves per partition: about 8 partitions a worker, so that the job's progress (counted
    in finished partitions) moves and a slow partition does not idle the others, between 200 and 5000."""
    return int(min(5000, max(200, -(-n_curves // (8 * max(1, workers))))))


def embed_catalog_prepare(store, params, folder):
    from lcdash.scale import default_workers, export_store

    enc = _encoder(store, params.get("encoder"))
    scheduler = (params.get("scheduler") or "").strip() or None
    workers = default_workers() if params.get("workers") is None else int(params["workers"])
    if workers < 1:
        raise ValidationError(f"workers must be at least 1, got {workers}")
    oids = _pick_oids(store, params)
    n = len(store.objects(oids=oids, band=params.get("band"), columns=["oid"]))
    if n == 0:
        raise ValidationError("no light curves to embed in this selection")
    chunk = catalog_chunk_size(n, workers)
    spec = export_store(store, folder / "catalog" / "_export", survey=params.get("survey"),
                        band=params.get("band"), chunk_size=chunk)
    return {"encoder_path": str(enc["path"]), "spec": spec.to_dict(), "out": str(folder / "catalog"),
            "workers": workers, "scheduler": scheduler, "chunk_size": chunk, "n_objects": n}


def embed_catalog_run(folder, params, progress):
    from lcdash.scale import SourceSpec, embed_catalog

    progress(0, 1, "starting the Dask cluster" if not params.get("scheduler") else
             f"connecting to the Dask scheduler at {params['scheduler']}")
    result = embed_catalog(SourceSpec.from_dict(params["spec"]), params["encoder_path"], params["out"],
                           workers=params["workers"], scheduler=params.get("scheduler"),
                           batch_size=params.get("batch_size"), progress=progress)
    # a partition that kept failing is reported by name; the others' embeddings are still imported
    return {"rows": result.rows, "windows": result.windows, "seconds": result.seconds,
            "workers": result.workers, "lc_per_s": result.lc_per_s,
            "partitions": result.partitions, "failed": result.failed}


def embed_catalog_finalize(store, folder, params, result):
    from lcdash.scale import import_embeddings

    stored = import_embeddings(store, params["out"], params["encoder"])
    return {**result, "rows": stored.get("rows", result.get("rows")), "encoder": params["encoder"]}


# --------------------------------------------------------------------------------------------------
# pretrain / finetune / import_weights


def train_prepare(store, params, folder):
    out = _check_new_encoder(store, params.get("name", ""))
    base = params.get("base")
    if params.get("finetune") and not base:
        raise ValidationError("fine-tuning needs a base encoder to start from")
    base_path = str(_encoder(store, base)["path"]) if base else None
    TrainConfig.from_dict(params.get("train") or {}).validate()  # fail here, not in the worker
    oids = _pick_oids(store, params)
    if params.get("max_objects"):
        rng = np.random.default_rng(int((params.get("train") or {}).get("seed", 0)))
        oids = np.sort(rng.choice(oids, size=min(len(oids), int(params["max_objects"])), replace=False))
    if len(oids) < 2:
        raise ValidationError(f"training needs at least 2 light curves, the selection has {len(oids)}")
    band = _band_of(store, oids, params.get("band"))
    if band:
        oids = store.objects(oids=oids, band=band, columns=["oid"])["oid"].to_numpy(np.int64)
    rng = np.random.default_rng(0)
    perm = rng.permutation(oids)
    n_val = max(1, int(round(float(params.get("val_fraction", 0.1)) * len(perm))))
    store.export_batch(np.sort(perm[n_val:]), band, folder / "train.npz")
    store.export_batch(np.sort(perm[:n_val]), band, folder / "val.npz")
    out.mkdir(parents=True, exist_ok=True)
    return {
        "out_dir": str(out),
        "base_path": base_path,
        "band_used": band,
        "n_train": int(len(perm) - n_val),
        "n_val": int(n_val),
    }


def train_run(folder, params, progress):
    cfg = TrainConfig.from_dict(params.get("train") or {})
    tr = LightCurveBatch.load(folder / "train.npz")
    va = LightCurveBatch.load(folder / "val.npz")
    if params.get("finetune"):
        summary = finetune(
            tr, va, cfg, from_dir=params["base_path"], out_dir=params["out_dir"], progress=progress
        )
    else:
        summary = pretrain(
            tr,
            va,
            cfg,
            params.get("model"),
            params["out_dir"],
            init_from=params.get("base_path"),
            progress=progress,
        )
    _cancel_check(progress)
    return summary


def train_finalize(store, folder, params, result):
    from lcdash.store.embeddings import register_encoder

    what = "fine-tuned from " + params["base"] if params.get("finetune") else "pretrained"
    if not params.get("finetune") and params.get("base"):
        what += f" from {params['base']}"
    data = params.get("survey") or "all surveys"
    source = f"{what} on {data} ({params['n_train']} light curves)"
    register_encoder(store, params["name"], params["out_dir"], source=source)
    return {
        "encoder": params["name"],
        "path": params["out_dir"],
        "source": source,
        **{k: result.get(k) for k in ("best_val_rmse", "best_epoch", "epochs", "stopped", "device")},
    }


def import_prepare(store, params, folder):
    out = _check_new_encoder(store, params.get("name", ""))
    if params.get("path"):
        if not Path(params["path"]).exists():
            raise ValidationError(f"no such file or folder: {params['path']}")
    elif not params.get("official"):
        raise ValidationError("give a weights archive / folder (path) or an official name to download")
    return {"out_dir": str(out)}


def import_run(folder, params, progress):
    progress(0, 1, "converting the weights")
    if params.get("path"):
        out = import_official(params["path"], params["out_dir"], name=params["name"])
    else:
        out = download(
            params["official"],
            params["out_dir"],
            url=params.get("url"),
            cache_dir=params.get("cache_dir"),
            progress=progress,
        )
    meta = read_encoder_config(out)
    progress(1, 1, "converted")
    return {"path": str(out), "n_params": meta.get("n_params"), "arch": meta.get("arch")}


def import_finalize(store, folder, params, result):
    from lcdash.store.embeddings import register_encoder

    origin = params.get("official") or Path(params["path"]).name
    register_encoder(store, params["name"], result["path"], source=f"official {origin}")
    return {"encoder": params["name"], **result}


# --------------------------------------------------------------------------------------------------
# project


def project_prepare(store, params, folder):
    from lcdash.store.embeddings import get_encoder, iter_embeddings

    encoder = params.get("encoder")
    _encoder(store, encoder)
    n_layers = int(get_encoder(store, encoder)["n_layers"]) + 1
    embedding = params.get("embedding", "weighted")
    weights = None
    if embedding == "weighted":
        weights = probe_layer_weights(store, params["run_id"]) if params.get("run_id") else None
        if weights is None:
            weights = np.full(n_layers, 1.0 / n_layers)
        weights = np.asarray(weights, np.float64)
        if len(weights) != n_layers:
            raise ValidationError(
                f"the probe run's {len(weights)} layer weights do not fit the "
                f"encoder's {n_layers} layers"
            )
    # chunk by chunk: a million objects' layers (3 GB) never sit in memory at once, only X [N, d]
    chunks = (((oid, bands), layers) for oid, bands, layers in
              iter_embeddings(store, encoder, band=params.get("band") or None))
    try:
        keys, X = map_input_chunks(chunks, embedding, weights)
    except LcdashError:
        keys, X = [], np.zeros((0, 1), np.float32)
    if len(X) < 3:
        raise ValidationError(f"encoder {encoder!r} has {len(X)} embedded light curves; embed more first")
    oid = np.concatenate([k[0] for k in keys])
    bands = np.asarray([b for k in keys for b in k[1]], dtype=str)
    np.savez(folder / "points.npz", oid=oid, band=bands, X=X)
    return {"n_points": int(len(oid)), "layer_weights": None if weights is None else weights.tolist()}


def probe_layer_weights(store, run_id: str):
    """The learned layer weights (softmax gamma) of a probe run: the final fit's when stored, else
    the mean over the protocol's fits; None when the run has none."""
    from lcdash.store.results import load_run

    info, results = load_run(store, run_id)
    if info.get("layer_weights") is not None:
        return info["layer_weights"]
    found = [e["layer_weights"] for e in results.get("extra", []) if e and e.get("layer_weights")]
    return np.mean(np.asarray(found, np.float64), axis=0).tolist() if found else None


def project_run(folder, params, progress):
    with np.load(folder / "points.npz") as z:
        X = z["X"]
    n = len(X)
    seed = int(params.get("seed", 0))
    sampled = sampled_fit_params(n, params.get("fit_sample"), params.get("sampled_fit_above"), seed)
    how = f"fit on {sampled['sample_size']:,} sampled, the rest placed in batches" if sampled else "full fit"
    progress(0, n, f"UMAP of {n:,} points ({how}; the first run compiles numba: about a minute)")

    def step(done, total, message):
        progress(int(done * n / max(total, 1)), n, message)
        _cancel_check(progress)

    xy = project(
        X,
        n_neighbors=int(params.get("n_neighbors", 15)),
        min_dist=float(params.get("min_dist", 0.1)),
        metric=params.get("metric", "cosine"),
        seed=seed,
        progress=step if sampled else None,
        sampled_fit=sampled,
    )
    _cancel_check(progress)
    np.save(folder / "xy.npy", np.asarray(xy, np.float32))
    progress(n, n, "projected")
    return {"n_points": int(len(xy)), "sampled_fit": sampled}


def project_finalize(store, folder, params, result):
    from lcdash.store.projections import save_projection

    with np.load(folder / "points.npz") as z:
        oid, bands = z["oid"], [str(b) for b in z["band"]]
    xy = np.load(folder / "xy.npy")
    keys = ("n_neighbors", "min_dist", "metric", "seed", "band", "run_id")
    proj_params = {k: params.get(k) for k in keys if params.get(k) is not None}
    if (result or {}).get("sampled_fit"):
        proj_params["sampled_fit"] = result["sampled_fit"]  # how it was fitted (find_projection ignores it)
    proj_id = save_projection(
        store,
        params["encoder"],
        params.get("embedding", "weighted"),
        proj_params,
        oid,
        bands,
        xy,
        layer_weights=params.get("layer_weights"),
    )
    return {"proj_id": proj_id, "n_points": int(len(oid))}


# --------------------------------------------------------------------------------------------------
# probe


def _eval_config(params: dict, **over):
    """EvalConfig from the job's params: every EvalConfig field given (not None) is taken."""
    from lcdash.evaluation import EvalConfig

    d = {k: v for k, v in params.items() if v is not None}
    if isinstance(d.get("spc"), int):
        d["spc"] = [d["spc"]]
    d.update(over)
    return EvalConfig.from_dict(d).validate()


def probe_prepare(store, params, folder):
    from lcdash.store.labels import load_labels

    encoder = params.get("encoder")
    enc = _encoder(store, encoder)
    source = params.get("labels", "catalogue")
    oids, labels = load_labels(store, source, params.get("survey"))
    if params.get("classes"):
        keep = np.isin(labels, params["classes"])
        oids, labels = oids[keep], labels[keep]
    _eval_config(params, models=["probe"])
    eo, eb, layers = _embeddings(store, encoder, band=params.get("band"))
    if len(eo) == 0:
        raise ValidationError(f"encoder {encoder!r} has no embeddings yet: compute them on the Models page")
    rows = _align(eo, eb, oids)
    missing = int((rows < 0).sum())
    have = rows >= 0
    if have.sum() == 0:
        raise ValidationError(f"none of the {len(oids)} labelled objects has {encoder!r} embeddings")
    np.savez(
        folder / "train.npz",
        oid=oids[have],
        band=eb[rows[have]],
        labels=labels[have],
        layers=layers[rows[have]],
    )
    if params.get("predict", True):
        np.savez(folder / "predict.npz", oid=eo, band=eb, layers=layers)
    return {
        "encoder_info": _encoder_info(enc),
        "n_labelled": int(have.sum()),
        "n_missing": missing,
        "label_counts": _counts(labels[have]),
    }


def _counts(labels) -> dict:
    classes, counts = np.unique(labels, return_counts=True)
    return {str(c): int(n) for c, n in zip(classes, counts, strict=True)}


def _encoder_info(enc: dict) -> dict:
    keys = ("name", "path", "arch", "n_layers", "d_model", "source")
    return {k: (str(enc[k]) if k == "path" else enc[k]) for k in keys if k in enc}


def probe_run(folder, params, progress):
    from lcdash.evaluation import run_probe

    cfg = _eval_config(params, models=["probe"])
    with np.load(folder / "train.npz") as z:
        layers, labels = z["layers"], z["labels"]
    predict = None
    if (folder / "predict.npz").exists():
        with np.load(folder / "predict.npz") as z:
            predict = z["layers"]
    progress(0, None, f"probe on {len(labels)} labelled objects")
    res = run_probe(layers, labels, cfg, predict_layers=predict, progress=progress)
    _cancel_check(progress)
    out = res.to_dict()
    if res.proba is not None:
        np.savez(
            folder / "predictions.npz",
            predicted=np.asarray(res.predicted, dtype=str),
            confidence=res.confidence,
            entropy=res.entropy,
        )
    return out


def probe_finalize(store, folder, params, result):
    from lcdash.evaluation import EvalResult
    from lcdash.store.results import save_predictions, save_run

    ev = result.get("evaluation")
    if ev is None:  # protocol skipped (too few labels): keep the run for its weights and predictions
        ev = {"records": [], "config": {}, "selection": {}, "timings": {}, "versions": {}}
    evaluation = EvalResult.from_dict(ev)
    config = {"encoder": params.get("encoder_info"), "label_source": params.get("labels", "catalogue")}
    selection = {
        "label_source": params.get("labels", "catalogue"),
        "survey": params.get("survey"),
        "band": params.get("band"),
        "n_labelled": params.get("n_labelled"),
        "n_missing_embeddings": params.get("n_missing"),
        "label_counts": params.get("label_counts"),
    }
    run_id = save_run(store, evaluation, kind="probe", config=config, selection=selection, job_id=folder.name,
                      layer_weights=result.get("layer_weights"), classes=result.get("classes"),
                      note=result.get("note"))  # fmt: skip
    n_pred = 0
    if (folder / "predictions.npz").exists():
        with np.load(folder / "predict.npz") as p, np.load(folder / "predictions.npz") as z:
            n_pred = save_predictions(
                store,
                run_id,
                p["oid"],
                [str(b) for b in p["band"]],
                z["predicted"],
                z["confidence"],
                z["entropy"],
            )
    return {
        "run_id": run_id,
        "predictions": int(n_pred),
        "macro_f1": _f1_summary(evaluation, False),
        "layer_weights": result.get("layer_weights"),
        "note": result.get("note"),
    }


def _f1_summary(evaluation, with_model: bool = True) -> dict:
    summary = evaluation.summary()
    if not len(summary):
        return {}
    return {
        (f"{r.model} " if with_model else "") + f"spc={int(r.spc)}": round(float(r.macro_f1_mean), 4)
        for r in summary.itertuples()
    }


# --------------------------------------------------------------------------------------------------
# evaluate


def evaluate_prepare(store, params, folder):
    from lcdash.evaluation import EvalData
    from lcdash.store.labels import load_labels

    cfg = _eval_config(params)
    if cfg.train_surveys:
        return _cross_survey_prepare(store, params, cfg, folder)
    oids, labels = load_labels(store, params.get("labels", "catalogue"), params.get("survey"))
    if cfg.classes:
        keep = np.isin(labels, cfg.classes)
        oids, labels = oids[keep], labels[keep]
    cap = params.get("max_per_class")
    if cap is None:  # enough for every fold's test set and the largest training + validation draw
        cap = cfg.folds * cfg.test_per_class + 2 * math.ceil((1 + cfg.val_fraction) * max(cfg.spc))
    rng = np.random.default_rng(cfg.seed)
    take = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        take.append(rng.choice(idx, size=min(len(idx), int(cap)), replace=False) if len(idx) > cap else idx)
    sel = np.sort(np.concatenate(take)) if take else np.zeros(0, np.int64)
    oids, labels = oids[sel], labels[sel]
    band = _band_of(store, oids, params.get("band"))
    if band:
        have = store.objects(oids=oids, band=band, columns=["oid"])["oid"].to_numpy(np.int64)
        keep = np.isin(oids, have)
        oids, labels = oids[keep], labels[keep]
    batch = store.read_batch(oids, band=band)
    layers, encoder = None, None
    if {"probe", "probe+features"} & set(cfg.models):
        enc = _encoder(store, params.get("encoder"))
        encoder = {**_encoder_info(enc), "dir": str(enc["path"])}
        eo, eb, lay = _embeddings(store, enc["name"], oids=oids, band=band)
        rows = _align(eo, eb, oids)
        # a folded encoder's stored embeddings may be folded at catalogue periods: "found" embeds anew
        folded = bool((enc.get("config") or {}).get("config", {}).get("fold"))
        if len(rows) and (rows >= 0).all() and not (folded and cfg.periods == "found"):
            layers = lay[rows]
        # else: the worker embeds the selection itself (EvalData without layers, encoder dir given)
    # catalogue periods (none when the run's periods are "found": the worker finds them all), for
    # folded RNN / CNN input and for folded encoders embedding in the worker
    periods = catalogue_periods(store, oids) if cfg.periods == "catalogue" else np.full(len(oids), np.nan)
    EvalData(batch, labels, layers, encoder, periods).save(folder / "data")
    return {
        "band_used": band,
        "n_objects": int(len(oids)),
        "max_per_class": int(cap),
        "layers_from_store": layers is not None,
    }


def evaluate_run(folder, params, progress):
    from lcdash.evaluation import EvalData, run_evaluation

    cfg = _eval_config(params, band=params.get("band_used"))
    data = EvalData.load(folder / "data")
    result = run_evaluation(data, cfg, progress=progress)
    _cancel_check(progress)
    result.selection.update(
        label_source=params.get("labels", "catalogue"),
        survey=params.get("survey"),
        max_per_class=params.get("max_per_class"),
    )
    if params.get("bands_used"):
        result.selection["bands"] = params["bands_used"]
        result.selection["band"] = "; ".join(f"{s}: {b}" for s, b in params["bands_used"].items())
    result.to_json(folder / "evaluation.json")
    try:
        from lcdash import report

        report.write_report(result, folder)
    except ImportError:
        pass
    return {"evaluation": "evaluation.json", "records": len(result.records)}


def evaluate_finalize(store, folder, params, result):
    from lcdash.evaluation import EvalResult
    from lcdash.store.results import save_run

    evaluation = EvalResult.from_json(folder / result["evaluation"])
    run_id = save_run(store, evaluation, kind="compare", job_id=folder.name)
    summary = evaluation.summary()
    f1 = (
        {f"{r.model} spc={int(r.spc)}": float(r.macro_f1_mean) for r in summary.itertuples()}
        if len(summary)
        else {}
    )
    report_md = folder / "report.md"
    return {"run_id": run_id, "macro_f1": f1, "report": str(report_md) if report_md.exists() else None}


def survey_band(store, survey: str, band: str | None) -> str:
    """The band read for one survey when training across surveys: `band` where the survey has it,
    else the survey's only band (so `--band EROS1_R` picks EROS-1's R band and Catalina's V)."""
    bands = store.bands(store.objects(survey=survey, columns=["oid"])["oid"].to_numpy(np.int64))
    if band and band in bands:
        return band
    if len(bands) == 1:
        return bands[0]
    raise ValidationError(f"survey {survey!r} has bands {', '.join(bands)}: choose one with --band")


def _cross_survey_prepare(store, params, cfg, folder):
    """The evaluate job's data across surveys: per survey its labelled objects (mapped labels,
    each common class capped like the single-survey selection, seeded per survey so a survey's
    sample does not depend on the others), read in the survey's band, into one EvalData with
    each object's survey."""
    import zlib

    from lcdash.evaluation import EvalData, apply_label_map
    from lcdash.store.labels import load_labels

    cap = params.get("max_per_class")
    if cap is None:
        cap = cfg.folds * cfg.test_per_class + 2 * math.ceil((1 + cfg.val_fraction) * max(cfg.spc))
    parts, bands_used = [], {}
    for survey in dict.fromkeys([*cfg.train_surveys, *cfg.score_surveys]):
        oids, labels = load_labels(store, params.get("labels", "catalogue"), survey)
        mapped = apply_label_map(labels, np.full(len(labels), survey), cfg.label_map)
        keep = np.array([m is not None and (not cfg.classes or m in cfg.classes) for m in mapped], bool)
        oids, labels, mapped = oids[keep], labels[keep], mapped[keep].astype(str)
        band = bands_used[survey] = survey_band(store, survey, params.get("band"))
        have = store.objects(oids=oids, band=band, columns=["oid"])["oid"].to_numpy(np.int64)
        keep = np.isin(oids, have)
        oids, labels, mapped = oids[keep], labels[keep], mapped[keep]
        rng = np.random.default_rng([cfg.seed, zlib.crc32(survey.encode())])
        take = [
            rng.choice(i, size=int(cap), replace=False) if len(i) > cap else i
            for i in (np.flatnonzero(mapped == c) for c in np.unique(mapped))
        ]
        sel = np.sort(np.concatenate(take)) if take else np.zeros(0, np.int64)
        parts.append((survey, band, oids[sel], labels[sel]))
    batches = [store.read_batch(o, band=b) for _, b, o, _ in parts]
    rows = [(b, i) for b in batches for i in range(len(b))]
    batch = LightCurveBatch.from_arrays(
        [b.row(i)[0] for b, i in rows], [b.row(i)[1] for b, i in rows], [b.row(i)[2] for b, i in rows],
        oid=np.concatenate([b.oid for b in batches]), band=[x for b in batches for x in b.band],
    )  # fmt: skip
    labels = np.concatenate([lab for *_, lab in parts])
    surveys = np.concatenate([np.full(len(o), s) for s, _, o, _ in parts])
    layers, encoder = None, None
    if "probe" in cfg.models:
        enc = _encoder(store, params.get("encoder"))
        encoder = {**_encoder_info(enc), "dir": str(enc["path"])}
        found = []
        for _, band, oids, _ in parts:
            eo, eb, lay = _embeddings(store, enc["name"], oids=oids, band=band)
            r = _align(eo, eb, oids)
            found.append(lay[r] if len(r) and (r >= 0).all() else None)
        if all(f is not None for f in found):
            layers = np.concatenate(found)
    periods = None
    if cfg.sequence_input == "folded" and cfg.periods == "catalogue":
        cat = store.objects(oids=batch.oid, columns=["oid", "period"]).set_index("oid")["period"]
        periods = cat.reindex(batch.oid).to_numpy(dtype=np.float64, na_value=np.nan)
    EvalData(batch, labels, layers, encoder, periods, surveys).save(folder / "data")
    return {
        "band_used": None,
        "bands_used": bands_used,
        "n_objects": int(len(labels)),
        "max_per_class": int(cap),
        "layers_from_store": layers is not None,
    }


# --------------------------------------------------------------------------------------------------
# periods: `lcdash periods` (periods.store_periods) split where the store's write lock demands it:
# prepare exports the light curves that need a period, the worker finds them, finalize stores them

PERIODS_CHUNK = 2048  # light curves per exported batch file
PERIODS_STEP = 256  # light curves per find_periods call in the worker: progress and cancel in between


def periods_prepare(store, params, folder):
    from lcdash.periods import FINDER_VERSION
    from lcdash.store.periods import missing_periods

    survey, band = params.get("survey") or None, params.get("band") or None
    if survey is not None and survey not in store.surveys():
        raise ValidationError(f"no survey {survey!r} in this store; surveys: {', '.join(store.surveys())}")
    if band is not None and band not in store.bands():
        raise ValidationError(f"no band {band!r} in this store; bands: {', '.join(store.bands())}")
    every = bool(params.get("overwrite"))
    todo = missing_periods(store, FINDER_VERSION, survey=survey, band=band, every=every)
    if todo.empty:
        raise ValidationError(
            f"every light curve selected already has a period of {FINDER_VERSION}; "
            "tick 'Recompute stored periods' to find them again"
        )
    files = []
    for b, group in todo.groupby("band", sort=True):
        oids = group["oid"].to_numpy(np.int64)
        for i in range(0, len(oids), PERIODS_CHUNK):
            name = f"batch_{len(files):04d}.npz"
            store.export_batch(oids[i : i + PERIODS_CHUNK], str(b), folder / name)
            files.append(name)
    return {"batches": files, "n_curves": int(len(todo)), "finder": FINDER_VERSION}


def periods_run(folder, params, progress):
    import pandas as pd

    from lcdash.periods import find_periods, results_frame

    total = int(params["n_curves"])
    progress(0, total, f"finding the periods of {total:,} light curves")
    done = found = 0
    t0 = time.monotonic()
    outputs = []
    for name in params["batches"]:
        batch = LightCurveBatch.load(folder / name)
        frames = []
        for lo in range(0, len(batch), PERIODS_STEP):
            sub = batch.take(np.arange(lo, min(lo + PERIODS_STEP, len(batch))))
            base = done

            def report(n, _total, base=base):
                rate = (base + n) / max(time.monotonic() - t0, 1e-9)
                progress(base + n, total, f"periods of {base + n:,}/{total:,} light curves ({rate:.0f}/s)")

            results = find_periods(sub, progress=report)
            _cancel_check(progress)
            frames.append(results_frame(sub.oid, sub.band, results))
            done += len(results)
            found += sum(r.found for r in results)
        out = name.replace("batch_", "periods_").replace(".npz", ".parquet")
        pd.concat(frames, ignore_index=True).to_parquet(folder / out, index=False)
        outputs.append(out)
    seconds = time.monotonic() - t0
    return {
        "files": outputs,
        "light_curves": done,
        "found": found,
        "seconds": seconds,
        "lc_per_s": done / seconds if seconds > 0 else None,
    }


def periods_finalize(store, folder, params, result):
    import pandas as pd

    from lcdash.store.periods import save_periods

    finder = params["finder"]
    rows = sum(save_periods(store, pd.read_parquet(folder / name), finder) for name in result["files"])
    return {k: v for k, v in result.items() if k != "files"} | {"rows": rows, "finder": finder}


# --------------------------------------------------------------------------------------------------


def _finetune_prepare(store, params, folder):
    return train_prepare(store, {**params, "finetune": True}, folder) | {"finetune": True}


#: The built-in job kinds, handed to the JobManager (`JobManager(store, kinds=KINDS)`).
KINDS: dict[str, TaskKind] = {
    k.name: k
    for k in (
        task_kind("embed", embed_run, embed_prepare, embed_finalize, "embeddings of an encoder"),
        task_kind(
            "pretrain", train_run, train_prepare, train_finalize, "masked pretraining of a new encoder"
        ),
        task_kind("finetune", train_run, _finetune_prepare, train_finalize, "fine-tune an encoder"),
        task_kind("import_weights", import_run, import_prepare, import_finalize, "import official weights"),
        task_kind("project", project_run, project_prepare, project_finalize, "UMAP projection of embeddings"),
        task_kind("probe", probe_run, probe_prepare, probe_finalize, "few-shot probe on labels"),
        task_kind("evaluate", evaluate_run, evaluate_prepare, evaluate_finalize, "compare classifiers"),
        task_kind("embed_catalog", embed_catalog_run, embed_catalog_prepare, embed_catalog_finalize,
                  "embeddings on a Dask cluster"),
        task_kind("periods", periods_run, periods_prepare, periods_finalize, "periods of the light curves"),
    )
}
