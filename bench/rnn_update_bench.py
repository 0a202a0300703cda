"""Cost of adding 10 observations to a light curve: Becker RNN incremental update vs full re-read.

Becker et al. 2020 (MNRAS 493, 2981) note that the RNN "can be updated with a low computational
cost for new observations". lcdash keeps each curve's GRU state and its last w-s+1..w observations
(`BeckerRNN.stream_states`), so 10 new observations cost a handful of GRU steps whatever the curve's
length, while a full re-read costs N/2 steps. Prints CPU ms per light curve for curves of 100 / 1,000 /
10,000 simulated observations, one curve at a time and in batches, and checks the two agree.

    python bench/rnn_update_bench.py [--threads 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _timing import best_of  # noqa: E402  (bench/ is on sys.path when run as a script)


def simulate(n_curves: int, n_obs: int, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_curves):
        t = np.cumsum(rng.exponential(1.5, n_obs)) + 50_000.0
        p = rng.uniform(0.2, 20)
        m = 15 + 0.4 * np.sin(2 * np.pi * t / p) + rng.normal(0, 0.03, n_obs)
        out.append((t, m.astype(np.float32)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lengths", type=int, nargs="+", default=[100, 1_000, 10_000])
    ap.add_argument("--new", type=int, default=10, help="observations added")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from lcdash.classifiers import BeckerRNN

    train = simulate(60, 80, seed=0)
    y = np.array(["A", "B", "C"] * 20)
    # a trained model's cost does not depend on how well it is trained: 2 epochs, paper's GRU sizes
    est = BeckerRNN(max_epochs=2, max_steps=None, seed=0).fit(train, y)
    print(
        f"Becker RNN: 2 x GRU({est.hidden}), w={est.w}, s={est.s}; torch threads {args.threads}; "
        f"load average {os.getloadavg()[0]:.2f}; best of {args.repeat}"
    )
    print(
        f"{'N obs':>7} {'batch':>6} {'full ms/LC':>11} {'incr ms/LC':>11} {'speed-up':>9} "
        f"{'steps full':>11} {'steps incr':>11} {'max |dp|':>9}"
    )
    k = args.new
    for n in args.lengths:
        for batch in (1, 100 if n <= 1_000 else 20):
            curves = simulate(batch, n + k, seed=n + batch)
            old = [(t[:n], m[:n]) for t, m in curves]
            new = [(t[n:], m[n:]) for t, m in curves]
            saved = est.stream_states(old)
            full_s = best_of(lambda c=curves: est.stream_states(c), args.repeat, min_seconds=0.2)
            inc_s = best_of(lambda s=saved, nw=new: est.update_stream(s, nw), args.repeat, min_seconds=0.2)
            full, inc = est.stream_states(curves), est.update_stream(saved, new)
            err = float(np.abs(full.proba - inc.proba).max())
            steps_inc = int((inc.n_steps - saved.n_steps).max())
            print(
                f"{n:>7,} {batch:>6} {1e3 * full_s / batch:>11.3f} {1e3 * inc_s / batch:>11.3f} "
                f"{full_s / inc_s:>8.1f}x {int(full.n_steps.max()):>11,} {steps_inc:>11} {err:>9.1e}"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
