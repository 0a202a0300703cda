"""Encoder speed: inference light curves per second beside the TensorFlow reference, the speed-up of
this version over the previous attention code measured in the same run, end-to-end embedding against
the model alone, bf16 where the CPU has it, pretraining windows per second, peak memory.

    .venv/bin/python bench/encoder_throughput.py [--shared ../shared] [--batches 64 256]
        [--precisions float32 bf16] [--models a1,a2,demo] [--threads N] [--rounds 7]
        [--probe-check] [--no-train] [--json OUT]
        [--tf-python TFVENV/bin/python --tf-pylib PYLIB --tf-weights WEIGHTS]

Inference is timed the way ../shared/golden/README.md section 8 timed the official TensorFlow code:
one 200-step window per light curve (the first window of the first Catalina objects with >= 200
observations, or simulated ones when ../shared is absent), warm-up calls, then the median over
timed calls of the encoder on a ready batch (`lcdash.embed.window_layer_means`: `model.encode` +
the per-layer masked means that lcdash stores, on the host). "before" is the previous attention code
(three Q/K/V products, the full attention bias on every batch, separate residual products), kept in
this script as `before_layer_means`; "before" and "now" calls alternate, and "now/before" is the
median of the per-round ratios, so that a loaded machine slows both alike.

End to end: `embed_batch` on whole light curves (windowing, transport and pooling included), timed
alternately with the model alone on the very same windows (ready tensors, batch 64); both are
given in windows/s, since light curves have 1 to many windows.

The TensorFlow reference (another host of the same 2-core machine type, macho_a0): eager
`encoder(batch)` 239 / 379 LC/s at batch 64 / 256 (what `encode()` does), tf.function graph 601 /
576 LC/s. A second host of that type measured 113 / 202 and 269 / 305 (golden README section 9):
ratios against these fixed figures only mean something on a quiet machine; the in-run ratios do.
With --tf-python (a venv with tensorflow-cpu==2.14.1, the python-library checkout and the extracted
macho_a0 weights, as ../shared/golden/README.md section 9 describes) the script runs the official
`make_golden.py bench` on this host before and after its own inference rows and takes the ratios
against the mean of those two runs instead: the only TF ratios that hold across hosts.
The load average is printed before and after; each row also gives light curves per CPU-second
(process CPU time, all threads), which contention distorts less than wall time. The float32
matrix-product rate of this machine is measured in the same run: the encoder does about 0.344 GFLOP
per 200-step window (Astromer 1), so GFLOP/s / 0.344 is the float32 ceiling in LC/s.

bf16 is measured where the CPU has native bf16 (avx512_bf16 / AMX, `lcdash.device`) or a GPU is
present, or when asked with --precisions bf16; rows give the error of the pooled embedding against
float32 on the same windows. `--probe-check` embeds labelled Catalina objects in float32 and bf16
and compares the probe's macro F1 (lcdash.evaluation, 3 folds, 100 per class), the second condition
for `precision="auto"` to choose bf16.
"""

from __future__ import annotations

