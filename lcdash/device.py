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
