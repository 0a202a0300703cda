"""Encoder speed: inference light curves per second, pretraining windows per second, peak memory.

    .venv/bin/python bench/encoder_throughput.py [--shared ../shared] [--batches 64 256]
        [--precisions float32 bf16] [--models a1,a2,demo] [--threads N] [--json OUT]

Inference is timed the way ../shared/golden/README.md section 8 timed the official TensorFlow code:
one 200-step window per light curve (the first window of the first Catalina objects with >= 200
observations, or simulated ones when ../shared is absent), 3 warm-up calls, then the median of 5
timed calls of the encoder on a ready batch (here: `model.encode` + the per-layer masked means that
lcdash stores, i.e. all L+1 layers pooled, and the result copied to the host); the data pipeline is
timed separately ("end to end": `embed_batch` on whole light curves, windowing included).
Models: Astromer 1 with the official macho_a0 weights (converted into a temporary folder; random
weights of the same shape without ../shared), Astromer 2 at the paper's size (6 x 256, random
weights: no official Astromer 2 weights are available here) and the shipped astromer2-logpe-folded-demo.
bf16 rows also give the error of the pooled embedding against float32 on the same windows.

The TensorFlow reference (same 2-core machine type, macho_a0): eager `encoder(batch)` 239 / 379 LC/s
at batch 64 / 256 (what `encode()` does), tf.function graph 601 / 576 LC/s. The machine may be
shared: the load average is printed before and after, and each row also gives light curves per
CPU-second (process CPU time, all threads), which contention distorts less than wall time.
bf16 is only fast on CPUs with the avx512_bf16 / AMX instructions; the script says whether this one
has them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_SHARED = REPO.parent / "shared"
TF_EAGER = {64: 239.0, 256: 379.0}
TF_GRAPH = {64: 601.0, 256: 576.0}


# ------------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------------
def reset_peak_rss() -> bool:
    """Reset the kernel's VmHWM (peak RSS) of this process; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def load_curves(shared: Path, n: int, min_obs: int = 0):
    """(time, mag, err) of the first n objects (object ids sorted as strings) with >= min_obs points."""
    path = shared / "data" / "catalina_train" / "observations.parquet"
    if path.exists():
        import pyarrow.parquet as pq

        df = pq.read_table(path, columns=["object_id", "time_mjd", "mag", "mag_err"]).to_pandas()
        counts = df.groupby("object_id").size()
        ids = sorted(counts[counts >= min_obs].index.astype(str))[:n]
        df = df[df["object_id"].isin(set(ids))].sort_values(["object_id", "time_mjd"], kind="stable")
        curves = [(g["time_mjd"].to_numpy(), g["mag"].to_numpy(np.float32), g["mag_err"].to_numpy(np.float32))
                  for _, g in df.groupby("object_id", sort=True)]
        return curves, "Catalina catalina_train"
    from lcdash.simulate import simulate_survey

    obs, _ = simulate_survey(n, seed=0, n_obs=(max(min_obs, 60), max(min_obs, 60) + 300))
    curves = [(g["time"].to_numpy(), g["mag"].to_numpy(np.float32), g["mag_err"].to_numpy(np.float32))
              for _, g in obs.groupby("object_id", sort=True)]
    return curves, "simulated (../shared absent)"


def first_windows(curves, batch: int):
    """Tensors (mag, time, mask_in) [batch, 200]: the first window of each light curve, cycled."""
    import torch

    from lcdash.windows import astromer_windows

    ws = [astromer_windows(t, m) for t, m, _ in curves]
    idx = [i % len(ws) for i in range(batch)]
    fields = ("mag", "time", "mask_in")
    return tuple(torch.from_numpy(np.stack([getattr(ws[i], f)[0] for i in idx])) for f in fields)


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------
def build_models(names, shared: Path, tmp: Path):
    import torch

    from lcdash.models.astromer import Astromer, AstromerConfig
    from lcdash.store.embeddings import default_encoder_dir
    from lcdash.weights import import_official, load_encoder

    out = []
    for name in names:
        if name == "a1":
            zip_path = shared / "weights" / "astromer" / "macho_a0.zip"
            if zip_path.exists():
                model, cfg = load_encoder(import_official(zip_path, tmp / "macho_a0"))
                out.append(("astromer1 macho_a0 (official)", model, cfg))
            else:
                torch.manual_seed(0)
                cfg = AstromerConfig.astromer1()
                out.append(("astromer1 (random init)", Astromer(cfg).eval(), cfg))
        elif name == "a2":
            torch.manual_seed(0)
            cfg = AstromerConfig.astromer2()
            out.append(("astromer2 6x256 (random init)", Astromer(cfg).eval(), cfg))
        elif name == "demo":
            d = default_encoder_dir()
            if (d / "model.safetensors").exists():
                model, cfg = load_encoder(d)
                out.append((f"shipped demo {cfg.n_layers}x{cfg.d_model}", model, cfg))
            else:
                print(f"  (skipping demo: {d} has no model.safetensors)")
        else:
            raise SystemExit(f"unknown model {name!r}; use a1, a2, demo")
    return out


