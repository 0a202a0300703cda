"""Embedding quality of every encoder in a store: does its map organise the labelled objects?

    .venv/bin/python bench/embedding_quality.py --db data/lcdash.duckdb [--spc 100] [--k 10]
        [--encoders a,b] [--survey NAME] [--band B] [--threads 2]

For each encoder with embeddings (objects with a label only), prints:
- kNN(k) accuracy (leave-one-out, cosine) of the map input, raw and standardised
  (`lcdash.projection.map_input` standardises: this is the measurement behind that choice);
- the few-shot probe's macro F1 at one spc (1 fold, `lcdash.evaluation`, 100 test objects per
  class or what the smallest class allows), its learned layer weights and its fit time.
Chance is 1 / n_classes for balanced classes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--encoders", default=None, help="comma-separated names (default: every encoder)")
    ap.add_argument("--survey", default=None)
    ap.add_argument("--band", default=None)
    ap.add_argument("--spc", type=int, default=100)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    from lcdash.evaluation import EvalConfig, EvalData, run_evaluation
    from lcdash.models.astromer import AstromerConfig
    from lcdash.projection import knn_accuracy, select_embedding, standardize
    from lcdash.store import Store
    from lcdash.store.embeddings import get_encoder, list_encoders, load_embeddings

    torch.set_num_threads(args.threads)
    store = Store(args.db, read_only=True)
    names = args.encoders.split(",") if args.encoders else list(list_encoders(store)["name"])
    objs = store.objects(survey=args.survey, columns=["oid", "label"]).dropna(subset=["label"])
    print(f"{args.db}: {len(objs)} labelled objects" + (f" of {args.survey}" if args.survey else ""))
    print(f"{'encoder':28s} {'variant':24s} {'n':>6s} {'kNN raw':>8s} {'kNN std':>8s} "
          f"{'probe F1':>8s} {'fit s':>6s}  layer weights")
    for name in names:
        oid, _, layers = load_embeddings(store, name, oids=objs["oid"].to_numpy(np.int64), band=args.band)
        if len(oid) <= args.k:
            print(f"{name:28s} (no embeddings of labelled objects)")
            continue
        labels = objs.set_index("oid")["label"].reindex(oid).to_numpy(object)
        variant = AstromerConfig.variant_of(get_encoder(store, name)["config"].get("config", {}))
        X = select_embedding(layers, "weighted")
        raw, std = knn_accuracy(X, labels, k=args.k), knn_accuracy(standardize(X), labels, k=args.k)
        counts = np.unique(labels.astype(str), return_counts=True)[1]
        test = int(min(100, max(1, counts.min() - args.spc - int(np.ceil(0.2 * args.spc)))))
        cfg_e = EvalConfig(models=["probe"], spc=[args.spc], folds=1, test_per_class=test,
                           threads=args.threads)
        batch = store.read_batch(oid[:1])  # the probe reads embeddings; the batch only carries oids
        batch = type(batch)(oid, ["-"] * len(oid), *(np.zeros((len(oid), 1), dt) for dt in
                            (np.float64, np.float32, np.float32, bool)), np.zeros(len(oid), np.int32))
        t0 = time.perf_counter()
        res = run_evaluation(EvalData(batch, labels.astype(str), layers, {"name": name}), cfg_e)
        rec = res.records[0]
        lw = " ".join(f"{w:.2f}" for w in rec["extra"].get("layer_weights", []))
        print(f"{name:28s} {variant:24s} {len(oid):6d} {raw:8.3f} {std:8.3f} {rec['macro_f1']:8.3f} "
              f"{rec['train_seconds']:6.1f}  {lw}   ({time.perf_counter() - t0:.0f} s, test {test}/class)",
              flush=True)
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
