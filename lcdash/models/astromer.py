"""Astromer 1 and Astromer 2 light-curve encoders in PyTorch.

A transformer encoder over (magnitude, continuous time) sequences of 200 observations, pretrained by
masked-magnitude reconstruction:

* Astromer 1: Donoso-Oliva et al. 2023, A&A 670, A54. The official pretrained weights depend on quirks
  of the reference TensorFlow code that are kept here: no residual connections, an attention "mask"
  that *adds* +min(1, m_i + m_j) to the logits (it hides nothing), masked inputs keep their true
  magnitude, head-major merge, Keras LayerNorm eps 1e-6.
* Astromer 2: Donoso-Oliva et al. 2026, A&A 707, A170 (arXiv:2502.02717). A trainable [MASK] token
  replaces hidden and padded magnitudes, residuals go through a learned Dense projection, hidden and
  padded keys get -1e9, six blocks; per-sample embedding = softmax(gamma)-weighted mean of the
  per-layer mean embeddings (`LayerWeightedPooling`).

Shapes: B batch, T time steps (window, 200), d model width (256), H heads (4), D = d / H (64).
Inputs are float32 [B, T] (or [B, T, 1]); `mask_in` is 1 where a step is hidden or padding.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from lcdash.errors import ModelError

ARCHS = ("astromer1", "astromer2")
#: "astromer": the published encoding (rates 1 / 10000^(2j/d) rad/day: nothing faster than 1 rad/day,
#: so periods below ~6 d have no phase in it); "log-period": sin/cos pairs at periods log-spaced over
#: [pe_min_period, pe_max_period] days (lcdash's period-aware variant, not in the papers).
PE_KINDS = ("astromer", "log-period")


@dataclass
class AstromerConfig:
    arch: str = "astromer2"
    n_layers: int = 6
    n_heads: int = 4
    d_model: int = 256
    d_ff: int = 256
    window: int = 200
    dropout: float = 0.1
    ln_eps: float = 1e-6
    pe_base: float = 10000.0
    # lcdash's period-aware variants (defaults = the published models)
    pe: str = "astromer"
    pe_min_period: float = 0.05
    pe_max_period: float = 5000.0
    fold: bool = False  # windows of period-folded time (lcdash.lightcurve.fold_curves)

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ModelError(f"unknown Astromer architecture {self.arch!r}; expected one of {ARCHS}")
        if self.d_model % self.n_heads:
            raise ModelError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.pe not in PE_KINDS:
            raise ModelError(f"unknown positional encoding {self.pe!r}; expected one of {PE_KINDS}")
        if self.pe == "log-period" and not (0 < self.pe_min_period < self.pe_max_period):
            raise ModelError("log-period encoding needs 0 < pe_min_period < pe_max_period, got "
                             f"{self.pe_min_period} and {self.pe_max_period}")
        if self.pe == "log-period" and self.d_model % 2:
            raise ModelError(f"log-period encoding needs an even d_model, got {self.d_model}")

    @property
    def variant(self) -> str:
        """A readable name: the paper's model, or lcdash's period-aware variant of it."""
        parts = [self.arch, "logpe" if self.pe == "log-period" else "", "folded" if self.fold else ""]
        return "-".join(p for p in parts if p)

    @classmethod
    def variant_of(cls, d: dict) -> str:
        """`variant` of a stored config dict (an encoder's config.json "config"); unknown keys ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names}).variant

    @classmethod
    def astromer1(cls, **kw) -> AstromerConfig:
        """The published Astromer 1 (official MACHO / ATLAS weights): 2 blocks, FFN 128."""
        return cls(**{"arch": "astromer1", "n_layers": 2, "d_ff": 128, **kw})

    @classmethod
    def astromer2(cls, **kw) -> AstromerConfig:
        """Astromer 2: 6 blocks, FFN 256."""
        return cls(**{"arch": "astromer2", "n_layers": 6, "d_ff": 256, **kw})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AstromerConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ModelError(f"unknown Astromer config keys: {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> AstromerConfig:
        return cls.from_dict(json.loads(text))


# ------------------------------------------------------------------------------------------------
# positional encoding on continuous time
# ------------------------------------------------------------------------------------------------
def pe_rates(d_model: int, base: float = 10000.0) -> torch.Tensor:
    """rate_j = 1 / base**(2j/d) for the raw index j (not 2*floor(j/2)), computed in float32 the way
    the reference does (`reciprocal(pow(base, 2j/d))`) so the rounding of the rates matches. [d]"""
    j = torch.arange(d_model, dtype=torch.float32)
    return torch.reciprocal(torch.pow(torch.tensor(base, dtype=torch.float32), (2.0 * j) / float(d_model)))


def log_period_rates(d_model: int, min_period: float, max_period: float) -> torch.Tensor:
    """Angular rates 2 pi / P_k for d/2 periods P_k log-spaced from min_period to max_period (days),
    each repeated for a sin (even j) and cos (odd j) pair. [d]

    Why: variable stars' periods span 0.05 d (delta Scuti) to years (Miras); the published rates stop
    at 1 rad/day. With sin/cos pairs at one rate, PE(t1) . PE(t2) = sum_k cos(w_k (t1 - t2)), a kernel
    on time differences at every period scale."""
    k = torch.arange(d_model // 2, dtype=torch.float64)
    periods = min_period * (max_period / min_period) ** (k / max(d_model // 2 - 1, 1))
    return (2 * math.pi / periods).repeat_interleave(2).float()


def positional_encoding(time: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """PE_j(t) = sin(t * rate_j) for even j, cos(t * rate_j) for odd j. time [B, T] -> [B, T, d].

    The angle is the float32 product, as in the reference; |t| reaches ~1650 d, so float32 sin/cos
    of large arguments is the main source of port-vs-TF differences (see tests/test_parity.py)."""
    angle = time.unsqueeze(-1) * rates  # [B, T, d]
    pe = torch.empty_like(angle)
    pe[..., 0::2] = torch.sin(angle[..., 0::2])
    pe[..., 1::2] = torch.cos(angle[..., 1::2])
    return pe


# ------------------------------------------------------------------------------------------------
# blocks
# ------------------------------------------------------------------------------------------------
class MultiHeadAttention(nn.Module):
    """Q, K, V projections, scaled dot-product attention with an additive bias, head-major merge
    (feature = h * D + c), output projection ("MixerDense").

    The fast path (need_weights=False) runs the fused `scaled_dot_product_attention` kernel on views
    of one product: at inference K and V as one [d, 2d] product without biases (see `forward`), in
    training Q, K and V as one [d, 3d] product; `need_weights=True` is the explicit softmax the
    parity tests compare with the reference."""

    def __init__(self, cfg: AstromerConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.wq, self.wk, self.wv = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, need_weights: bool = False,
                residual: nn.Linear | None = None):
        """x [B, T, d]; bias broadcastable to [B, H, T, T] (or None). `residual` (a Dense on x) is
        added to the output inside the output projection: one matrix product accumulating in place
        instead of a separate product and sum (Astromer 2's LN1(Dense(x) + MHA(x)) at inference)."""
        B, T, d = x.shape
        H = self.n_heads
        D = d // H
        if need_weights:

            def split(y):  # [B, T, d] -> [B, H, T, D]
                return y.view(B, T, H, D).transpose(1, 2)

            q, k, v = split(self.wq(x)), split(self.wk(x)), split(self.wv(x))
            logits = q @ k.transpose(-2, -1) / math.sqrt(D) + bias  # [B, H, T, T]
            weights = torch.softmax(logits, dim=-1)
            y = weights @ v
            out_bias = self.out.bias
        elif torch.is_grad_enabled():
            # training: Q, K and V as one [d, 3d] product with every bias, so that every parameter
            # takes part in the loss (DistributedDataParallel requires it)
            weights = None
            w = torch.cat([self.wq.weight, self.wk.weight, self.wv.weight])
            b = torch.cat([self.wq.bias, self.wk.bias, self.wv.bias])
            q, k, v = F.linear(x, w, b).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)  # 3 x [B, H, T, D]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, H, T, D]
            out_bias = self.out.bias
        else:
            # inference: softmax ignores a constant added to all of a query's logits, so K's bias
            # (q . b_k, the same for every key) drops out; the weights sum to 1, so V's bias passes
            # through and folds into the output bias. Exact in arithmetic; it spares the copies of the
            # bias that `addmm` writes into a [B*T, 2d] output first (1.18x, encoder_throughput.py).
            weights = None
            q = F.linear(x, self.wq.weight, self.wq.bias).view(B, T, H, D).transpose(1, 2)  # [B, H, T, D]
            kv = F.linear(x, torch.cat([self.wk.weight, self.wv.weight]))  # [B, T, 2d]
            k, v = kv.view(B, T, 2, H, D).permute(2, 0, 3, 1, 4)  # 2 x [B, H, T, D]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, H, T, D]
            out_bias = self.out.bias + self.out.weight @ self.wv.bias
        y = y.transpose(1, 2).reshape(B, T, d)  # head-major merge
        if residual is None:
            return F.linear(y, self.out.weight, out_bias), weights
        out = F.linear(y, self.out.weight, out_bias + residual.bias)
        out.view(-1, d).addmm_(x.reshape(-1, d).to(out.dtype), residual.weight.t().to(out.dtype))
        return out, weights


class FeedForward(nn.Module):
    """Dense(d_ff, tanh) -> Dense(d)."""

    def __init__(self, cfg: AstromerConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, cfg.d_ff)
        self.fc2 = nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


class Block(nn.Module):
    """Astromer 1: x -> LN1(Drop(MHA(x))) -> LN2(Drop(FFN(.))), no residuals.
    Astromer 2: x -> LN1(Dense(x) + Drop(MHA(x))) -> LN2(Dense(h) + Drop(FFN(h)))."""

    def __init__(self, cfg: AstromerConfig):
        super().__init__()
        self.residual = cfg.arch == "astromer2"
        self.attn = MultiHeadAttention(cfg)
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.ffn = FeedForward(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.drop = nn.Dropout(cfg.dropout)
        if self.residual:
            self.res1 = nn.Linear(cfg.d_model, cfg.d_model)
            self.res2 = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x, bias, trace: dict | None = None):
        if self.residual and trace is None and not (self.training and self.drop.p > 0):
            # inference: each residual Dense accumulates into the product before it (the same sums,
            # rounded in another order; two fewer passes over [B, T, d] per sublayer)
            h = self.ln1(self.attn(x, bias, residual=self.res1)[0])
            f = self.ffn.fc2(torch.tanh(self.ffn.fc1(h)))
            d = f.shape[-1]
            f.view(-1, d).addmm_(h.reshape(-1, d).to(f.dtype), self.res2.weight.t().to(f.dtype))
            f += self.res2.bias
            return self.ln2(f)
        a, w = self.attn(x, bias, need_weights=trace is not None)
        h = self.ln1(self.res1(x) + self.drop(a) if self.residual else self.drop(a))
        f = self.ffn(h)
        out = self.ln2(self.res2(h) + self.drop(f) if self.residual else self.drop(f))
        if trace is not None:
            trace.update(mha_out=a, attn_weights=w, ln1_out=h, ffn_out=f, out=out)
        return out


class ReconstructionHead(nn.Module):
    """LayerNorm -> Dense(1): a magnitude per step. [B, T, d] -> [B, T]."""

    def __init__(self, cfg: AstromerConfig):
        super().__init__()
        self.ln = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.out = nn.Linear(cfg.d_model, 1)

    def forward(self, h):
        return self.out(self.ln(h)).squeeze(-1)


# ------------------------------------------------------------------------------------------------
# the encoder
# ------------------------------------------------------------------------------------------------
def _flat(x: torch.Tensor) -> torch.Tensor:
    """Accept [B, T] or [B, T, 1]; return float32 [B, T]."""
    if x.dim() == 3:
        if x.shape[-1] != 1:
            raise ModelError(f"expected inputs shaped [B, T] or [B, T, 1], got {tuple(x.shape)}")
        x = x[..., 0]
    if x.dim() != 2:
        raise ModelError(f"expected inputs shaped [B, T] or [B, T, 1], got {tuple(x.shape)}")
    return x.float()


class Astromer(nn.Module):
    """Astromer 1 / 2 encoder with its reconstruction head.

    `encode(mag, time, mask_in)` -> L+1 hidden states [B, T, d] (0 = input embedding, l = block l);
    `forward(mag, time, mask_in)` -> reconstructed magnitudes [B, T]."""

    def __init__(self, cfg: AstromerConfig):
        super().__init__()
        self.cfg = cfg
        self.inp_transform = nn.Linear(1, cfg.d_model)
        if cfg.arch == "astromer2":
            self.mask_token = nn.Parameter(torch.zeros(()))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.head = ReconstructionHead(cfg)
        rates = (pe_rates(cfg.d_model, cfg.pe_base) if cfg.pe == "astromer"
                 else log_period_rates(cfg.d_model, cfg.pe_min_period, cfg.pe_max_period))
        self.register_buffer("pe_rates", rates, persistent=False)

    def attention_bias(self, mask_in: torch.Tensor) -> torch.Tensor:
        """Additive logits bias from mask_in [B, T] (1 = hidden/padded), broadcastable to [B, H, T, T].
        Astromer 1 (reference quirk): +min(1, m_i + m_j), i query, j key. Astromer 2: -1e9 on masked keys."""
        m = mask_in.float()
        if self.cfg.arch == "astromer1":
            return torch.clamp(m[:, :, None] + m[:, None, :], max=1.0)[:, None]
        return (m * -1e9)[:, None, None, :]  # [B, 1, 1, T], broadcast over queries

    def embed_input(self, mag, time, mask_in, trace: dict | None = None):
        """Input embedding E0 = Dense(mag') + PE(time), mag' = mag for A1 (masked steps keep their
        value), mag * (1 - m) + m * [MASK] for A2. -> [B, T, d]"""
        if self.cfg.arch == "astromer2":
            mag = mag * (1.0 - mask_in) + mask_in * self.mask_token
        x = self.inp_transform(mag.unsqueeze(-1))
        pe = positional_encoding(time, self.pe_rates)
        x0 = x + pe
        if trace is not None:
            trace.update(pe=pe, inp_transform=x, x0=x0)
        return self.drop(x0)

    def fused_bias(self, mask_in: torch.Tensor) -> torch.Tensor | None:
        """`attention_bias` for the fused kernel, or None when no step of the batch is hidden or
        padded: both biases are then exactly 0, and the kernel without a bias skips reading a
        [B, 1, T, T] (Astromer 1) or [B, 1, 1, T] tensor per head (lcdash.embed batches full
        windows apart from padded ones so that most batches take this path)."""
        if not bool(mask_in.any()):
            return None
        return self.attention_bias(mask_in)

    def encode(self, mag, time, mask_in) -> list[torch.Tensor]:
        mag, time, mask_in = _flat(mag), _flat(time), _flat(mask_in)
        with torch.autocast(mag.device.type, enabled=False):  # E0 in float32 under bf16 autocast too:
            h = self.embed_input(mag, time, mask_in)  # a Dense of width 1, the cost is the PE
        bias = self.fused_bias(mask_in)
        bias = None if bias is None else bias.to(h.dtype)
        hidden = [h]
        for block in self.blocks:
            h = block(h, bias)
            hidden.append(h)
        return hidden

    def forward(self, mag, time, mask_in) -> torch.Tensor:
        return self.head(self.encode(mag, time, mask_in)[-1])

    @torch.no_grad()
    def trace(self, mag, time, mask_in) -> dict[str, torch.Tensor]:
        """Every intermediate by name (pe, inp_transform, x0, layer_{i}_{mha_out, attn_weights, ln1_out,
        ffn_out, out}, reconstruction), with explicit softmax attention: for parity checks."""
        mag, time, mask_in = _flat(mag), _flat(time), _flat(mask_in)
        rec: dict[str, torch.Tensor] = {}
        h = self.embed_input(mag, time, mask_in, trace=rec)
        bias = self.attention_bias(mask_in)
        for i, block in enumerate(self.blocks):
            t: dict = {}
            h = block(h, bias, trace=t)
            rec.update({f"layer_{i}_{k}": v for k, v in t.items()})
        rec["reconstruction"] = self.head(h)
        return rec

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ------------------------------------------------------------------------------------------------
# pooling
# ------------------------------------------------------------------------------------------------
def masked_mean(h: torch.Tensor, valid_mask: torch.Tensor) -> torch.Tensor:
    """Mean of h [B, T, d] over the steps where valid_mask [B, T] is true/1 -> [B, d]
    (zeros for a row with no valid step)."""
    w = valid_mask.to(h.dtype).unsqueeze(-1)  # [B, T, 1]
    return (h * w).sum(1) / w.sum(1).clamp(min=1.0)


class LayerWeightedPooling(nn.Module):
    """Astromer 2's per-sample embedding: z = 1/(L+1) * sum_l softmax(gamma)_l x_l, where x_l is the
    mean of hidden state l over valid steps; gamma in R^(L+1) starts at 1/(L+1) (uniform weights)."""

    def __init__(self, n_states: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((n_states,), 1.0 / n_states))

    def forward(self, x, valid_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: per-layer means [B, L+1, d], or the list of L+1 hidden states [B, T, d] with valid_mask
        [B, T]. -> [B, d]"""
        if isinstance(x, list | tuple):
            if valid_mask is None:
                raise ModelError("LayerWeightedPooling needs valid_mask with a list of hidden states")
            x = torch.stack([masked_mean(h, valid_mask) for h in x], 1)  # [B, L+1, d]
        n = x.shape[1]
        if n != self.gamma.numel():
            raise ModelError(f"LayerWeightedPooling has {self.gamma.numel()} weights, got {n} layers")
        w = torch.softmax(self.gamma, 0)
        return (x * w[None, :, None]).sum(1) / n


# ------------------------------------------------------------------------------------------------
# masked pretraining
# ------------------------------------------------------------------------------------------------
def mask_for_pretraining(
    valid_mask: torch.Tensor,
    generator: torch.Generator | None = None,
    probed: float = 0.5,
    same: float = 0.2,
    random: float = 0.2,
    *,
    mag: torch.Tensor,
):
    """The Astromer masking scheme for one batch of windows.

    Of the valid steps of each window, floor(probed * n) are probed (the loss is taken there); of those,
    ceil(same * n_probed) keep their true magnitude visible, ceil(random * rest) get a magnitude
    drawn from a random valid step of the same window and stay visible, and the remaining probed
    steps are hidden (the rounding of the reference, main-code `src/data/masking.py`).
    200 observations -> 100 probed, 20 same, 16 random, 64 hidden; 57 -> 28, 6, 5, 17.

    valid_mask [B, T] (bool or 0/1), mag [B, T] (keyword, required). Returns float32 tensors
    (mask_in [B, T]: 1 = hidden or padded; probed_mask [B, T]: 1 = in the loss; input_mag [B, T]:
    the magnitudes to feed, with the random replacements)."""
    valid = _flat(valid_mask) > 0
    mag = _flat(mag)
    B, T = valid.shape
    dev = mag.device
    eps = 1e-4  # products like 0.2 * 100 = 20.000000000000004 must round to 20, not 21
    scores = torch.rand(B, T, generator=generator, device=dev)
    scores = torch.where(valid, scores, torch.full_like(scores, 2.0))  # padding sorts last
    order = scores.argsort(1)  # valid steps first, in random order
    rank = order.argsort(1)  # each step's place in that order
    n_valid = valid.sum(1, keepdim=True).float()
    n_probed = torch.floor(probed * n_valid + eps)
    n_same = torch.ceil(same * n_probed - eps)
    n_random = torch.ceil(random * (n_probed - n_same) - eps)
    r = rank.float()
    probed_mask = valid & (r < n_probed)
    random_mask = (r >= n_same) & (r < n_same + n_random) & probed_mask
    hidden = probed_mask & (r >= n_same + n_random)
    # a random valid step of the same window for each replaced step
    pick = torch.floor(torch.rand(B, T, generator=generator, device=dev) * n_valid).long()
    src = order.gather(1, pick.clamp(max=T - 1))
    input_mag = torch.where(random_mask, mag.gather(1, src), mag)
    mask_in = (hidden | ~valid).float()
    return mask_in, probed_mask.float(), input_mag


def error_weights(err: torch.Tensor, valid_mask: torch.Tensor) -> torch.Tensor:
    """Astromer 2's optional loss weights: 1/sigma min-max scaled per window, + 1e-3. [B, T] -> [B, T]
    (0 on invalid steps or missing/non-positive errors)."""
    valid = (_flat(valid_mask) > 0) & torch.isfinite(err) & (err > 0)
    inv = torch.where(valid, 1.0 / torch.where(valid, err, torch.ones_like(err)), torch.zeros_like(err))
    big = torch.finfo(inv.dtype).max
    lo = torch.where(valid, inv, torch.full_like(inv, big)).amin(1, keepdim=True)
    hi = torch.where(valid, inv, torch.full_like(inv, -big)).amax(1, keepdim=True)
    scaled = (inv - lo) / (hi - lo).clamp(min=1e-12)
    return torch.where(valid, scaled + 1e-3, torch.zeros_like(inv))


def masked_rmse(pred, target, probed_mask, weights=None) -> torch.Tensor:
    """sqrt(batch mean of per-sample sum(w * (pred - target)^2 over probed) / n_probed). Scalar."""
    pred, target, m = _flat(pred), _flat(target), _flat(probed_mask)
    sq = (pred - target) ** 2 * m
    if weights is not None:
        sq = sq * _flat(weights)
    per_sample = sq.sum(1) / m.sum(1).clamp(min=1.0)
    return torch.sqrt(per_sample.mean())
