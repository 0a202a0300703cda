"""Scale-out speed: embed-catalog light curves/s with 1 and 2 Dask workers, peak memory per worker,
and DDP pretraining windows/s with 1 and 2 torchrun processes.

    .venv/bin/python bench/scale_bench.py [--n-objects 2000] [--partitions 16] [--model astromer2-demo]
        [--workers 1 2] [--ddp-objects 400] [--ddp-epochs 2] [--skip-ddp] [--json OUT]

The catalogue is `lcdash demo --out-parquet` (streamed synthetic survey, one band, 60-400 observations a
light curve) in a temporary folder. For each worker count a fresh LocalCluster (processes, one thread
each) embeds the whole catalogue into a fresh output folder; the time runs from the first submitted
partition to the last written one (the cluster's start and each worker's single encoder load are
outside it: that is what a long run amortises). Peak memory is each worker process's peak RSS.

DDP pretraining runs `torchrun --nproc-per-node N -m lcdash pretrain` on a demo store (Astromer 2,
2 x 64, batch 32, CPU, gloo, one torch thread per process) and reports the training windows/s of the
epochs (validation excluded), from the checkpoint's history; "1 process, 2 threads" is the
single-process alternative on the same cores.

The machine may be shared: the 1-minute load average is printed before and after each measurement,
with the workers' CPU time, so "cores busy" (CPU seconds / wall seconds) and light curves per
CPU-second tell contention from overhead: if LC per CPU-second stays the same with 2 workers while
LC/s does not double, the second worker did not get a second core.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load() -> float:
    return round(os.getloadavg()[0], 2)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bench_embedding(catalogue: Path, model_dir: Path, workers: int, tmp: Path) -> dict:
    from distributed import Client, LocalCluster

    from lcdash.scale import embed_catalog

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster as lc, Client(lc) as client:
        before = load()
        cpu0 = client.run(_cpu_s)
        res = embed_catalog(catalogue, model_dir, tmp / f"emb-{workers}", client=client)
        cpu = sum(v - cpu0[k] for k, v in client.run(_cpu_s).items())  # includes encoder load (plugin)
        after = load()
        peaks = client.run(_peak_rss_mb)
    if res.failed:
        raise SystemExit(f"partitions failed: {res.failed}")
    return {"workers": workers, "light_curves": res.rows, "windows": res.windows,
            "seconds": round(res.seconds, 2), "lc_per_s": round(res.rows / res.seconds, 1),
            "worker_cpu_s": round(cpu, 1), "lc_per_cpu_s": round(res.rows / cpu, 1) if cpu else None,
            "cores_used": round(cpu / res.seconds, 2),
            "peak_rss_mb_per_worker": [round(v, 0) for v in peaks.values()],
            "load_before": before, "load_after": after}


def bench_ddp(db: Path, nproc: int, threads: int, epochs: int, tmp: Path) -> dict:
    out = tmp / f"ddp-{nproc}x{threads}"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "lcdash", "pretrain", "--db", str(db), "--out", str(out), "--n-layers", "2",
           "--d-model", "64", "--n-heads", "4", "--d-ff", "64", "--batch-size", "32", "--epochs", str(epochs),
           "--patience", "99", "--device", "cpu", "--threads", str(threads)]
    before = load()
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if res.returncode:
        raise SystemExit(f"torchrun failed:\n{res.stderr[-3000:]}")
    hist = json.loads((out / "checkpoint.json").read_text())["history"][1:]
    windows = sum(h["windows"] for h in hist)
    seconds = sum(h["seconds"] for h in hist)
    return {"processes": nproc, "threads_each": threads, "epochs": len(hist), "windows": windows,
            "train_seconds": round(seconds, 2), "windows_per_s": round(windows / seconds, 1),
            "wall_s": round(wall, 1), "load_before": before, "load_after": load()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-objects", type=int, default=2000)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--model", default="astromer2-logpe-folded-demo",
                    help="encoder folder (default: the shipped demo)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--ddp-objects", type=int, default=400)
    ap.add_argument("--ddp-epochs", type=int, default=2)
    ap.add_argument("--skip-ddp", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from lcdash.simulate import write_survey_parquet
    from lcdash.store.embeddings import DEFAULT_ENCODER, default_encoder_dir

    model_dir = default_encoder_dir() if args.model == DEFAULT_ENCODER else Path(args.model)
    print(f"cores: {os.cpu_count()}, load average {os.getloadavg()}", flush=True)
    results: dict = {"cores": os.cpu_count(), "embedding": [], "ddp": []}
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        tmp = Path(tmp)
        per = -(-args.n_objects // args.partitions)
        cat = write_survey_parquet(tmp / "survey", args.n_objects, seed=0, objects_per_partition=per)
        print(f"catalogue: {cat['objects']:,} light curves, {cat['observations']:,} observations, "
              f"{cat['partitions']} partitions; encoder {model_dir.name}", flush=True)
        for w in args.workers:
            r = bench_embedding(tmp / "survey", model_dir, w, tmp)
            results["embedding"].append(r)
            print(f"embed-catalog, {w} worker(s): {r['lc_per_s']:.1f} LC/s ({r['light_curves']} LC, "
                  f"{r['windows']} windows in {r['seconds']:.1f} s); peak RSS per worker "
                  f"{r['peak_rss_mb_per_worker']} MB; workers' CPU {r['worker_cpu_s']} s = "
                  f"{r['cores_used']} cores busy, {r['lc_per_cpu_s']} LC per CPU-second; "
                  f"load {r['load_before']} -> {r['load_after']}", flush=True)
        emb = {r["workers"]: r["lc_per_s"] for r in results["embedding"]}
        if 1 in emb and 2 in emb:
            results["embedding_ratio_2_over_1"] = round(emb[2] / emb[1], 2)
            print(f"2 workers / 1 worker: {emb[2] / emb[1]:.2f}x", flush=True)
        if not args.skip_ddp:
            from lcdash.store.demo import create_demo_store

            db = tmp / "ddp.duckdb"
            create_demo_store(db, n_objects=args.ddp_objects, seed=0).close()
            for nproc, threads in ((1, 1), (2, 1), (1, 2)):
                r = bench_ddp(db, nproc, threads, args.ddp_epochs, tmp)
                results["ddp"].append(r)
                print(f"pretrain, {nproc} process(es) x {threads} thread(s): "
                      f"{r['windows_per_s']:.1f} windows/s ({r['windows']} windows in "
                      f"{r['train_seconds']:.1f} s of training); "
                      f"load {r['load_before']} -> {r['load_after']}", flush=True)
            d = {(r["processes"], r["threads_each"]): r["windows_per_s"] for r in results["ddp"]}
            results["ddp_ratio_2_over_1"] = round(d[(2, 1)] / d[(1, 1)], 2)
            print(f"DDP 2 processes / 1 process: {d[(2, 1)] / d[(1, 1)]:.2f}x", flush=True)
    print(f"load average at the end {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
