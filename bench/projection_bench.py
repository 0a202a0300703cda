"""How long UMAP projections and nearest-neighbour queries take (prints measured numbers).

    .venv/bin/python bench/projection_bench.py                 # 20,000 and 50,000 points of 256-d
    .venv/bin/python bench/projection_bench.py --sizes 2000 20000 --dim 256

Each UMAP run happens in a fresh Python process so that `import umap` and numba's compilation are
counted the way a background job sees them. "cold" = an empty NUMBA_CACHE_DIR (first run on a
machine), "warm" = the cache that the cold run filled. Data: 256-d points in 20 Gaussian clusters of
different widths (embeddings of a labelled survey look like this), float32.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_points(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim)) * 3.0
    which = rng.integers(0, 20, n)
    width = rng.uniform(0.5, 2.0, 20)[which][:, None]
    return (centres[which] + rng.normal(size=(n, dim)) * width).astype(np.float32)


def child(n: int, dim: int) -> None:
    """One UMAP run in this process; prints a JSON line of timings."""
    t0 = time.perf_counter()
    from lcdash.projection import _numba_cache

    _numba_cache()
    import umap  # noqa: F401  (timed: numba/pynndescent setup)

    t_import = time.perf_counter() - t0
    X = make_points(n, dim)
    from lcdash.projection import umap_project

    t1 = time.perf_counter()
    xy = umap_project(X, n_neighbors=15, min_dist=0.1, metric="cosine", seed=0)
    t_fit = time.perf_counter() - t1
    assert xy.shape == (n, 2) and np.isfinite(xy).all()
    print(json.dumps({"n": n, "dim": dim, "import_s": t_import, "fit_s": t_fit}))


def run_child(n: int, dim: int, cache: str) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", str(n), "--dim", str(dim)], env=env,
                         capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_s"] = time.perf_counter() - t0
    return res


def bench_neighbours(n: int, dim: int, repeats: int = 20) -> None:
    from lcdash.projection import nearest_neighbours

    X = make_points(n, dim, seed=1)
    rng = np.random.default_rng(0)
    for metric in ("cosine", "euclidean"):
        times = []
        for q in rng.integers(0, n, repeats):
            t0 = time.perf_counter()
            nearest_neighbours(X, int(q), k=10, metric=metric)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        nearest_neighbours(X, rng.integers(0, n, 100), k=10, metric=metric)
        t_batch = time.perf_counter() - t0
        ms = np.array(times) * 1e3
        print(f"nearest_neighbours {metric:9s} N={n:,} d={dim}: one query median {np.median(ms):.1f} ms "
              f"(min {ms.min():.1f}, max {ms.max():.1f}); 100 queries at once {t_batch:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 50_000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--skip-umap", action="store_true", help="only time nearest-neighbour queries")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.dim)
        return

    print(f"cpu cores: {os.cpu_count()}; load average: {os.getloadavg()}")
    for n in args.sizes:
        bench_neighbours(n, args.dim)
    if args.skip_umap:
        return
    with tempfile.TemporaryDirectory(prefix="lcdash-numba-bench-") as cache:
        for i, n in enumerate(args.sizes):
            runs = [("cold", None), ("warm", None)] if i == 0 else [("warm", None)]
            for label, _ in runs:
                r = run_child(n, args.dim, cache)
                print(f"UMAP {label} N={n:,} d={args.dim}: import umap {r['import_s']:.1f} s, "
                      f"fit {r['fit_s']:.1f} s, whole process {r['process_s']:.1f} s", flush=True)


if __name__ == "__main__":
    main()