import argparse
import json
import math
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
GFLOP_PER_WINDOW_A1 = 0.344  # macho_a0: 2 blocks of Q, K, V, out (4 x 256 x 256), attention, FFN 128
TARGET_GRAPH_F32 = 1.2  # x TF graph at batch 64, float32
TARGET_GRAPH_BF16 = 2.5  # x TF graph at batch 64, bf16 where native
TARGET_E2E = 0.9  # end to end / model alone


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
def before_layer_means(model, mag, time, mask_in):
    """The previous inference path, for the in-run comparison: Q, K and V as three products, the
    attention bias materialised for every batch (Astromer 1: [B, 1, T, T]), residual Dense layers as
    separate products and sums, `0 + x` where there is none."""
    import torch
    import torch.nn.functional as F

    h = model.embed_input(mag, time, mask_in)
    bias = model.attention_bias(mask_in).to(h.dtype)
    hidden = [h]
    for blk in model.blocks:
        at = blk.attn
        B, T, d = h.shape
        H = at.n_heads

        def split(y, B=B, T=T, H=H, d=d):
            return y.view(B, T, H, d // H).transpose(1, 2)

        q, k, v = split(at.wq(h)), split(at.wk(h)), split(at.wv(h))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(B, T, d)
        a = at.out(y)
        x = blk.ln1((blk.res1(h) if blk.residual else 0) + a)
        f = blk.ffn(x)
        h = blk.ln2((blk.res2(x) if blk.residual else 0) + f)
        hidden.append(h)
    valid = (1.0 - mask_in.float()).unsqueeze(1)
    count = valid.sum(-1).clamp(min=1.0)
    return torch.stack([torch.bmm(valid.to(t.dtype), t).squeeze(1).float() / count for t in hidden], 1)


def alternate(calls: dict, warmup: int, rounds: int, sync=None) -> dict:
    """Run the named zero-argument calls in turn, `rounds` times after `warmup` rounds. Returns per
    name {"wall": [s], "cpu": [s]} (process CPU time, all threads)."""
    out = {k: {"wall": [], "cpu": []} for k in calls}
    for r in range(warmup + rounds):
        for k, f in calls.items():
            if sync:
                sync()
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            if sync:
                sync()
            if r >= warmup:
                out[k]["wall"].append(time.perf_counter() - t0)
                out[k]["cpu"].append(time.process_time() - c0)
    return out


def median_ratio(a: list, b: list) -> float:
    """Median over rounds of a[i] / b[i] (how many times b is faster than a)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def gemm_gflops(threads: int, rounds: int = 7) -> float:
    """float32 GFLOP/s of a [12800, 256] x [256, 256] product (one Q projection of 64 windows)."""
    import torch

    a, w = torch.randn(12800, 256), torch.randn(256, 256)
    r = alternate({"mm": lambda: a @ w}, 3, rounds)
    return 2 * 12800 * 256 * 256 / statistics.median(r["mm"]["wall"]) / 1e9


def bf16_error(out, ref32) -> dict:
    import torch

    d = (out - ref32).abs()
    cos = torch.nn.functional.cosine_similarity(out[:, -1], ref32[:, -1], dim=-1)
    return {"bf16_max_abs": float(d.max()), "bf16_mean_abs": float(d.mean()),
            "bf16_min_cosine_last": float(cos.min()), "float32_mean_abs_value": float(ref32.abs().mean())}


def probe_check(model, shared: Path, per_class: int, device, seed: int = 0) -> dict | None:
    """Macro F1 of lcdash's probe (3 folds, 100 train per class) on float32 and on bf16 embeddings of
    the same Catalina objects (up to `per_class` per class, whole light curves)."""
    import pyarrow.parquet as pq

    from lcdash.embed import embed_batch
    from lcdash.evaluation import EvalConfig, EvalData, run_evaluation
    from lcdash.lightcurve import LightCurveBatch

    base = shared / "data" / "catalina_train"
    if not (base / "objects.parquet").exists():
        return None
    objs = pq.read_table(base / "objects.parquet", columns=["object_id", "label"]).to_pandas()
    objs = (objs.sample(frac=1.0, random_state=seed).groupby("label", sort=True).head(per_class)
            .sort_values("object_id"))
    obs = pq.read_table(base / "observations.parquet", columns=["object_id", "time_mjd", "mag"]).to_pandas()
    obs = obs[obs["object_id"].isin(set(objs["object_id"]))].sort_values(["object_id", "time_mjd"],
                                                                         kind="stable")
    groups = {k: g for k, g in obs.groupby("object_id", sort=True)}
    objs = objs[objs["object_id"].isin(groups)]
    batch = LightCurveBatch.from_arrays([groups[o]["time_mjd"].to_numpy() for o in objs["object_id"]],
                                        [groups[o]["mag"].to_numpy(np.float32) for o in objs["object_id"]])
    labels = objs["label"].to_numpy()
    out = {"objects": len(labels), "classes": int(len(set(labels)))}
    for prec in ("float32", "bf16"):
        t0 = time.perf_counter()
        _, layers = embed_batch(model, batch, device=device, precision=prec)
        out[f"{prec}_embed_s"] = time.perf_counter() - t0
        res = run_evaluation(EvalData(batch=batch, labels=labels, layers=layers),
                             EvalConfig(models=["probe"], spc=[100], folds=3, test_per_class=100,
                                        seed=seed, device=str(device)))
        f1 = [r["macro_f1"] for r in res.records]
        out[f"{prec}_macro_f1"] = f1
        if prec == "float32":
            ref = layers
        else:
            out["bf16_max_abs_layers"] = float(np.abs(layers - ref).max())
    d = np.asarray(out["bf16_macro_f1"]) - np.asarray(out["float32_macro_f1"])
    out["f1_diff_mean"], out["f1_diff_per_fold"] = float(d.mean()), d.tolist()
    out["f1_fold_std_float32"] = float(np.std(out["float32_macro_f1"]))
    return out


def tf_reference(args) -> dict | None:
    """The official TensorFlow encoder's rates on this host: ../shared/golden/make_golden.py bench
    (eager `encoder(batch)` and tf.function graph, batch 64 / 256, golden inputs) in its own venv.
    {("eager" | "graph", batch): LC/s}, or None when not asked for."""
    if not args.tf_python:
        return None
    import re
    import subprocess

    script = args.shared / "golden" / "make_golden.py"
    env = {**os.environ, "ASTROMER_PYLIB": str(args.tf_pylib), "ASTROMER_WEIGHTS": str(args.tf_weights),
           "GOLDEN_OUT": str(script.parent), "TF_CPP_MIN_LOG_LEVEL": "2", "TERM": "dumb"}
    run = subprocess.run([str(args.tf_python), str(script), "bench"], env=env, capture_output=True,
                         text=True, timeout=900)
    rates = {}
    for m in re.finditer(r"batch\s+(\d+)\s+(eager|tf\.function graph).*?->\s+([\d.]+) LC/s", run.stdout):
        rates[("eager" if m.group(2) == "eager" else "graph", int(m.group(1)))] = float(m.group(3))
    if run.returncode or not rates:
        tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
        raise SystemExit("the TensorFlow reference failed: " + " | ".join(tail))
    return rates


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
    ap.add_argument("--precisions", nargs="+", default=None, choices=["float32", "bf16"],
                    help="default: float32, and bf16 on devices with native bf16")
    ap.add_argument("--models", default="a1,a2,demo")
    ap.add_argument("--devices", nargs="+", default=None, choices=["cpu", "cuda", "mps"],
                    help="default: the CPU and the best accelerator, if any")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds of alternating calls")
    ap.add_argument("--e2e-objects", type=int, default=1000,
                    help="light curves for the end-to-end embed_batch")
    ap.add_argument("--no-inference", action="store_true")
    ap.add_argument("--no-e2e", action="store_true")
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--train-steps", type=int, default=4)
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--probe-check", action="store_true",
                    help="probe macro F1 on float32 vs bf16 embeddings of Catalina objects (minutes)")
    ap.add_argument("--probe-per-class", type=int, default=220)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--tf-python", type=Path, default=None,
                    help="python of a venv with tensorflow-cpu==2.14.1 (../shared/golden/README.md sec. 9): "
                         "time the official encoder on this host, before and after lcdash's rows")
    ap.add_argument("--tf-pylib", type=Path, default=None,
                    help="astromer-science/python-library at the commit of ../shared/golden/README.md sec. 1")
    ap.add_argument("--tf-weights", type=Path, default=None,
                    help="folder holding the extracted macho_a0.zip as macho_a0/macho/")
    args = ap.parse_args(argv)

    import torch

    from lcdash.device import cpu_flags, describe_device, has_native_bf16, pick_device
    from lcdash.embed import embed_batch, window_layer_means
    from lcdash.windows import batch_windows

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.devices:
        devices = [torch.device(d) for d in args.devices]
    else:
        devices = [torch.device("cpu")]
        best = pick_device()
        if best.type != "cpu":
            devices.append(best)
    for d in devices:
        if d.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--devices cuda: torch sees no CUDA device")
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} CPU threads, devices: "
          + ", ".join(describe_device(d) for d in devices))
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} "
          f"on {os.cpu_count()} CPUs")
    flags = cpu_flags()
    has = [f for f in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    native = {d.type: has_native_bf16(d) for d in devices}
    print(f"CPU flags: {', '.join(has) or 'unknown'}; native bf16: "
          + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in native.items()))
    gflops = gemm_gflops(threads, rounds=3 if args.no_inference else 7)
    ceiling = gflops / GFLOP_PER_WINDOW_A1
    print(f"float32 matrix products on the CPU: {gflops:.0f} GFLOP/s -> Astromer 1 ceiling "
          f"{ceiling:.0f} LC/s ({GFLOP_PER_WINDOW_A1} GFLOP per window)")
    results: dict = {"inference": [], "end_to_end": [], "training": [], "threads": threads,
                     "load_before": load_before, "cpu_flags": has, "native_bf16": native,
                     "gemm_gflops": gflops, "a1_ceiling_lc_per_s": ceiling}

    def sync_for(device):
        return torch.cuda.synchronize if device.type == "cuda" else None

    tf_runs = []
    if args.tf_python and not args.no_inference:
        tf_runs.append(tf_reference(args))
        print("TensorFlow reference on this host (before): " + ", ".join(
            f"{k[0]} {k[1]}: {v:.0f}" for k, v in sorted(tf_runs[0].items())) + " LC/s")
    tf_eager, tf_graph = dict(TF_EAGER), dict(TF_GRAPH)

    with tempfile.TemporaryDirectory(prefix="lcdash-bench-") as tmpdir:
        tmp = Path(tmpdir)
        curves, source = load_curves(args.shared, max(args.batches), min_obs=200)
        print(f"data: {source}, first windows of {len(curves)} light curves with >= 200 observations")
        models = build_models(args.models.split(","), args.shared, tmp)

        if not args.no_inference:
            print(f"\ninference: encoder + per-layer pooling on a ready batch of 200-step windows; "
                  f"'before' and 'now' alternate, {args.rounds} rounds (median)")
            print(f"{'model':<34} {'device':<6} {'prec':<8} {'path':<6} {'batch':>5} {'LC/s':>7} {'ms':>7} "
                  f"{'LC/cpu-s':>8} {'x before':>8} {'xTF eager':>9} {'xTF graph':>9} {'peak MB':>8}  "
                  "error")
        for label, model, _ in models if not args.no_inference else []:
            for device in devices:
                precs = args.precisions or (["float32", "bf16"] if native[device.type] else ["float32"])
                model.to(device)
                for batch in args.batches:
                    x = tuple(t.to(device) for t in first_windows(curves, batch))
                    outs: dict = {}

                    def run(fn, prec, key, x=x, device=device, model=model, outs=outs):
                        amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=prec == "bf16")

                        def call():
                            with torch.inference_mode(), amp:
                                outs[key] = fn(model, *x).float().cpu()
                        return call

                    calls = {}
                    for prec in precs:
                        if prec == "float32":
                            calls["before float32"] = run(before_layer_means, prec, "before float32")
                        calls[f"now {prec}"] = run(window_layer_means, prec, f"now {prec}")
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    reset_peak_rss()
                    r = alternate(calls, args.warmup, args.rounds, sync_for(device))
                    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
                            else peak_rss_mb())
                    for key, t in r.items():
                        path, prec = key.split()
                        wall, cpu = statistics.median(t["wall"]), statistics.median(t["cpu"])
                        lcps = batch / wall
                        row = {"model": label, "device": device.type, "precision": prec, "path": path,
                               "batch": batch, "lc_per_s": lcps, "ms": wall * 1000,
                               "lc_per_cpu_s": batch / cpu,
                               "peak_mb": peak, "x_tf_eager": lcps / TF_EAGER.get(batch, math.nan),
                               "x_tf_graph": lcps / TF_GRAPH.get(batch, math.nan)}
                        xb = ""
                        if key != "before float32" and "before float32" in r:
                            row["x_before"] = median_ratio(r["before float32"]["wall"], t["wall"])
                            row["x_before_cpu"] = median_ratio(r["before float32"]["cpu"], t["cpu"])
                            xb = f"{row['x_before']:.2f}"
                        err = ""
                        if prec == "bf16" and "now float32" in outs:
                            row.update(bf16_error(outs[key], outs["now float32"]))
                            row["x_float32"] = median_ratio(r["now float32"]["wall"], t["wall"])
                            err = (f"max {row['bf16_max_abs']:.3g} mean {row['bf16_mean_abs']:.2g} "
                                   f"(|x| ~{row['float32_mean_abs_value']:.2g}), min cos "
                                   f"{row['bf16_min_cosine_last']:.5f}; x float32 {row['x_float32']:.2f}")
                        if key == "now float32" and "before float32" in outs:
                            row["max_abs_vs_before"] = float((outs[key] - outs["before float32"]).abs().max())
                            err = f"max |now - before| {row['max_abs_vs_before']:.2g}"
                        results["inference"].append(row)
                        print(f"{label:<34} {device.type:<6} {prec:<8} {path:<6} {batch:>5} {lcps:>7.0f} "
                              f"{wall * 1000:>7.1f} {batch / cpu:>8.0f} {xb:>8} {row['x_tf_eager']:>9.2f} "
                              f"{row['x_tf_graph']:>9.2f} {peak:>8.0f}  {err}")
                model.to("cpu")
        if tf_runs:
            tf_runs.append(tf_reference(args))
            print("TensorFlow reference on this host (after): " + ", ".join(
                f"{k[0]} {k[1]}: {v:.0f}" for k, v in sorted(tf_runs[1].items())) + " LC/s")
            # the reference as measured here, the mean of the runs before and after lcdash's rows
            for (mode, batch) in tf_runs[0]:
                rate = statistics.mean(r[(mode, batch)] for r in tf_runs)
                (tf_eager if mode == "eager" else tf_graph)[batch] = rate
            for row in results["inference"]:
                row["x_tf_eager"] = row["lc_per_s"] / tf_eager.get(row["batch"], math.nan)
                row["x_tf_graph"] = row["lc_per_s"] / tf_graph.get(row["batch"], math.nan)
            results["tf_measured_here"] = {f"{m} {b}": [r[(m, b)] for r in tf_runs] for (m, b) in tf_runs[0]}
            print("x TF, against the reference measured in this run:")
            for row in results["inference"]:
                print(f"  {row['model']:<34} {row['device']:<6} {row['precision']:<8} {row['path']:<6} "
                      f"{row['batch']:>5}: {row['x_tf_eager']:.2f}x eager, {row['x_tf_graph']:.2f}x graph")
        if not args.no_inference:
            where = "measured on this host in this run" if tf_runs else "another host, see the docstring"
            print(f"TF reference (macho_a0, 2-core CPU, {where}): eager {tf_eager[64]:.0f} / "
                  f"{tf_eager[256]:.0f} LC/s, graph {tf_graph[64]:.0f} / {tf_graph[256]:.0f} LC/s "
                  "at batch 64 / 256")
        results["tf_reference"] = {"eager": tf_eager, "graph": tf_graph, "measured_here": bool(tf_runs)}

        if not args.no_e2e:
            print(f"\nend to end: embed_batch on {args.e2e_objects} whole light curves (windowing "
                  "included, float32, default batch) against the model alone on the same windows "
                  f"(batch 64 on CPU / 256 otherwise), alternating, {max(3, args.rounds // 2)} rounds")
            e2e, _ = load_curves(args.shared, args.e2e_objects)
            mag, tim, mi, _, _ = batch_windows(e2e)
            n_win = len(mag)
            for label, model, _ in models:
                for device in devices:
                    model.to(device)
                    bs = 64 if device.type == "cpu" else 256
                    xs = [tuple(torch.from_numpy(a[lo:lo + bs]).to(device) for a in (mag, tim, mi))
                          for lo in range(0, n_win, bs)]

                    def model_only(xs=xs, model=model):
                        with torch.inference_mode():
                            for x in xs:
                                window_layer_means(model, *x).cpu()

                    def end_to_end(device=device, model=model):
                        embed_batch(model, e2e, device=device, precision="float32")

                    reset_peak_rss()
                    r = alternate({"model": model_only, "e2e": end_to_end}, 1, max(3, args.rounds // 2),
                                  sync_for(device))
                    wm, we = statistics.median(r["model"]["wall"]), statistics.median(r["e2e"]["wall"])
                    row = {"model": label, "device": device.type, "objects": len(e2e), "windows": n_win,
                           "e2e_windows_per_s": n_win / we, "model_windows_per_s": n_win / wm,
                           "e2e_lc_per_s": len(e2e) / we,
                           "e2e_over_model": median_ratio(r["model"]["wall"], r["e2e"]["wall"]),
                           "e2e_over_model_cpu": median_ratio(r["model"]["cpu"], r["e2e"]["cpu"]),
                           "peak_rss_mb": peak_rss_mb()}
                    results["end_to_end"].append(row)
                    print(f"  {label:<34} {device.type:<6} end to end {row['e2e_windows_per_s']:6.0f} "
                          "windows/s "
                          f"({row['e2e_lc_per_s']:.0f} LC/s, {n_win} windows), model alone "
                          f"{row['model_windows_per_s']:6.0f} windows/s: end to end / model "
                          f"{row['e2e_over_model']:.2f} (CPU time {row['e2e_over_model_cpu']:.2f})")
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
                    print(f"  {label:<34} {device.type:<6} {r['windows_per_s']:7.1f} windows/s, "
                          f"peak RSS {r['peak_rss_mb']:.0f} MB{cuda}")

        if args.probe_check:
            a1 = [m for m in models if m[0].startswith("astromer1")]
            label, model, _ = (a1 or models)[0]
            print(f"\nprobe check ({label}): macro F1 on float32 vs bf16 embeddings, up to "
                  f"{args.probe_per_class} Catalina objects per class, 3 folds, 100 per class")
            pc = probe_check(model, args.shared, args.probe_per_class, devices[-1])
            if pc is None:
                print("  skipped: ../shared/data is absent")
            else:
                results["probe_check"] = pc
                f1 = {k: ", ".join(f"{v * 100:.1f}" for v in pc[f"{k}_macro_f1"])
                      for k in ("float32", "bf16")}
                print(f"  {pc['objects']} objects, {pc['classes']} classes; macro F1 per fold: "
                      f"float32 {f1['float32']}, bf16 {f1['bf16']}")
                print(f"  bf16 - float32: {pc['f1_diff_mean'] * 100:+.2f} points (fold std of float32 "
                      f"{pc['f1_fold_std_float32'] * 100:.2f}); max |layers diff| "
                      f"{pc['bf16_max_abs_layers']:.3g}; embedding s: float32 {pc['float32_embed_s']:.0f}, "
                      f"bf16 {pc['bf16_embed_s']:.0f}")

    # the host's speed drifts (a shared VM): the ceiling is the faster of a measurement at each end
    again = gemm_gflops(threads, rounds=3 if args.no_inference else 7)
    if again > results["gemm_gflops"]:
        results.update(gemm_gflops=again, a1_ceiling_lc_per_s=again / GFLOP_PER_WINDOW_A1)
    print(f"float32 matrix products at the end: {again:.0f} GFLOP/s (ceiling taken from the faster: "
          f"{results['a1_ceiling_lc_per_s']:.0f} LC/s)")
    load_after = os.getloadavg()
    results["load_after"] = load_after
    print_summary(results)
    print(f"\nload average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}  "
          f"(current RSS {rss_mb():.0f} MB)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0


def print_summary(results: dict) -> None:
    """The issue's targets, from this run's rows (Astromer 1, CPU, batch 64)."""
    rows = {(r["model"].split()[0], r["device"], r["precision"], r["path"], r["batch"]): r
            for r in results["inference"]}
    here = results.get("tf_reference", {}).get("measured_here")
    print("\ntargets (Astromer 1 on the CPU; the TF figures were " + (
        "measured on this host in this run)" if here else "measured on another host, see the docstring)"))
    now = rows.get(("astromer1", "cpu", "float32", "now", 64))
    if now:
        print(f"  float32, batch 64: {now['lc_per_s']:.0f} LC/s = {now['x_tf_graph']:.2f}x TF graph "
              f"(target {TARGET_GRAPH_F32}x), {now['x_tf_eager']:.2f}x TF eager; "
              f"{now.get('x_before', math.nan):.2f}x the previous code in this run "
              f"(CPU time {now.get('x_before_cpu', math.nan):.2f}x); "
              f"{now['lc_per_s'] / results['a1_ceiling_lc_per_s']:.0%} of this run's float32 ceiling")
    bf = rows.get(("astromer1", "cpu", "bf16", "now", 64))
    if bf and results["native_bf16"].get("cpu"):
        print(f"  bf16, batch 64: {bf['lc_per_s']:.0f} LC/s = {bf['x_tf_graph']:.2f}x TF graph "
              f"(target {TARGET_GRAPH_BF16}x), {bf['x_float32']:.2f}x float32")
    elif bf:
        print(f"  bf16, batch 64: {bf['lc_per_s']:.0f} LC/s ({bf['x_float32']:.2f}x float32), but this "
              "CPU has no native bf16: the bf16 target does not apply here")
    else:
        print("  bf16: not measured (no native bf16 on this CPU; --precisions bf16 forces it)")
    for r in results["end_to_end"]:
        if r["model"].startswith("astromer1"):
            print(f"  end to end / model alone ({r['device']}): {r['e2e_over_model']:.2f} "
                  f"(target {TARGET_E2E})")
    lb, la = results["load_before"], results.get("load_after", (math.nan,) * 3)
    print(f"  load average {lb[0]:.1f} before, {la[0]:.1f} after: on a loaded machine the absolute "
          "rates and the TF ratios are low; the in-run ratios (x before, end to end / model) hold better")


if __name__ == "__main__":
    raise SystemExit(main())
