"""Classifier speed: training wall time per model per spc and inference light curves per second.

    .venv/bin/python bench/classifier_bench.py [--data ../shared/data/catalina_train] [--spc 20 100 500]
        [--models probe,rnn,cnn,rf] [--max-epochs 20] [--threads 1] [--encoder-dir DIR]

Reads the tidy Parquet pair directly (no store), one band, and trains each model once per spc on a
class-balanced draw (validation = 0.2 x spc per class), then times predict_proba on 2000 other
light curves (feature extraction included for the RF; for the probe, embeddings are computed with
the encoder in --encoder-dir, or random stand-ins of the same shape [N, 7, 256] when absent, and
the encoder's own speed is reported separately). Epochs are capped (--max-epochs) so that the
training time is comparable across spc: the number is seconds for that many epochs at most.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "catalina_train"

from lcdash.lightcurve import LightCurveBatch  # noqa: E402


def load_parquet_batch(folder, band=None, max_objects=None, seed=0):
    """(LightCurveBatch, labels) from a tidy Parquet pair, one band."""
    folder = Path(folder)
    objects = pd.read_parquet(folder / "objects.parquet", columns=["object_id", "label"])
    obs = pd.read_parquet(folder / "observations.parquet")
    tcol = "time" if "time" in obs.columns else [c for c in obs.columns if c.startswith("time")][0]
    band = band or sorted(obs["band"].unique())[0]
    obs = obs[obs["band"] == band]
    if max_objects:
        keep = objects.sample(n=min(max_objects, len(objects)), random_state=seed)["object_id"]
        obs = obs[obs["object_id"].isin(set(keep))]
    obs = obs.sort_values(["object_id", tcol])
    ids, start, counts = np.unique(obs["object_id"].to_numpy(), return_index=True, return_counts=True)
    B, L = len(ids), int(counts.max())
    time_ = np.zeros((B, L))
    mag = np.zeros((B, L), np.float32)
    err = np.full((B, L), np.nan, np.float32)
    mask = np.zeros((B, L), bool)
    t, m, e = (obs[c].to_numpy() for c in (tcol, "mag", "mag_err"))
    for i, (s, n) in enumerate(zip(start, counts, strict=True)):
        time_[i, :n], mag[i, :n], err[i, :n], mask[i, :n] = t[s : s + n], m[s : s + n], e[s : s + n], True
    batch = LightCurveBatch(
        oid=np.arange(B),
        band=[band] * B,
        time=time_,
        mag=mag,
        mag_err=err,
        mask=mask,
        length=counts.astype(np.int32),
    )
    labels = objects.set_index("object_id").loc[ids, "label"].astype(str).to_numpy()
    return batch, labels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--band", default=None)
    ap.add_argument("--spc", type=int, nargs="+", default=[20, 100, 500])
    ap.add_argument("--models", default="probe,rnn,cnn,rf")
    ap.add_argument("--max-epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--n-infer", type=int, default=2000)
    ap.add_argument("--encoder-dir", default=None)
    ap.add_argument("--out", default=None, help="write the table as JSON here")
    args = ap.parse_args(argv)

    import torch

    from lcdash.classifiers import make_classifier
    from lcdash.device import describe_device

    if args.threads:
        torch.set_num_threads(args.threads)
    batch, labels = load_parquet_batch(args.data, args.band)
    rng = np.random.default_rng(0)
    classes = np.unique(labels)
    models = args.models.split(",")
    rows = []
    infer_idx = rng.choice(len(labels), min(args.n_infer, len(labels)), replace=False)
    print(f"device: {describe_device()}; {len(labels)} light curves, {len(classes)} classes")
    draws = {}
    for spc in args.spc:  # class-balanced draws, disjoint from the inference set
        train, val = [], []
        for c in classes:
            members = rng.permutation(np.setdiff1d(np.flatnonzero(labels == c), infer_idx))
            n_val = max(1, min(int(np.ceil(0.2 * spc)), len(members) // 6))  # small classes: most trains
            val.extend(members[:n_val])
            train.extend(members[n_val : n_val + spc])
        draws[spc] = (np.array(train), np.array(val))
    layers, encoder_rate = None, None
    if "probe" in models:
        needed = np.unique(np.concatenate([infer_idx, *[np.concatenate(d) for d in draws.values()]]))
        layers = np.zeros((len(labels), 7, 256), np.float32)
        if args.encoder_dir:  # embed only the light curves the bench uses; time the encoder on them
            from lcdash.embed import embed_batch
            from lcdash.weights import load_encoder

            model, _ = load_encoder(args.encoder_dir)
            t0 = time.perf_counter()
            emb = np.asarray(embed_batch(model, batch.take(needed))[1], np.float32)
            encoder_rate = len(needed) / (time.perf_counter() - t0)
            layers = np.zeros((len(labels), *emb.shape[1:]), np.float32)
            layers[needed] = emb
        else:
            layers[needed] = rng.normal(size=(len(needed), 7, 256))
    for spc in args.spc:
        train, val = draws[spc]
        for name in models:
            X = layers if name == "probe" else batch

            def sub(idx, X=X):
                return X[idx] if isinstance(X, np.ndarray) else X.take(idx)

            est = make_classifier(name, max_epochs=args.max_epochs, seed=0)
            t0 = time.perf_counter()
            est.fit(sub(train), labels[train], sub(val), labels[val])
            fit_s = time.perf_counter() - t0
            X_inf = sub(infer_idx)
            t0 = time.perf_counter()
            est.predict_proba(X_inf)
            rate = len(infer_idx) / (time.perf_counter() - t0)
            row = dict(
                model=name,
                spc=spc,
                n_train=len(train),
                train_seconds=round(fit_s, 2),
                epochs=getattr(est, "n_epochs_", None),
                infer_lc_per_s=round(rate, 1),
            )
            if name == "probe" and encoder_rate:
                row["encoder_lc_per_s"] = round(encoder_rate, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
