"""Becker et al. 2020's low-cost update: class probabilities of growing light curves in O(new).

`train_rnn` fits a BeckerRNN on a store's catalogue labels, saves it and registers it;
`update_states` brings every object's saved RNN read (lcdash.store.rnn_states) up to date with its
stored light curve. An object without a saved read is read in full; one whose curve has grown is
continued from its saved GRU state and tail with only the new observations: the store is asked for
the curve from the tail's first observation on (O(new) reads too), and the tail must come back
unchanged. The store merges a re-ingested curve with stored values winning, so stored values never
change; an observation inserted before the last one read shifts the tail's positions, the check
fails, and the object is read again in full (the report counts it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lcdash.classifiers import BeckerRNN, make_classifier
from lcdash.errors import ModelError, ValidationError
from lcdash.models.rnn import StreamState, tail_start
from lcdash.store.embeddings import _weights_sha256
from lcdash.store.rnn_states import get_rnn, load_states, read_from, register_rnn, save_states, stale_oids


@dataclass
class UpdateReport:
    model: str
    band: str
    new: int = 0  # objects read in full for the first time
    incremental: int = 0  # continued from the saved state
    recomputed: int = 0  # read again in full: observations before the last one read changed
    new_observations: int = 0  # observations read by the incremental updates
    seconds: float = 0.0
    changed: dict = field(default_factory=dict)  # oid -> (old label, new label) of incremental updates

    def summary(self) -> str:
        flips = len(self.changed)
        return (
            f"RNN {self.model!r}, band {self.band}: {self.new:,} object(s) read in full, "
            f"{self.incremental:,} updated from their saved state with {self.new_observations:,} new "
            f"observation(s), {self.recomputed:,} recomputed (earlier observations changed); "
            f"{flips:,} predicted class(es) changed; {self.seconds:.2f} s"
        )


def _band(store, band: str | None, survey: str | None) -> str:
    if band:
        return band
    oids = store.objects(survey=survey, columns=["oid"])["oid"].to_numpy(np.int64) if survey else None
    bands = store.bands(oids)
    if len(bands) != 1:
        raise ValidationError(f"the objects have bands {', '.join(bands) or 'none'}: choose one with --band")
    return bands[0]


def load_rnn(store, name: str, device=None):
    """The registered RNN `name` as a fitted BeckerRNN (its weights must be the registered ones)."""
    info = get_rnn(store, name)
    if _weights_sha256(Path(info["path"])) != info["sha256"]:
        raise ModelError(
            f"the weights in {info['path']} changed since RNN {name!r} was registered: register it again "
            "(its saved states are then recomputed)"
        )
    return BeckerRNN.load(info["path"], device=device), info


def train_rnn(
    store, name: str, out, survey: str | None = None, band: str | None = None,
    max_per_class: int | None = None, seed: int = 0, **params,
) -> dict:  # fmt: skip
    """Fit a BeckerRNN on the catalogue labels (20% per class held out for early stopping), save it
    to `out` and register it as `name`. Returns the registry entry plus fit statistics."""
    band = _band(store, band, survey)
    df = store.objects(survey=survey, band=band, labelled=True, columns=["oid", "label"])
    if df["label"].nunique() < 2:
        raise ValidationError(f"need at least 2 labelled classes in band {band}, got {df['label'].nunique()}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for _, g in df.groupby("label"):
        idx = rng.permutation(g["oid"].to_numpy(np.int64))[: max_per_class or None]
        n_val = int(len(idx) * 0.2) if len(idx) >= 5 else 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    train, val = np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
    labels = df.set_index("oid")["label"]
    est = make_classifier("rnn", seed=seed, **params)
    t0 = time.perf_counter()
    est.fit(
        store.read_batch(train, band=band),
        labels.loc[train].to_numpy(str),
        store.read_batch(val, band=band) if len(val) else None,
        labels.loc[val].to_numpy(str) if len(val) else None,
    )
    est.save(out)
    info = register_rnn(store, name, out)
    return {**info, "band": band, "n_train": int(len(train)), "n_val": int(len(val)),
            "epochs": int(est.n_epochs_), "fit_seconds": time.perf_counter() - t0}  # fmt: skip


def _same(a, b) -> bool:
    return len(a) == len(b) and bool(np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64)))


def update_states(
    store, model: str, band: str | None = None, survey: str | None = None, oids=None,
    batch_size: int = 512, device=None, progress=None,
) -> UpdateReport:  # fmt: skip
    """Bring the saved RNN reads of `model` up to date with the stored light curves in `band`
    (restricted to a survey or to `oids` when given); see the module docstring."""
    t0 = time.perf_counter()
    est, info = load_rnn(store, model, device=device)
    band = _band(store, band, survey)
    report = UpdateReport(model, band)
    missing, behind = stale_oids(store, model, band, survey)
    if oids is not None:
        missing, behind = (np.intersect1d(x, np.asarray(oids, np.int64)) for x in (missing, behind))
    classes = np.asarray(info["classes"])
    total = len(missing) + len(behind)
    done = 0
    # continue the grown curves from their saved state
    for lo in range(0, len(behind), batch_size):
        part = behind[lo : lo + batch_size]
        held, state = load_states(store, model, part, band, est.n_layers, est.hidden)
        starts = [tail_start(int(n), est.w, est.s) for n in state.n_obs]
        got, times, mags = read_from(store, held, band, starts)  # the tail and what follows: O(new)
        if not np.array_equal(got, held):
            raise ModelError("light curves changed while their RNN states were being updated; run it again")
        new, ok = [], np.zeros(len(held), bool)
        for i in range(len(held)):
            t, m = times[i], mags[i]
            k = int(state.n_obs[i]) - starts[i]  # observations of the saved tail
            ok[i] = len(t) > k and _same(t[:k], state.tail_time[i]) and _same(m[:k], state.tail_mag[i])
            new.append((t[k:], m[k:]))
        keep = np.flatnonzero(ok)
        if len(keep):
            sub = StreamState(
                state.hidden[keep], state.n_obs[keep], state.n_steps[keep],
                [state.tail_time[i] for i in keep], [state.tail_mag[i] for i in keep], state.proba[keep],
            )  # fmt: skip
            updated = est.update_stream(sub, [new[i] for i in keep], batch_size)
            save_states(store, model, held[keep], [band] * len(keep), updated, classes)
            report.incremental += len(keep)
            report.new_observations += int(sum(len(new[i][0]) for i in keep))
            before = classes[np.argmax(sub.proba, 1)]
            after = classes[np.argmax(updated.proba, 1)]
            for j in np.flatnonzero(before != after):
                report.changed[int(held[keep[j]])] = (str(before[j]), str(after[j]))
        redo = np.flatnonzero(~ok)
        if len(redo):
            missing = np.concatenate([missing, held[redo]])
            report.recomputed += len(redo)
        done += len(held) - len(redo)
        if progress is not None:
            progress(done, total, "incremental updates")
    # read the others in full
    for lo in range(0, len(missing), batch_size):
        part = np.sort(missing[lo : lo + batch_size])
        state = est.stream_states(store.read_batch(part, band=band), batch_size)
        save_states(store, model, part, [band] * len(part), state, classes)
        done += len(part)
        if progress is not None:
            progress(done, total, "full reads")
    report.new = len(missing) - report.recomputed
    report.seconds = time.perf_counter() - t0
    return report
