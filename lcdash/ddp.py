"""DistributedDataParallel for pretraining and fine-tuning under torchrun.

`torchrun --nproc-per-node N -m lcdash pretrain ...` starts N copies of the ordinary command with
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR in their environment; `context()` sees them and joins the
process group (NCCL on CUDA, one GPU per local rank; gloo on CPU). Without them (WORLD_SIZE unset or
1) it returns None and training runs exactly as in one process.

How lcdash.train uses it, and why:
* every rank draws the same epoch permutation (same seed) and takes every world-th light curve of it,
  padded to a multiple of the world size, as torch's DistributedSampler does, so all ranks run the same
  number of steps (DDP hangs otherwise);
* the random window of each light curve and its mask are drawn from a generator seeded by (seed,
  epoch, rank): each rank sees different windows, and a resumed run redraws the same ones;
* validation windows are split between ranks and their squared errors summed with all_reduce, so
  every rank gets the same validation loss and takes the same early-stopping decision;
* rank 0 alone writes the encoder and the checkpoint (the model's own state_dict, not DDP's), so the
  output folder is the same as a single-process run's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lcdash.errors import ModelError


def world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def rank() -> int:
    """This process's rank under torchrun (0 in a single process)."""
    if world_size() <= 1:
        return 0
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_rank_zero() -> bool:
    return rank() == 0


@dataclass
class DDPContext:
    rank: int
    world: int
    local_rank: int
    device: object  # torch.device
    backend: str
    owned: bool  # this context initialised the process group (and so destroys it)

    def wrap(self, model):
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous share [lo, hi) of n items."""
        return self.rank * n // self.world, (self.rank + 1) * n // self.world

    def shard_perm(self, perm):
        """DistributedSampler's split: pad `perm` by wrapping to a multiple of the world size, then take
        every world-th element from this rank's offset."""
        import numpy as np

        total = -(-len(perm) // self.world) * self.world
        padded = np.resize(perm, total) if total > len(perm) else perm
        return padded[self.rank :: self.world]

    def epoch_rngs(self, seed: int, epoch: int):
        """(numpy Generator, torch Generator) for this rank's windows and masks in `epoch`."""
        import numpy as np
        import torch

        ss = np.random.SeedSequence([seed, epoch, self.rank])
        return np.random.default_rng(ss), torch.Generator().manual_seed(int(ss.generate_state(1)[0]))

    def all_sum(self, values: list[float]) -> list[float]:
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any (a stop all ranks must take together)."""
        return self.all_sum([1.0 if flag else 0.0])[0] > 0

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def close(self) -> None:
        import torch.distributed as dist

        if self.owned and dist.is_initialized():
            dist.destroy_process_group()


def context(prefer_device: str | None = None) -> DDPContext | None:
    """Join torchrun's process group; None when not launched by torchrun with more than one process."""
    world = world_size()
    if world <= 1:
        return None
    import torch
    import torch.distributed as dist

    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ModelError(f"WORLD_SIZE is {world} but {var} is not set: launch with torchrun")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = prefer_device or ("cuda" if torch.cuda.is_available() else "cpu")
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError("--device cuda, but this process sees no GPU")
        if local >= torch.cuda.device_count():
            raise ModelError(f"local rank {local} but only {torch.cuda.device_count()} GPU(s) on this host: "
                             "use --nproc-per-node at most the number of GPUs")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif want == "cpu":
        device, backend = torch.device("cpu"), "gloo"
    else:
        raise ModelError(f"distributed training runs on cuda or cpu, not {want!r}")
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend=backend)
    return DDPContext(dist.get_rank(), dist.get_world_size(), local, device, backend, owned)
