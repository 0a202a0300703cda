"""Device and precision choice (lcdash.device), golden parity on an accelerator, bf16 against float32.

The golden checks run on `LCDASH_TEST_DEVICE` (bench/gpu_check.sh sets it), else on CUDA when present,
else they skip (tests/test_parity.py covers the CPU). The bf16 check needs native bf16 on that device
(CUDA with bf16, or a CPU with AVX512-BF16 / AMX); `LCDASH_TEST_BF16=1` runs it on emulated bf16 too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lcdash.device as dev
from lcdash.embed import embed_batch, prefetch, window_layer_means
from lcdash.models.astromer import Astromer, AstromerConfig, masked_mean
from lcdash.weights import import_official, load_encoder

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# precision choice
# ------------------------------------------------------------------------------------------------
def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(dev, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert dev.cpu_has_native_bf16()
    monkeypatch.setattr(dev, "cpu_flags", lambda: {"avx512f", "amx_bf16", "amx_tile"})
    assert dev.cpu_has_native_bf16()
    monkeypatch.setattr(dev, "cpu_flags", lambda: {"avx512f", "avx512_vnni"})
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_vnni": True})
    assert not dev.cpu_has_native_bf16()
    assert not dev.has_native_bf16(torch.device("cpu"))


def test_cpu_flags_of_this_machine_agree_with_torch():
    flags = dev.cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo")
    caps = torch.cpu.get_capabilities()
    if "avx512_bf16" in caps:  # torch's CPUID probe sees what the kernel reports
        assert ("avx512_bf16" in flags) == bool(caps["avx512_bf16"])


def test_auto_precision_needs_native_bf16_and_a_measured_speedup(monkeypatch):
    torch.manual_seed(0)
    model = Astromer(AstromerConfig(n_layers=1, n_heads=2, d_model=16, d_ff=16))
    cpu = torch.device("cpu")
    assert dev.resolve_precision("float32", cpu, model) == "float32"
    assert dev.resolve_precision("bf16", cpu, model) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        dev.resolve_precision("fp8", cpu, model)

    calls = []

    def speedup(m, d):
        calls.append(d)
        return speed

    monkeypatch.setattr(dev, "bf16_speedup", speedup)
    monkeypatch.setattr(dev, "_PRECISION_CACHE", {})
    speed = 5.0
    monkeypatch.setattr(dev, "has_native_bf16", lambda d: True)
    monkeypatch.setattr(dev, "BF16_PROBE_F1_VERIFIED", False)  # the probe check has not passed
    assert dev.resolve_precision("auto", cpu, model) == "float32" and not calls
    monkeypatch.setattr(dev, "BF16_PROBE_F1_VERIFIED", True)
    monkeypatch.setattr(dev, "has_native_bf16", lambda d: False)
    assert dev.resolve_precision("auto", cpu, model) == "float32" and not calls  # never timed
    monkeypatch.setattr(dev, "has_native_bf16", lambda d: True)
    speed = 1.1  # native but not faster enough
    assert dev.resolve_precision("auto", cpu, model) == "float32" and len(calls) == 1
    assert dev.resolve_precision("auto", cpu, model) == "float32" and len(calls) == 1  # cached
    monkeypatch.setattr(dev, "_PRECISION_CACHE", {})
    speed = 2.0
    assert dev.resolve_precision("auto", cpu, model) == "bf16"
    assert dev.resolve_precision("auto", cpu, None) == "float32"  # nothing to time


def test_bf16_speedup_times_the_model():
    torch.manual_seed(0)
    model = Astromer(AstromerConfig(n_layers=1, n_heads=2, d_model=16, d_ff=16)).train()
    s = dev.bf16_speedup(model, torch.device("cpu"), batch=2, repeats=1)
    assert s > 0 and np.isfinite(s)
    assert model.training  # restored


def test_prefetch_keeps_order_raises_and_stops():
    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))

    def boom():
        yield 1
        raise RuntimeError("producer failed")

    it = prefetch(boom())
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="producer failed"):
        next(it)
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    for x in prefetch(endless(), depth=1):
        if x == 3:
            break
    assert len(produced) <= 6  # the producer stopped a few items ahead


def test_embed_batch_with_the_background_gather_matches_the_inline_path(monkeypatch):
    import lcdash.embed as emb

    torch.manual_seed(0)
    model = Astromer(AstromerConfig(n_layers=1, n_heads=2, d_model=16, d_ff=16)).eval()
    rng = np.random.default_rng(0)
    curves = [(np.sort(rng.uniform(0, 500, n)) + 5e4, rng.normal(15, 0.2, n).astype(np.float32))
              for n in (30, 250, 610, 199, 200)]
    assert not emb._gather_in_background(torch.device("cpu"))
    assert emb._gather_in_background(torch.device("cuda"))
    n_ref, ref = embed_batch(model, curves, batch_size=3, precision="float32")
    monkeypatch.setattr(emb, "_gather_in_background", lambda device: True)  # what a GPU does
    n, got = embed_batch(model, curves, batch_size=3, precision="float32")
    assert n.tolist() == n_ref.tolist() == [1, 2, 4, 1, 1]
    np.testing.assert_array_equal(got, ref)


# ------------------------------------------------------------------------------------------------
# golden outputs on an accelerator, and bf16
# ------------------------------------------------------------------------------------------------
def _test_device() -> torch.device:
    name = os.environ.get("LCDASH_TEST_DEVICE")
    if name:
        if name == "cuda" and not torch.cuda.is_available():
            pytest.fail("LCDASH_TEST_DEVICE=cuda but torch sees no CUDA device")
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    pytest.skip("no accelerator (set LCDASH_TEST_DEVICE=cpu to run these on the CPU)")


@pytest.fixture(scope="module")
def macho(shared, tmp_path_factory):
    path = shared / "golden" / "macho_a0_golden.npz"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    out = import_official(shared / "weights" / "astromer" / "macho_a0.zip", tmp_path_factory.mktemp("macho"))
    model, _ = load_encoder(out)
    return model.eval(), dict(np.load(path))


def _inputs(g, device):
    return [torch.from_numpy(g[f"inp_{k}"][..., 0]).to(device) for k in ("input", "times", "mask_in")]


def test_golden_parity_on_the_test_device(macho):
    device = _test_device()
    model, g = macho
    model.to(device)
    try:
        mag, time, mask_in = _inputs(g, device)
        with torch.inference_mode():
            hidden = model.encode(mag, time, mask_in)
            recon = model.head(hidden[-1]).cpu().numpy()
            mean = masked_mean(hidden[-1], mask_in == 0).cpu().numpy()
        emb = hidden[-1].cpu().numpy()
    finally:
        model.to("cpu")
    # the tolerances of tests/test_parity.py
    for name, ours, ref, mx, mn in (("embedding", emb, g["embedding"], 1e-3, 1e-5),
                                    ("reconstruction", recon, g["reconstruction"][..., 0], 1e-3, 1e-5),
                                    ("mean_embedding", mean, g["mean_embedding"], 1e-4, None)):
        d = np.abs(ours.astype(np.float64) - ref)
        print(f"[{device.type}] {name}: max {d.max():.3e} mean {d.mean():.3e}")
        assert d.max() <= mx, name
        assert mn is None or d.mean() <= mn, name


def test_bf16_embeddings_stay_within_1e_2_of_float32_on_the_golden_inputs(macho):
    device = _test_device()
    if not dev.has_native_bf16(device) and os.environ.get("LCDASH_TEST_BF16") != "1":
        pytest.skip(f"no native bf16 on {device} (LCDASH_TEST_BF16=1 runs it emulated)")
    model, g = macho
    model.to(device)
    try:
        x = _inputs(g, device)
        with torch.inference_mode():
            f32 = window_layer_means(model, *x).cpu()
            with torch.autocast(device.type, dtype=torch.bfloat16):
                b16 = window_layer_means(model, *x).cpu()
    finally:
        model.to("cpu")
    rel = [float((b16[:, i] - f32[:, i]).norm() / f32[:, i].norm()) for i in range(f32.shape[1])]
    print(f"[{device.type}] bf16 vs float32, relative error of the pooled embeddings per layer: "
          + ", ".join(f"{r:.2e}" for r in rel))
    assert rel[0] == 0.0  # the input embedding stays float32 under autocast
    # the encoder's embedding (last layer, pooled per object as the golden mean_embedding)
    assert rel[-1] <= 1e-2
    # every layer stays close in direction (the middle Astromer 1 layer moves most: ~2.5%)
    cos = torch.nn.functional.cosine_similarity(b16.flatten(1), f32.flatten(1), dim=-1)
    assert float(cos.min()) >= 0.998


# ------------------------------------------------------------------------------------------------
# bench/gpu_check.sh
# ------------------------------------------------------------------------------------------------
def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", str(REPO / "bench" / "gpu_check.sh")], check=True)


@pytest.mark.slow
def test_gpu_check_cpu_fallback_runs_and_prints_one_table(tmp_path):
    env = {**os.environ, "GPU_CHECK_FORCE_CPU": "1", "GPU_CHECK_OUT": str(tmp_path), "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh")], env=env, capture_output=True,
                       text=True, timeout=1500)
    out = r.stdout + r.stderr
    assert "CPU fallback" in out and "== lcdash GPU check (cpu-fallback) ==" in out, out[-3000:]
    table = out.split("== lcdash GPU check (cpu-fallback) ==", 1)[1]
    assert "throughput" in table and "pretrain" in table and "parity" in table
    assert "LC/s" in table and "windows/s" in table
    assert r.returncode == 0, out[-3000:]
