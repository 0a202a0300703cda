"""Masked pretraining / fine-tuning loop (lcdash.train): masking, learning, checkpoints, resume, cancel."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lcdash import train as train_mod
from lcdash.errors import ModelError
from lcdash.models.astromer import AstromerConfig
from lcdash.train import TrainConfig, finetune, pretrain
from lcdash.weights import load_encoder

TINY = AstromerConfig.astromer2(n_layers=1, d_model=16, n_heads=2, d_ff=16)


def _curves(n: int, seed: int = 0, lo: int = 40, hi: int = 260):
    """Noisy sinusoids with irregular sampling: learnable, so the masked RMSE can fall."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m = int(rng.integers(lo, hi))
        t = np.sort(rng.uniform(0, 400, m)) + 53000.0
        p, a = rng.uniform(0.3, 30), rng.uniform(0.2, 1.0)
        mag = 15 + a * np.sin(2 * np.pi * t / p) + rng.normal(0, 0.05, m)
        out.append((t, mag.astype(np.float32), np.full(m, 0.05, np.float32)))
    return out


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=16, seed=0, num_threads=1, val_batch_size=64)
    return TrainConfig(**{**base, **kw})


def test_masking_statistics_through_the_loop(tmp_path, monkeypatch):
    """What the loop feeds the model follows the paper's 50% / 20% same / 20% random scheme."""
    seen = []
    orig = train_mod._masked_inputs

    def spy(win, cfg, gen):
        out = orig(win, cfg, gen)
        seen.append((win, out))
        return out

    monkeypatch.setattr(train_mod, "_masked_inputs", spy)
    curves = _curves(24, lo=150, hi=420)
    pretrain(curves[:20], curves[20:], _cfg(epochs=1), TINY, tmp_path)
    assert len(seen) >= 3  # validation set once + training steps
    for win, (inp, _tim, mask_in, target, probed, weights) in seen:
        assert weights is None
        valid = torch.from_numpy(1.0 - win.mask_in)
        n_valid = valid.sum(1)
        n_probed = probed.sum(1)
        assert torch.equal(n_probed, torch.floor(0.5 * n_valid + 1e-6))
        assert float((probed * (1 - valid)).sum()) == 0.0  # padding is never probed
        assert torch.equal(mask_in * (1 - valid), 1 - valid)  # padding is always masked
        hidden = mask_in * valid
        assert float((hidden * (1 - probed)).sum()) == 0.0  # only probed steps are hidden
        # of the probed: 20% same, 20% of the rest random (visible), the others hidden (+-1 rounding)
        n_hidden = hidden.sum(1)
        assert bool(((n_hidden - 0.64 * n_probed).abs() <= 2).all())
        changed = ((inp != target) & (probed > 0) & (mask_in == 0)).sum(1)
        assert bool((changed <= n_probed - n_hidden - torch.round(0.2 * n_probed)).all())
        full = n_valid == 200  # the paper's numbers: 100 probed, 20 same, 16 random, 64 hidden
        if full.any():
            assert set(n_hidden[full].tolist()) == {64.0}
            assert bool((changed[full] <= 16).all())
    # over all training windows the random replacements do happen
    assert sum(int(((i != t) & (p > 0) & (m == 0)).sum()) for _, (i, _, m, t, p, _) in seen) > 0


def test_pretrain_learns_and_saves_loadable_weights(tmp_path):
    from lcdash.lightcurve import LightCurveBatch

    curves = _curves(72)
    train = LightCurveBatch.from_arrays([c[0] for c in curves[:60]], [c[1] for c in curves[:60]],
                                        [c[2] for c in curves[:60]])
    calls = []
    res = pretrain(train, curves[60:], _cfg(epochs=4, batch_size=8), TINY, tmp_path,
                   progress=lambda *a: calls.append(a))
    hist = res["history"]
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3, 4]
    assert res["best_val_rmse"] < hist[0]["val_rmse"]
    assert res["stopped"] == "max_epochs" and res["epochs"] == 4
    assert calls and calls[-1][0] == calls[-1][1] == 4 * math.ceil(60 / 8)

    # the saved best encoder loads back bit-identically and reproduces its validation RMSE
    model, cfg = load_encoder(tmp_path)
    assert cfg == TINY
    saved = load_file(str(tmp_path / "model.safetensors"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k])
    ckpt = load_file(str(tmp_path / "checkpoint.safetensors"))
    if res["best_epoch"] == 4:
        for k, v in saved.items():
            assert torch.equal(ckpt[f"model.{k}"], v)
    from lcdash.windows import random_window

    val = train_mod._curves(curves[60:])
    win = random_window(val, 200, np.random.default_rng(1))
    inp, tim, mi, tgt, prb, _ = train_mod._masked_inputs(win, _cfg(), torch.Generator().manual_seed(1))
    with torch.inference_mode():
        rmse = math.sqrt(train_mod._per_sample_sq(model(inp, tim, mi), tgt, prb).mean().item())
    assert rmse == pytest.approx(res["best_val_rmse"], rel=1e-5)
    zero = math.sqrt(train_mod._per_sample_sq(torch.zeros_like(tgt), tgt, prb).mean().item())
    assert res["baseline_val_rmse"] == pytest.approx(zero, rel=1e-6)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["training"]["best_epoch"] == res["best_epoch"]


