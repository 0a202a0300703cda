"""Astromer 1 / 2 model: shapes, the reference quirks, key masking, pooling, pretraining masking, loss."""

from __future__ import annotations

import math

import pytest
import torch

from lcdash.errors import ModelError
from lcdash.models.astromer import (
    Astromer,
    AstromerConfig,
    LayerWeightedPooling,
    error_weights,
    mask_for_pretraining,
    masked_mean,
    masked_rmse,
    pe_rates,
    positional_encoding,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


T = 200


def small(arch: str, **kw) -> AstromerConfig:
    base = AstromerConfig.astromer1 if arch == "astromer1" else AstromerConfig.astromer2
    return base(**{"d_model": 32, "d_ff": 16, "n_layers": 2, **kw})


def inputs(B=3, lengths=(200, 57, 120), seed=0):
    g = torch.Generator().manual_seed(seed)
    mag = torch.randn(B, T, generator=g) * 0.3
    time = torch.cumsum(torch.rand(B, T, generator=g) * 5, 1)
    mask = torch.zeros(B, T)
    for i, n in enumerate(lengths):
        mask[i, n:] = 1.0
        mag[i, n:] = 0.0
        time[i, :n] -= time[i, :n].mean()
        time[i, n:] = 0.0
    return mag, time, mask


def test_config_presets_and_json_round_trip():
    a1, a2 = AstromerConfig.astromer1(), AstromerConfig.astromer2()
    assert (a1.arch, a1.n_layers, a1.d_ff, a1.d_model, a1.n_heads) == ("astromer1", 2, 128, 256, 4)
    assert (a2.arch, a2.n_layers, a2.d_ff) == ("astromer2", 6, 256)
    assert a1.ln_eps == 1e-6 and a1.pe_base == 10000.0 and a1.window == 200
    assert AstromerConfig.from_json(a2.to_json()) == a2
    assert AstromerConfig.from_dict(a1.to_dict()) == a1
    with pytest.raises(ModelError, match="architecture"):
        AstromerConfig(arch="gpt")
    with pytest.raises(ModelError, match="unknown Astromer config keys"):
        AstromerConfig.from_dict({**a1.to_dict(), "bogus": 1})
    with pytest.raises(ModelError, match="divisible"):
        AstromerConfig.astromer1(n_heads=3)


def test_published_parameter_counts():
    # the official macho_a0 checkpoint has 661,505 parameters (golden README section 1)
    assert Astromer(AstromerConfig.astromer1()).n_params() == 661_505
    n2 = Astromer(AstromerConfig.astromer2()).n_params()
    assert 2.0e6 < n2 < 3.3e6  # MODELS.md: about 2.0M to 3.2M depending on FFN width


def test_positional_encoding_formula():
    t = torch.tensor([[0.0, 1.5, -700.25]])
    pe = positional_encoding(t, pe_rates(8))
    for j in range(8):
        angle = t[0].double() / 10000 ** (2 * j / 8)  # raw j in the exponent
        want = torch.sin(angle) if j % 2 == 0 else torch.cos(angle)
        assert torch.allclose(pe[0, :, j].double(), want, atol=2e-4)
    assert torch.equal(pe[0, 0], torch.tensor([0.0, 1.0] * 4))


@pytest.mark.parametrize("arch", ["astromer1", "astromer2"])
def test_shapes_and_input_forms(arch):
    torch.manual_seed(0)
    cfg = small(arch)
    model = Astromer(cfg).eval()
    mag, time, mask = inputs()
    with torch.no_grad():
        hidden = model.encode(mag, time, mask)
        recon = model(mag, time, mask)
        hidden3 = model.encode(mag[..., None], time[..., None], mask[..., None])
    assert len(hidden) == cfg.n_layers + 1
    assert all(h.shape == (3, T, cfg.d_model) for h in hidden)
    assert recon.shape == (3, T)
    assert all(torch.equal(a, b) for a, b in zip(hidden, hidden3, strict=True))
    with pytest.raises(ModelError, match="shaped"):
        model.encode(mag[..., None].expand(-1, -1, 2), time, mask)


@pytest.mark.parametrize("arch", ["astromer1", "astromer2"])
def test_trace_matches_encode_and_batch_independence(arch):
    torch.manual_seed(1)
    model = Astromer(small(arch)).eval()
    mag, time, mask = inputs()
    with torch.no_grad():
        hidden = model.encode(mag, time, mask)
        alone = model.encode(mag[1:2], time[1:2], mask[1:2])
    trace = model.trace(mag, time, mask)
    assert torch.allclose(trace["layer_1_out"], hidden[-1], atol=1e-4)
    assert torch.allclose(trace["reconstruction"], model.head(hidden[-1]), atol=1e-4)
    assert torch.allclose(trace["layer_0_attn_weights"].sum(-1), torch.ones(3, 4, T), atol=1e-5)
    assert torch.allclose(alone[-1][0], hidden[-1][1], atol=1e-5)


def test_astromer1_attention_bias_is_plus_one_not_a_mask():
    model = Astromer(small("astromer1"))
    m = torch.tensor([[0.0, 0.0, 1.0]])
    bias = model.attention_bias(m)[0, 0]
    assert torch.equal(bias, torch.tensor([[0.0, 0, 1], [0, 0, 1], [1, 1, 1]]))


def test_astromer1_depends_on_padding_content_as_the_reference_does():
    # reference quirk (golden README 3.3): padding is not hidden, so its values reach valid steps
    torch.manual_seed(2)
    model = Astromer(small("astromer1")).eval()
    mag, time, mask = inputs()
    mag2 = mag.clone()
    mag2[1, 57:] = 0.5
    with torch.no_grad():
        a, b = model.encode(mag, time, mask)[-1], model.encode(mag2, time, mask)[-1]
    assert (a[1, :57] - b[1, :57]).abs().max() > 1e-3
    # masked inputs keep their true magnitude in Astromer 1
    mag3 = mag.clone()
    mag3[0, 10] += 1.0
    with torch.no_grad():
        c = model.encode(mag3, time, mask)[0]
    assert (c[0, 10] - model.encode(mag, time, mask)[0][0, 10]).abs().max() > 1e-3


def test_astromer2_key_masking_hides_padding_and_hidden_steps():
    torch.manual_seed(3)
    model = Astromer(small("astromer2")).eval()
    with torch.no_grad():
        model.mask_token.fill_(0.7)
    mag, time, mask = inputs()
    mag2, time2 = mag.clone(), time.clone()
    mag2[1, 57:] = 5.0  # padded magnitudes (replaced by the [MASK] token anyway)
    time2[1, 57:] = 123.0  # padded times: change the padded keys' embeddings
    with torch.no_grad():
        a = model.encode(mag, time, mask)
        b = model.encode(mag2, time2, mask)
    for ha, hb in zip(a, b, strict=True):
        assert torch.allclose(ha[1, :57], hb[1, :57], atol=1e-5)
    assert (a[-1][1, 57:] - b[-1][1, 57:]).abs().max() > 1e-3  # the padded steps themselves changed
    # a hidden step's magnitude is replaced by the mask token: its value does not matter
    mask3 = mask.clone()
    mask3[0, 5] = 1.0
    mag3 = mag.clone()
    mag3[0, 5] = 9.0
    with torch.no_grad():
        c = model.encode(mag, time, mask3)[-1]
        d = model.encode(mag3, time, mask3)[-1]
    assert torch.allclose(c, d, atol=1e-6)


def test_dropout_only_in_training():
    torch.manual_seed(4)
    model = Astromer(small("astromer2", dropout=0.5))
    mag, time, mask = inputs()
    model.train()
    assert not torch.equal(model(mag, time, mask), model(mag, time, mask))
    model.eval()
    assert torch.equal(model(mag, time, mask), model(mag, time, mask))


def test_masked_mean_and_layer_weighted_pooling():
    h = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    valid = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    mm = masked_mean(h, valid)
    assert torch.allclose(mm[0], h[0, :2].mean(0)) and torch.allclose(mm[1], h[1].mean(0))
    assert torch.equal(masked_mean(h, torch.zeros(2, 4)), torch.zeros(2, 3))

    pool = LayerWeightedPooling(3)
    assert torch.allclose(pool.gamma, torch.full((3,), 1 / 3))
    layers = [h, h * 2, h * 3]
    z = pool(layers, valid)
    x = torch.stack([masked_mean(t, valid) for t in layers], 1)
    assert torch.allclose(z, x.mean(1) / 3)  # uniform softmax weights: (1/3) * sum (1/3) x_l
    assert torch.allclose(pool(x), z)
    with torch.no_grad():
        pool.gamma.copy_(torch.tensor([0.0, 0.0, 50.0]))  # all weight on the last layer
    assert torch.allclose(pool(x), x[:, 2] / 3, atol=1e-5)
    with pytest.raises(ModelError, match="valid_mask"):
        pool(layers)
    with pytest.raises(ModelError, match="weights"):
        pool(x[:, :2])


def test_masking_counts_for_full_and_short_windows():
    g = torch.Generator().manual_seed(0)
    B = 64
    valid = torch.ones(B, T)
    valid[B // 2 :, 57:] = 0
    mag = torch.randn(B, T, generator=g)
    mag[~valid.bool()] = 0
    mask_in, probed, input_mag = mask_for_pretraining(valid, g, mag=mag)
    assert mask_in.dtype == probed.dtype == input_mag.dtype == torch.float32
    full, short = slice(0, B // 2), slice(B // 2, B)
    changed = (input_mag != mag) & probed.bool()
    visible_probed = probed.bool() & (mask_in == 0)
    # 200 observations: 100 probed, 20 same, 16 random, 64 hidden
    assert (probed[full].sum(1) == 100).all()
    assert ((mask_in[full] == 1).sum(1) == 64).all()
    assert (visible_probed[full].sum(1) == 36).all()  # 20 same + 16 random
    assert (changed[full].sum(1) <= 16).all() and changed[full].sum() > 0.9 * 16 * (B // 2)
    # 57 observations: floor(28.5)=28 probed, ceil(5.6)=6 same, ceil(4.4)=5 random, 17 hidden + 143 padding
    assert (probed[short].sum(1) == 28).all()
    assert ((mask_in[short] == 1).sum(1) == 17 + 143).all()
    assert ((probed[short].bool() & (mask_in[short] == 0)).sum(1) == 11).all()
    assert (probed[short][:, 57:] == 0).all() and (mask_in[short][:, 57:] == 1).all()
    # replacements come from the same window's valid steps; nothing outside the probed set changes
    assert ((input_mag != mag) <= probed.bool()).all()
    for i in range(B):
        n = int(valid[i].sum())
        vals = set(mag[i, :n].tolist())
        assert set(input_mag[i, :n][changed[i, :n]].tolist()) <= vals
    # hidden steps are in the loss
    assert ((mask_in == 1) & valid.bool() <= probed.bool()).all()


def test_masking_is_reproducible_with_a_generator():
    valid = torch.ones(2, T)
    mag = torch.randn(2, T)
    a = mask_for_pretraining(valid, torch.Generator().manual_seed(5), mag=mag)
    b = mask_for_pretraining(valid, torch.Generator().manual_seed(5), mag=mag)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_masked_rmse_and_error_weights():
    pred = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # per sample: (0 + 4) / 2 = 2 and 1 / 1 = 1; batch mean 1.5
    assert math.isclose(masked_rmse(pred, target, m).item(), math.sqrt(1.5), rel_tol=1e-6)
    w = torch.tensor([[1.0, 0.5, 1.0], [2.0, 1.0, 1.0]])
    assert math.isclose(masked_rmse(pred, target, m, w).item(), math.sqrt((2 / 2 + 2) / 2), rel_tol=1e-6)

    err = torch.tensor([[0.1, 0.2, 0.4, 0.0], [0.05, float("nan"), 0.05, 0.1]])
    valid = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    ew = error_weights(err, valid)
    assert torch.allclose(ew[0, :3], torch.tensor([1.0, (5 - 2.5) / 7.5, 0.0]) + 1e-3)
    assert ew[0, 3] == 0 and ew[1, 1] == 0 and ew[1, 3] == 0
    assert torch.allclose(ew[1, [0, 2]], torch.full((2,), 1e-3))  # constant errors: all scaled to 0


def test_masking_counts_follow_the_reference_rounding_for_every_length():
    # reference (float32): n_probed = int(n * 0.5), n_same = ceil(n_probed * 0.2),
    # n_random = ceil((n_probed - n_same) * 0.2)
    n = torch.arange(1, T + 1)
    valid = (torch.arange(T)[None, :] < n[:, None]).float()
    mask_in, probed, _ = mask_for_pretraining(valid, torch.Generator().manual_seed(1), mag=torch.randn(T, T))
    f32 = torch.float32
    n_probed = torch.floor(n.to(f32) * torch.tensor(0.5, dtype=f32))
    n_same = torch.ceil(n_probed * torch.tensor(0.2, dtype=f32))
    n_random = torch.ceil((n_probed - n_same) * torch.tensor(0.2, dtype=f32))
    assert torch.equal(probed.sum(1), n_probed)
    assert torch.equal(((mask_in == 1) & (valid == 1)).sum(1).to(f32), n_probed - n_same - n_random)


@pytest.mark.parametrize("arch", ["astromer1", "astromer2"])
def test_masked_pretraining_steps_reduce_the_loss(arch):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = Astromer(small(arch, n_layers=1, dropout=0.0))
    B, n = 8, 60  # the model takes any window length; short keeps this quick
    time = torch.linspace(-30, 30, n).expand(B, n)
    mag = 0.5 * torch.sin(time * 0.3 + torch.rand(B, 1, generator=g) * 6)
    valid = torch.ones(B, n)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        mask_in, probed, inp = mask_for_pretraining(valid, g, mag=mag)
        loss = masked_rmse(model(inp, time, mask_in), mag, probed)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(arch, [round(v, 3) for v in losses[:3]], [round(v, 3) for v in losses[-3:]])
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    if arch == "astromer2":
        assert model.mask_token.grad is not None and model.mask_token.grad.abs() > 0
