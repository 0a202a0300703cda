"""Becker et al. 2020 recurrent classifier (MNRAS 493, 2981; arXiv:2002.00994).

A light curve becomes a sequence of first differences (dt_i, dm_i) after sorting by time and
dropping duplicate times; a window of `w` differences slid with stride `s` is one RNN step of
dimension 2w: [dt_i .. dt_{i+w-1}, dm_i .. dm_{i+w-1}]. With L observations there are
N = floor((L - 1 - w + s) / s) steps. A stacked GRU reads the steps; its last valid hidden state
goes through FC(2 x hidden, ReLU, dropout 0.4) to the class logits.

Input scaling (our choice, the paper feeds raw differences): dt -> log1p(dt) so that season gaps
of hundreds of days do not saturate the GRU, then dt and dm are divided by scales fitted on the
training set (`fit_scales`). Zero stays zero, so padding is unambiguous.

Incremental update (the paper's "updated with a low computational cost for new observations"): a
step's input depends only on its own w differences and the two fixed training-set scales, never on
the rest of the curve, so the state after N steps plus the observations from `tail_start` on is
all that k new observations need (O(k) work; `BeckerGRU.advance`, `StreamState`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def n_steps(n_obs: int | np.ndarray, w: int = 4, s: int = 2):
    """Number of RNN steps for a light curve of `n_obs` unique-time observations (0 when too short)."""
    n = (np.asarray(n_obs) - 1 - w + s) // s
    return np.maximum(n, 0)


def differences(time: np.ndarray, mag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, duplicate-time-free first differences (dt, dm) of one light curve."""
    time = np.asarray(time, dtype=np.float64)
    mag = np.asarray(mag, dtype=np.float64)
    order = np.argsort(time, kind="stable")
    time, mag = time[order], mag[order]
    keep = np.ones(len(time), dtype=bool)
    keep[1:] = np.diff(time) > 0
    time, mag = time[keep], mag[keep]
    return np.diff(time), np.diff(mag)


def curve_differences(batch) -> list[tuple[np.ndarray, np.ndarray]]:
    """(dt, dm) per row of a LightCurveBatch (only observed points)."""
    out = []
    for i in range(len(batch.length)):
        m = batch.mask[i]
        out.append(differences(batch.time[i][m], batch.mag[i][m]))
    return out


