"""Which torch device to run on: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations


def pick_device(prefer: str | None = None):
    """Return a torch.device; `prefer` ("cuda", "mps", "cpu") overrides the automatic choice."""
    import torch

    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device=None) -> str:
    """A short human-readable name: the GPU model, or 'CPU (n threads)'."""
    import torch

    device = device or pick_device()
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "GPU: Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), from /proc/cpuinfo or
    torch's own CPUID probe. Without them oneDNN emulates bf16 and it is slower than float32; a
    hypervisor may hide the flags even on a CPU model that has them, so this asks, never assumes."""
    if cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return True
    try:
        import torch

        caps = torch.cpu.get_capabilities()
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    except (AttributeError, RuntimeError):
        return False


def has_native_bf16(device) -> bool:
    """Native bfloat16 matrix products on `device` (CUDA with bf16 support, or such a CPU)."""
    import torch

    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind == "cpu":
        return cpu_has_native_bf16()
    return False


# bf16 is taken automatically only where it is at least this much faster than float32 in a timed call
BF16_MIN_SPEEDUP = 1.25
# ... and only once `bench/encoder_throughput.py --probe-check` has shown the probe's macro F1 on bf16
# embeddings unchanged within fold noise. That check has not completed yet (on a loaded 2-core CPU
# without native bf16 it ran out of time), so "auto" stays float32 everywhere until it has.
BF16_PROBE_F1_VERIFIED = False
_PRECISION_CACHE: dict[tuple, str] = {}


def resolve_precision(precision: str, device, model=None) -> str:
    """"float32" or "bf16" for `precision` "auto" / "float32" / "bf16".

    "auto" gives bf16 only where the probe's macro F1 on bf16 embeddings is known to be unchanged
    (BF16_PROBE_F1_VERIFIED), the device has native bf16, AND a timed encoder call (one batch of
    full windows, after a warm-up, float32 and bf16 alternated) is at least BF16_MIN_SPEEDUP times
    faster; the answer is cached per device and model shape. Otherwise float32."""
    if precision in ("float32", "bf16"):
        return precision
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}")
    if model is None or not BF16_PROBE_F1_VERIFIED or not has_native_bf16(device):
        return "float32"
    cfg = model.cfg
    key = (str(device), cfg.arch, cfg.n_layers, cfg.d_model, cfg.d_ff)
    if key not in _PRECISION_CACHE:
        speedup = bf16_speedup(model, device)
        _PRECISION_CACHE[key] = "bf16" if speedup >= BF16_MIN_SPEEDUP else "float32"
    return _PRECISION_CACHE[key]


def bf16_speedup(model, device, batch: int = 32, repeats: int = 3) -> float:
    """float32 time / bf16 time of the model's encoder on `batch` full random windows (median of
    `repeats` alternated calls after one warm-up of each)."""
    import time

    import torch

    g = torch.Generator().manual_seed(0)
    T = model.cfg.window
    mag = (torch.randn(batch, T, generator=g) * 0.3).to(device)
    tim = (torch.sort(torch.rand(batch, T, generator=g) * 1000, 1).values - 500).to(device)
    mask = torch.zeros(batch, T, device=device)

    def call(bf16: bool) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model.encode(mag, tim, mask)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    was_training = model.training
    model.eval()
    try:
        call(False), call(True)
        ratios = sorted(call(False) / max(call(True), 1e-9) for _ in range(repeats))
    finally:
        model.train(was_training)
    return ratios[len(ratios) // 2]
