"""Inference cost per light curve against its length N, for the four model families.

Becker et al. 2020 state that the RNN's complexity grows linearly with the light curve's size and
feature extraction as N log N (the periodogram). This script times, on simulated curves of N = 100
to 100,000 observations (one thread):
- Becker RNN: dt/dm windows (w=4, s=2) + GRU over *every* step (max_steps=None; the classifier's
  default cap of 1,000 steps would flatten the curve beyond 2,004 observations);
- Aguirre CNN: dt/dm sequences truncated to their first 500 differences (shorter ones zero-padded),
  so its model cost is constant in N: the CNN only ever sees the first 500 observations;
- Astromer encoder: consecutive 200-observation windows (N/200 windows, the last clamped), per-layer
  means (lcdash.embed.embed_batch);
- feature extraction (lcdash.features: 44 light-curve features including the Lomb-Scargle
  periodogram on a fixed grid of 2**17 + 1 frequencies, computed with the NFFT).
It prints CPU ms per light curve (process time: on a shared machine wall time mostly measures the
other processes), fits log-log slopes (all N, and N >= 1,000), and writes a plot, a JSON
file and a Markdown table into --out (default docs/results/cost_vs_length).

    python bench/cost_vs_length.py [--lengths 100 300 ... 100000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from _timing import best_of  # noqa: E402  (bench/ is on sys.path when run as a script)

LENGTHS = [100, 300, 1_000, 3_000, 10_000, 30_000, 100_000]
CURVES = 4  # light curves per call, at every N
MODELS = ("rnn", "cnn", "astromer", "features")
TITLES = {
    "rnn": "Becker RNN (all steps)",
    "cnn": "Aguirre CNN (first 500)",
    "astromer": "Astromer encoder (200-obs windows)",
    "features": "features incl. periodogram",
}


def simulate(n_curves: int, n_obs: int, seed: int):
    """Survey-like curves: nightly visits in yearly seasons, a periodic signal and noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_curves):
        t = np.sort(rng.uniform(0, max(30.0, n_obs / 4.0), n_obs)) + 50_000.0
        t += np.arange(n_obs) * 1e-6  # unique times
        p = rng.uniform(0.2, 20)
        m = 15 + 0.4 * np.sin(2 * np.pi * t / p) + rng.normal(0, 0.03, n_obs)
        out.append((t, m.astype(np.float32), np.full(n_obs, 0.03, np.float32)))
    return out


def n_curves_for(n: int) -> int:
    """The same batch of curves at every length: the RNN's sequential GRU steps are shared by a
    batch's rows, so a batch size that shrank with N would bend the slope (2 curves cost ~5x per
    curve what 32 do at N = 3,000 on one thread)."""
    return CURVES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=LENGTHS)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument(
        "--encoder",
        default=str(REPO / "data" / "encoders" / "astromer2-logpe-folded-demo"),
        help="encoder folder (default: the shipped demo encoder)",
    )
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "cost_vs_length"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from lcdash.classifiers import AguirreCNN, BeckerRNN
    from lcdash.embed import embed_batch
    from lcdash.features import extract_features
    from lcdash.weights import load_encoder

    load0 = os.getloadavg()[0]
    train = [c[:2] for c in simulate(48, 120, seed=0)]
    y = np.array(["A", "B", "C"] * 16)
    # inference cost does not depend on how well a model is trained: one or two epochs
    rnn = BeckerRNN(max_epochs=2, max_steps=None, seed=0).fit(train, y)
    cnn = AguirreCNN(max_epochs=1, augment=False, seed=0).fit(train, y)
    encoder, cfg = load_encoder(args.encoder)
    run = {
        "rnn": lambda c: rnn.predict_proba([x[:2] for x in c]),
        "cnn": lambda c: cnn.predict_proba([x[:2] for x in c]),
        "astromer": lambda c: embed_batch(encoder, c, batch_size=64, device="cpu"),
        "features": lambda c: extract_features(c, n_jobs=args.threads),
    }
    print(
        f"threads {args.threads}; encoder {Path(args.encoder).name} ({cfg.arch}, {cfg.n_layers} layers, "
        f"d={cfg.d_model}); load average {load0:.2f}; best of {args.repeat}"
    )
    header = " ".join(f"{m:>10}" for m in args.models)
    print(f"{'N':>8} {'curves':>6} {header}   (CPU ms per light curve)")
    ms: dict[str, list[float]] = {m: [] for m in args.models}
    for n in args.lengths:
        k = n_curves_for(n)
        curves = simulate(k, n, seed=n)
        for m in args.models:
            run[m](curves[:1])  # warm-up (allocations, thread pools)
            ms[m].append(1e3 * best_of(lambda m=m, c=curves: run[m](c), args.repeat) / k)
        print(f"{n:>8,} {k:>6} " + " ".join(f"{ms[m][-1]:>10.3f}" for m in args.models), flush=True)

    N = np.asarray(args.lengths, dtype=float)
    slopes = {}
    for m in args.models:
        y_ = np.log10(ms[m])
        big = N >= 1_000
        slopes[m] = {
            "all": float(np.polyfit(np.log10(N), y_, 1)[0]),
            "N>=1000": float(np.polyfit(np.log10(N[big]), y_[big], 1)[0]) if big.sum() >= 2 else None,
        }
    print(
        "log-log slopes (1 = linear): "
        + "; ".join(
            f"{m} {s['all']:.2f} (N>=1000: {s['N>=1000']:.2f})"
            if s["N>=1000"] is not None
            else f"{m} {s['all']:.2f}"
            for m, s in slopes.items()
        )
    )
    load1 = os.getloadavg()[0]
    print(f"load average after: {load1:.2f}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "lengths": args.lengths,
        "curves": [n_curves_for(n) for n in args.lengths],
        "ms_per_lc": ms,
        "slopes": slopes,
        "threads": args.threads,
        "encoder": Path(args.encoder).name,
        "load_average": [load0, load1],
        "repeat": args.repeat,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for m in args.models:
        ax.loglog(N, ms[m], "o-", label=f"{TITLES[m]}: slope {slopes[m]['all']:.2f}")
    ref = ms[args.models[0]][0] * N / N[0]
    ax.loglog(N, ref, "k:", lw=1, label="slope 1 (linear)")
    ax.set_xlabel("observations per light curve N")
    ax.set_ylabel("CPU ms per light curve (1 thread)")
    ax.set_title("Inference cost against light-curve length")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "cost_vs_length.png", dpi=120)
    lines = [
        "| N | curves | " + " | ".join(TITLES[m] for m in args.models) + " |",
        "|---|---|" + "---|" * len(args.models),
    ]
    for i, n in enumerate(args.lengths):
        lines.append(
            f"| {n:,} | {n_curves_for(n)} | " + " | ".join(f"{ms[m][i]:.3g}" for m in args.models) + " |"
        )
    lines.append("| slope, all N | | " + " | ".join(f"{slopes[m]['all']:.2f}" for m in args.models) + " |")
    lines.append(
        "| slope, N >= 1,000 | | "
        + " | ".join(
            f"{slopes[m]['N>=1000']:.2f}" if slopes[m]["N>=1000"] is not None else "-" for m in args.models
        )
        + " |"
    )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'cost_vs_length.png'}, results.json, table.md")


if __name__ == "__main__":
    main()