def step_sequences(
    diffs: list[tuple[np.ndarray, np.ndarray]],
    w: int = 4,
    s: int = 2,
    dt_scale: float = 1.0,
    dm_scale: float = 1.0,
    max_steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stack the dt/dm windows of every curve: float32 [B, N_max, 2w] (zero padded) and int64 lengths.

    A curve with fewer than w differences still gets one (zero-padded) step so every row has a
    valid last state. `max_steps` keeps the first steps of very long curves (memory bound).
    """
    per_curve = []
    for dt, dm in diffs:
        dt = np.log1p(np.maximum(dt, 0.0)) / dt_scale
        dm = dm / dm_scale
        n = int(n_steps(len(dt) + 1, w, s))
        if n == 0:
            pad = np.zeros(w)
            pad_dt, pad_dm = pad.copy(), pad.copy()
            pad_dt[: len(dt)], pad_dm[: len(dm)] = dt, dm
            steps = np.concatenate([pad_dt, pad_dm])[None, :]
        else:
            idx = np.arange(n)[:, None] * s + np.arange(w)[None, :]
            steps = np.concatenate([dt[idx], dm[idx]], axis=1)
        if max_steps is not None:
            steps = steps[:max_steps]
        per_curve.append(steps)
    lengths = np.array([len(p) for p in per_curve], dtype=np.int64)
    out = np.zeros((len(per_curve), int(lengths.max()) if len(lengths) else 1, 2 * w), dtype=np.float32)
    for i, p in enumerate(per_curve):
        out[i, : len(p)] = p
    return out, lengths


def fit_scales(diffs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """Standard deviations of log1p(dt) and dm over a training set (1.0 when degenerate)."""
    dt = np.concatenate([np.log1p(np.maximum(d[0], 0.0)) for d in diffs] or [np.zeros(1)])
    dm = np.concatenate([d[1] for d in diffs] or [np.zeros(1)])
    sdt, sdm = float(np.std(dt)), float(np.std(dm))
    return (sdt if sdt > 0 else 1.0), (sdm if sdm > 0 else 1.0)


def build_gru(n_classes: int, w: int = 4, hidden: int = 25, n_layers: int = 2, dropout: float = 0.4):
    """The Becker GRU classifier as a torch module: forward(x [B, N, 2w], lengths [B]) -> logits."""
    import torch
    from torch import nn

    class BeckerGRU(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(2 * w, hidden, num_layers=n_layers, batch_first=True)
            self.head = nn.Sequential(
                nn.Linear(hidden, 2 * hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(2 * hidden, n_classes),
            )

        def forward(self, x, lengths):
            out, _ = self.gru(x)  # causal: the state at step n-1 ignores the padding after it
            last = (lengths.to(out.device) - 1).clamp(min=0)
            h = out[torch.arange(out.shape[0], device=out.device), last]
            return self.head(h)

        def advance(self, x, lengths, h0=None):
            """Every layer's hidden state [n_layers, B, hidden] after each row's last valid step,
            starting from h0 (None: zeros, as forward does); rows with no step keep h0. The GRU is
            causal, so reading steps 0..a and then a..b from the saved state equals reading 0..b."""
            h = (
                torch.zeros(n_layers, x.shape[0], hidden, dtype=x.dtype, device=x.device)
                if h0 is None
                else h0.clone()
            )
            lengths = torch.as_tensor(lengths).cpu()
            rows = torch.nonzero(lengths > 0).flatten()
            if len(rows):
                packed = nn.utils.rnn.pack_padded_sequence(
                    x[rows.to(x.device)], lengths[rows], batch_first=True, enforce_sorted=False
                )
                _, hn = self.gru(packed, h[:, rows.to(x.device)].contiguous())
                h[:, rows.to(x.device)] = hn
            return h

        def classify(self, h_last):
            """Logits from the last layer's hidden state [B, hidden] (forward's head)."""
            return self.head(h_last)

    return BeckerGRU()


def tail_start(n_obs: int, w: int = 4, s: int = 2) -> int:
    """Index of the first observation the next step reads, once a curve of `n_obs` observations
    has been read: step k reads differences k*s .. k*s+w-1, i.e. observations k*s .. k*s+w, so after
    N = n_steps(n_obs) steps the next one starts at observation N*s. Keeping observations N*s ..
    n_obs-1 (w-s+1 .. w of them; the whole curve while N = 0) and the GRU state after step N is
    exactly what continuing needs: the windows overlap by w-s differences."""
    return int(n_steps(n_obs, w, s)) * s


@dataclass
class StreamState:
    """What continuing each curve's RNN read needs (lcdash.classifiers.BeckerRNN.stream_states).

    hidden float32 [B, n_layers, hidden] after `n_steps` steps; `n_obs` observations read so far;
    tail_time / tail_mag: observations tail_start(n_obs) .. n_obs-1; proba [B, C] the class
    probabilities of the curve read so far.
    """

    hidden: np.ndarray
    n_obs: np.ndarray
    n_steps: np.ndarray
    tail_time: list
    tail_mag: list
    proba: np.ndarray

    @classmethod
    def empty(cls, n: int, n_layers: int, hidden: int, n_classes: int) -> StreamState:
        return cls(
            np.zeros((n, n_layers, hidden), np.float32),
            np.zeros(n, np.int64),
            np.zeros(n, np.int64),
            [np.zeros(0, np.float64) for _ in range(n)],
            [np.zeros(0, np.float64) for _ in range(n)],
            np.full((n, n_classes), np.nan, np.float32),
        )

    def __len__(self) -> int:
        return len(self.n_obs)
