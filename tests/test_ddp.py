"""torchrun DistributedDataParallel pretraining (lcdash.ddp + the DDP hunks of lcdash.train)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from lcdash.cli import main
from lcdash.ddp import DDPContext, context, rank, world_size
from lcdash.weights import load_encoder

REPO = Path(__file__).resolve().parents[1]
SHAPE = ["--n-layers", "1", "--d-model", "16", "--n-heads", "2", "--d-ff", "16", "--batch-size", "16",
         "--device", "cpu", "--threads", "1", "--max-objects", "120"]


def _torchrun(n: int, args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
           "-m", "lcdash", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _tensors(path: Path) -> dict[str, tuple]:
    with safe_open(str(path), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def test_two_gloo_processes_write_a_single_process_checkpoint(tmp_path, demo_db):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["pretrain", "--db", str(demo_db), "--out", str(one), "--epochs", "1", *SHAPE]) == 0
    res = _torchrun(2, ["pretrain", "--db", str(demo_db), "--out", str(two), "--epochs", "1", *SHAPE])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "on 2 processes (DistributedDataParallel)" in res.stderr
    assert res.stdout.count("best validation RMSE") == 1  # rank 0 alone reports
    # the same files, tensors and JSON keys as a single-process run
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    for name in ("model.safetensors", "checkpoint.safetensors"):
        assert _tensors(two / name) == _tensors(one / name)
    for name in ("config.json", "checkpoint.json"):
        a, b = json.loads((one / name).read_text()), json.loads((two / name).read_text())
        assert sorted(a) == sorted(b)
    meta1, meta2 = (json.loads((d / "checkpoint.json").read_text()) for d in (one, two))
    assert [h["epoch"] for h in meta2["history"]] == [0, 1]
    # same initial weights and validation set: the same epoch-0 validation RMSE (sharded, all-reduced)
    assert meta2["history"][0]["val_rmse"] == pytest.approx(meta1["history"][0]["val_rmse"], rel=1e-6)
    # every training window was seen once across the two ranks (the split pads to equal shares)
    n_train = meta1["n_train"]
    assert meta2["history"][1]["windows"] in (n_train, n_train + 1)
    model, cfg = load_encoder(two)
    assert cfg.n_layers == 1 and cfg.d_model == 16
    out = model(torch.zeros(2, 200), torch.linspace(0, 1, 200).repeat(2, 1), torch.zeros(2, 200))
    assert torch.isfinite(out).all()

    # resumable under DDP: one more epoch continues the history
    res = _torchrun(2, ["pretrain", "--db", str(demo_db), "--out", str(two), "--epochs", "2", "--resume",
                        *SHAPE])
    assert res.returncode == 0, res.stderr[-3000:]
    meta = json.loads((two / "checkpoint.json").read_text())
    assert [h["epoch"] for h in meta["history"]] == [0, 1, 2]
    assert meta["history"][:2] == meta2["history"]


def test_sampler_split_and_single_process_default(monkeypatch):
    for var in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)
    assert context() is None and world_size() == 1 and rank() == 0
    ctx = [DDPContext(r, 3, r, torch.device("cpu"), "gloo", False) for r in range(3)]
    shares = [c.shard_perm(np.arange(7)) for c in ctx]
    assert [len(s) for s in shares] == [3, 3, 3]  # padded by wrapping, as DistributedSampler does
    assert sorted(np.concatenate(shares).tolist()) == sorted([*range(7), 0, 1])
    assert DDPContext(1, 2, 1, torch.device("cpu"), "gloo", False).shard(5) == (2, 5)
    a = DDPContext(0, 2, 0, torch.device("cpu"), "gloo", False).epoch_rngs(0, 1)[0].random()
    b = DDPContext(1, 2, 1, torch.device("cpu"), "gloo", False).epoch_rngs(0, 1)[0].random()
    assert a != b  # each rank draws its own windows
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    from lcdash.errors import ModelError

    with pytest.raises(ModelError, match="launch with torchrun"):
        context("cpu")
