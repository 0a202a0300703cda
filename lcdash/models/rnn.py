"""Becker et al. 2020 recurrent classifier (MNRAS 493, 2981; arXiv:2002.00994).

A light curve becomes a sequence of first differences (dt_i, dm_i) after sorting by time and
dropping duplicate times; a window of `w` differences slid with stride `s` is one RNN step of
dimension 2w: [dt_i .. dt_{i+w-1}, dm_i .. dm_{i+w-1}]. With L observations there are
N = floor((L - 1 - w + s) / s) steps. A stacked GRU reads the steps; its last valid hidden state
goes through FC(2 x hidden, ReLU, dropout 0.4) to the class logits.

Input scaling (our choice, the paper feeds raw differences): dt -> log1p(dt) so that season gaps
of hundreds of days do not saturate the GRU, then dt and dm are divided by scales fitted on the
training set (`fit_scales`). Zero stays zero, so padding is unambiguous.
"""

from __future__ import annotations

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

    return BeckerGRU()
