"""Aguirre, Pichara & Becker 2019 convolutional classifier (MNRAS 482, 5078; arXiv:1810.09440).

Each light curve becomes two sequences, dt = [0, t1 - t0, t2 - t1, ...] and dm = [0, m1 - m0, ...],
truncated or zero-padded to 500. Both go through one weight-shared tower Conv1D(64, k42, s2, ReLU)
-> Conv1D(32, k42, s2, ReLU); the two outputs are concatenated, flattened, then Dropout 0.5 ->
Dense(128, tanh) -> Dropout 0.5 -> Dense(n_classes). 867,168 + 129 x n_classes parameters.

Input scaling (our choice; the paper uses raw days and magnitudes): dt -> log1p(dt), then dt and dm
are divided by scales fitted on the training set. Zero padding stays zero.

Augmentation (`augment`): classes are balanced by making up to 5 copies of each star; copy k keeps
every 1st or 2nd observation (random) and drops a random number 0..k of leading observations.
"""

from __future__ import annotations

import numpy as np

SEQ_LEN = 500
MAX_COPIES = 5


def sequences(time: np.ndarray, mag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dt and dm of one light curve (sorted by time), each starting with 0."""
    time = np.asarray(time, dtype=np.float64)
    mag = np.asarray(mag, dtype=np.float64)
    order = np.argsort(time, kind="stable")
    time, mag = time[order], mag[order]
    dt = np.concatenate([[0.0], np.diff(time)]) if len(time) else np.zeros(0)
    dm = np.concatenate([[0.0], np.diff(mag)]) if len(mag) else np.zeros(0)
    return dt, dm


def curves(batch) -> list[tuple[np.ndarray, np.ndarray]]:
    """(time, mag) of the observed points of every row of a LightCurveBatch."""
    return [(batch.time[i][batch.mask[i]], batch.mag[i][batch.mask[i]]) for i in range(len(batch.length))]


def augment(
    curve_list: list[tuple[np.ndarray, np.ndarray]], y: np.ndarray, rng: np.random.Generator
) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Balance classes with up to MAX_COPIES copies per star (copy 0 is the original).

    A class of n stars is brought towards the largest class count c_max with
    min(MAX_COPIES, ceil(c_max / n)) copies each, then trimmed to c_max.
    """
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    c_max = int(counts.max()) if len(counts) else 0
    out_curves, out_y = [], []
    for cls, n in zip(classes, counts, strict=True):
        members = np.flatnonzero(y == cls)
        copies = min(MAX_COPIES, int(np.ceil(c_max / n)))
        target = min(c_max, n * copies)
        made = 0
        for k in range(copies):
            for i in members:
                if made >= target:
                    break
                t, m = curve_list[i]
                if k > 0:
                    step = int(rng.integers(1, 3))
                    drop = int(rng.integers(0, k + 1))
                    t, m = t[drop::step], m[drop::step]
                    if len(t) < 3:  # too short to be a light curve: keep the original instead
                        t, m = curve_list[i]
                out_curves.append((t, m))
                out_y.append(cls)
                made += 1
    return out_curves, np.asarray(out_y, dtype=y.dtype)


def fit_scales(curve_list: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """Standard deviations of log1p(dt) and dm over a training set (1.0 when degenerate)."""
    dts, dms = [], []
    for t, m in curve_list:
        dt, dm = sequences(t, m)
        dts.append(np.log1p(np.maximum(dt[1:SEQ_LEN], 0.0)))
        dms.append(dm[1:SEQ_LEN])
    dt = np.concatenate(dts or [np.zeros(1)])
    dm = np.concatenate(dms or [np.zeros(1)])
    sdt, sdm = float(np.std(dt)), float(np.std(dm))
    return (sdt if sdt > 0 else 1.0), (sdm if sdm > 0 else 1.0)


def input_array(
    curve_list: list[tuple[np.ndarray, np.ndarray]], dt_scale: float = 1.0, dm_scale: float = 1.0
) -> np.ndarray:
    """float32 [B, 2, SEQ_LEN]: channel 0 = scaled dt, channel 1 = scaled dm (truncated / padded)."""
    out = np.zeros((len(curve_list), 2, SEQ_LEN), dtype=np.float32)
    for i, (t, m) in enumerate(curve_list):
        dt, dm = sequences(t, m)
        n = min(len(dt), SEQ_LEN)
        out[i, 0, :n] = np.log1p(np.maximum(dt[:n], 0.0)) / dt_scale
        out[i, 1, :n] = dm[:n] / dm_scale
    return out


def build_cnn(n_classes: int, seq_len: int = SEQ_LEN):
    """The Aguirre CNN as a torch module: forward(x [B, 2, seq_len]) -> logits."""
    from torch import nn

    def out_len(n: int) -> int:
        return (n - 42) // 2 + 1

    flat = 2 * 32 * out_len(out_len(seq_len))

    class AguirreNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.tower = nn.Sequential(
                nn.Conv1d(1, 64, kernel_size=42, stride=2),
                nn.ReLU(),
                nn.Conv1d(64, 32, kernel_size=42, stride=2),
                nn.ReLU(),
            )
            self.head = nn.Sequential(
                nn.Flatten(),
                nn.Dropout(0.5),
                nn.Linear(flat, 128),
                nn.Tanh(),
                nn.Dropout(0.5),
                nn.Linear(128, n_classes),
            )

        def forward(self, x):
            b = x.shape[0]
            # one tower, shared by dt and dm: run both channels as separate samples
            z = self.tower(x.reshape(b * 2, 1, x.shape[-1]))
            z = z.reshape(b, 2, *z.shape[1:])  # [B, 2, 32, n]
            return self.head(z)

    return AguirreNet()