# ------------------------------------------------------------------------------------------------
# measurements
# ------------------------------------------------------------------------------------------------
def time_inference(model, x, device, precision: str, warmup: int, repeats: int):
    """(LC/s, median seconds, median CPU seconds, pooled result on the host)."""
    import torch

    from lcdash.embed import window_layer_means

    model.to(device)
    x = tuple(t.to(device) for t in x)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def call():
        with torch.inference_mode(), amp:
            r = window_layer_means(model, *x).float().cpu()
        return r

    for _ in range(warmup):
        out = call()
    walls, cpus = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        out = call()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    med = statistics.median(walls)
    return x[0].shape[0] / med, med, statistics.median(cpus), out


def bench_training(cfg, curves, device, batch: int, steps: int, tmp: Path) -> dict:
    """Windows/s of `lcdash.train.pretrain` (one epoch of `steps` steps; validation not counted)."""
    from lcdash.train import TrainConfig, pretrain

    n = batch * steps
    train, val = curves[:n], curves[n : n + 64]
    r = pretrain(train, val, TrainConfig(epochs=1, batch_size=batch, seed=0, device=str(device)), cfg,
                 tmp / f"train-{cfg.arch}-{cfg.n_layers}x{cfg.d_model}")
    return {"windows_per_s": r["windows_per_s"], "windows": r["history"][-1]["windows"],
            "seconds": r["history"][-1]["seconds"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--precisions", nargs="+", default=["float32", "bf16"], choices=["float32", "bf16"])
    ap.add_argument("--models", default="a1,a2,demo")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--e2e-objects", type=int, default=1000,
                    help="light curves for the end-to-end embed_batch")
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--train-steps", type=int, default=4)
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from lcdash.device import describe_device, pick_device
    from lcdash.embed import embed_batch

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")]
    best = pick_device()
    if best.type != "cpu":
        devices.append(best)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, devices: "
          + ", ".join(describe_device(d) for d in devices))
    print(f"load average before: {os.getloadavg()}")
    flags = set()
    try:
        flags = set(next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")).split())
    except (OSError, StopIteration):
        pass
    has = [f for f in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    print(f"CPU bf16-relevant flags: {', '.join(has) or 'unknown'}"
          + ("" if native else " (no native bf16: expect bf16 to be slow)"))
    results: dict = {"inference": [], "end_to_end": [], "training": [], "threads": torch.get_num_threads(),
                     "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="lcdash-bench-") as tmpdir:
        tmp = Path(tmpdir)
        curves, source = load_curves(args.shared, max(args.batches), min_obs=200)
        print(f"data: {source}, first windows of {len(curves)} light curves with >= 200 observations")
        models = build_models(args.models.split(","), args.shared, tmp)

        print("\ninference (encoder + per-layer pooling on a ready batch of 200-step windows)")
        head = (f"{'model':<36} {'device':<6} {'prec':<8} {'batch':>5} {'LC/s':>7} {'ms':>7} {'LC/cpu-s':>8} "
                f"{'xTF eager':>9} {'xTF graph':>9} {'peak RSS MB':>11}  bf16 error vs float32")
        print(head)
        for label, model, _ in models:
            for device in devices:
                for batch in args.batches:
                    x = first_windows(curves, batch)
                    ref32 = None
                    for prec in args.precisions:
                        if device.type == "cuda":
                            torch.cuda.reset_peak_memory_stats()
                        reset_peak_rss()
                        lcps, med, cpu, out = time_inference(model, x, device, prec, args.warmup,
                                                             args.repeats)
                        peak = peak_rss_mb()
                        row = {"model": label, "device": device.type, "precision": prec, "batch": batch,
                               "lc_per_s": lcps, "ms": med * 1000, "cpu_s": cpu, "lc_per_cpu_s": batch / cpu,
                               "peak_rss_mb": peak,
                               "x_tf_eager": lcps / TF_EAGER.get(batch, np.nan),
                               "x_tf_graph": lcps / TF_GRAPH.get(batch, np.nan)}
                        if device.type == "cuda":
                            row["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
                        err = ""
                        if prec == "float32":
                            ref32 = out
                        elif ref32 is not None:
                            d = (out - ref32).abs()
                            cos = torch.nn.functional.cosine_similarity(out[:, -1], ref32[:, -1], dim=-1)
                            row.update(bf16_max_abs=float(d.max()), bf16_mean_abs=float(d.mean()),
                                       bf16_last_layer_max_abs=float(d[:, -1].max()),
                                       bf16_min_cosine_last=float(cos.min()),
                                       float32_mean_abs_value=float(ref32.abs().mean()))
                            err = (f"max {row['bf16_max_abs']:.3g} mean {row['bf16_mean_abs']:.2g} "
                                   f"(|x| ~{row['float32_mean_abs_value']:.2g}), "
                                   f"min cos {row['bf16_min_cosine_last']:.5f}")
                        results["inference"].append(row)
                        print(f"{label:<36} {device.type:<6} {prec:<8} {batch:>5} {lcps:>7.0f} "
                              f"{med * 1000:>7.1f} {batch / cpu:>8.0f} {row['x_tf_eager']:>9.2f} "
                              f"{row['x_tf_graph']:>9.2f} {peak:>11.0f}  {err}")
            model.to("cpu")
        print(f"TF reference (macho_a0, 2-core CPU): eager {TF_EAGER[64]:.0f} / {TF_EAGER[256]:.0f} LC/s, "
              f"graph {TF_GRAPH[64]:.0f} / {TF_GRAPH[256]:.0f} LC/s at batch 64 / 256")

        print(f"\nend to end: embed_batch on {args.e2e_objects} whole light curves "
              "(windowing included), float32, the default batch (64 windows on CPU, 256 on a GPU)")
        e2e, _ = load_curves(args.shared, args.e2e_objects)
        for label, model, _ in models:
            for device in devices:
                reset_peak_rss()
                t0 = time.perf_counter()
                nw, _ = embed_batch(model, e2e, device=device)
                dt = time.perf_counter() - t0
                n_win = int(nw.sum())
                row = {"model": label, "device": device.type, "objects": len(e2e), "windows": n_win,
                       "seconds": dt, "lc_per_s": len(e2e) / dt, "windows_per_s": n_win / dt,
                       "peak_rss_mb": peak_rss_mb()}
                results["end_to_end"].append(row)
                print(f"  {label:<36} {device.type:<6} {row['lc_per_s']:7.0f} LC/s "
                      f"({n_win / dt:.0f} windows/s, {n_win} windows), peak RSS {row['peak_rss_mb']:.0f} MB")
                model.to("cpu")

        if not args.no_train:
            print(f"\npretraining (lcdash.train.pretrain, batch {args.train_batch}, "
                  f"{args.train_steps} steps, float32 on CPU / bf16 autocast on CUDA)")
            train_curves, _ = load_curves(args.shared, args.train_batch * args.train_steps + 64)
            for label, _, cfg in models:
                for device in devices:
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    reset_peak_rss()
                    r = bench_training(cfg, train_curves, device, args.train_batch, args.train_steps, tmp)
                    r.update(model=label, device=device.type, peak_rss_mb=peak_rss_mb())
                    if device.type == "cuda":
                        r["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
                    results["training"].append(r)
                    cuda = (f", CUDA max allocated {r['cuda_max_allocated_mb']:.0f} MB"
                            if "cuda_max_allocated_mb" in r else "")
                    print(f"  {label:<36} {device.type:<6} {r['windows_per_s']:7.1f} windows/s, "
                          f"peak RSS {r['peak_rss_mb']:.0f} MB{cuda}")
    results["load_after"] = os.getloadavg()
    print(f"\nload average after: {results['load_after']}  (current RSS {rss_mb():.0f} MB)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