def test_resume_continues_exactly(tmp_path):
    curves = _curves(40)
    a = pretrain(curves[:32], curves[32:], _cfg(epochs=3), TINY, tmp_path / "a")
    pretrain(curves[:32], curves[32:], _cfg(epochs=1), TINY, tmp_path / "b")
    b = pretrain(curves[:32], curves[32:], _cfg(epochs=3), TINY, tmp_path / "b", resume=True)
    assert [h["val_rmse"] for h in b["history"]] == [h["val_rmse"] for h in a["history"]]
    ca = load_file(str(tmp_path / "a" / "checkpoint.safetensors"))
    cb = load_file(str(tmp_path / "b" / "checkpoint.safetensors"))
    assert ca.keys() == cb.keys()
    for k in ca:
        assert torch.equal(ca[k], cb[k]), k
    # a checkpoint of another shape is refused
    with pytest.raises(ModelError, match="another model configuration"):
        pretrain(curves[:32], curves[32:], _cfg(epochs=4), AstromerConfig.astromer2(n_layers=1, d_model=8,
                 n_heads=2, d_ff=8), tmp_path / "b", resume=True)


class _CancelAfter:
    def __init__(self, n):
        self.n, self.calls, self.cancelled = n, 0, False

    def __call__(self, step, total, message, metrics=None):
        self.calls += 1
        if step >= self.n:
            self.cancelled = True


def test_cancel_stops_and_keeps_last_epoch(tmp_path):
    curves = _curves(40)
    steps_per_epoch = math.ceil(32 / 16)
    prog = _CancelAfter(steps_per_epoch)  # set at epoch 1's last step (always reported): stops in epoch 2
    res = pretrain(curves[:32], curves[32:], _cfg(epochs=5), TINY, tmp_path, progress=prog)
    assert res["stopped"] == "cancelled"
    assert res["epochs"] == 1
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    assert meta["epoch"] == 1
    assert (tmp_path / "model.safetensors").exists()
    res2 = pretrain(curves[:32], curves[32:], _cfg(epochs=2), TINY, tmp_path, resume=True)
    assert res2["epochs"] == 2 and res2["stopped"] == "max_epochs"


def test_finetune_starts_from_encoder_with_small_lr(tmp_path):
    curves = _curves(30)
    pretrain(curves[:24], curves[24:], _cfg(epochs=1, error_weighted=True), TINY, tmp_path / "pre")
    res = finetune(curves[:24], None, _cfg(epochs=1), tmp_path / "pre", tmp_path / "ft")
    assert res["lr"] == 1e-5
    assert res["n_train"] + res["n_val"] == 24
    pre, _ = load_encoder(tmp_path / "pre")
    ft, cfg = load_encoder(tmp_path / "ft")
    assert cfg == TINY
    diffs = [float((a - b).abs().max()) for a, b in zip(pre.state_dict().values(), ft.state_dict().values(),
                                                          strict=True)]
    assert 0 < max(diffs) < 1e-3  # moved, but only a little at lr 1e-5
    meta = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert meta["training"]["init_from"] == str(tmp_path / "pre")
    with pytest.raises(ModelError, match="overwrite"):
        finetune(curves, None, _cfg(), tmp_path / "pre", tmp_path / "pre")


def test_design_call_form_and_bad_inputs(tmp_path):
    curves = _curves(12)
    res = pretrain(curves, None, _cfg(epochs=0), out_dir=tmp_path)  # DESIGN.md's call form
    assert res["epochs"] == 0 and len(res["history"]) == 1
    assert json.loads((tmp_path / "config.json").read_text())["arch"] == "astromer2"
    with pytest.raises(ModelError, match="at least 2"):
        pretrain(curves[:1], None, _cfg(), TINY, tmp_path / "x")
    with pytest.raises(ModelError, match="unknown training settings"):
        TrainConfig.from_dict({"epochz": 3})
    assert TrainConfig.from_dict(TrainConfig(betas=(0.8, 0.9)).to_dict()).betas == (0.8, 0.9)


@pytest.mark.slow
def test_pretraining_on_catalina_lowers_validation_rmse(shared_data, tmp_path):
    """A few minutes of pretraining a small Astromer 2 on real Catalina light curves."""
    import pyarrow.parquet as pq

    obs = pq.read_table(shared_data / "catalina_train" / "observations.parquet",
                        columns=["object_id", "time_mjd", "mag", "mag_err"]).to_pandas()
    ids = obs["object_id"].drop_duplicates().sample(1200, random_state=0)
    obs = obs[obs["object_id"].isin(set(ids))]
    curves = [(g["time_mjd"].to_numpy(), g["mag"].to_numpy(), g["mag_err"].to_numpy())
              for _, g in obs.groupby("object_id", sort=True)]
    cfg = TrainConfig(epochs=100, batch_size=64, seed=0, max_minutes=4, patience=100)
    model_cfg = AstromerConfig.astromer2(n_layers=2, d_model=64, d_ff=64)
    res = pretrain(curves[:1000], curves[1000:], cfg, model_cfg, tmp_path)
    curve = [round(h["val_rmse"], 4) for h in res["history"]]
    print("Catalina validation RMSE by epoch:", curve, "windows/s:", res["windows_per_s"])
    assert res["epochs"] >= 2
    assert res["best_val_rmse"] < 0.9 * res["history"][0]["val_rmse"]
