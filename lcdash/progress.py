"""One progress-and-cancel protocol for every long loop in lcdash (library, jobs and CLI).

A *progress* is any callable ``progress(step, total=None, message=None, metrics=None)``; it may
have a ``cancelled`` property. `metrics` is a flat dict of numbers (e.g. a loss), which the app
draws as curves. A loop that reports progress stops once it is cancelled: the job engine's
`lcdash.jobs.Progress` raises `JobCancelled` from the call itself, so library loops become
cancellable without knowing about jobs; loops that can return a partial result check
`is_cancelled(progress)` between steps.

The adapters here are the only ones: `Scaled` maps a sub-task into a slice of its parent's steps,
`Retotal` reports a sub-task's steps against the parent's total, and `TqdmProgress` draws a tqdm bar
for the CLI. A leaf module: workers import it without the store.
"""

from __future__ import annotations

import sys

from lcdash.errors import LcdashError


class JobCancelled(LcdashError):
    """Raised inside a worker by `progress(...)` / `progress.check()` once the job was cancelled."""


def is_cancelled(progress) -> bool:
    """Whether `progress` (or None) says its task was cancelled."""
    return bool(getattr(progress, "cancelled", False))


class Scaled:
    """A sub-task's progress (its own step/total) mapped into the slice [lo, hi) of `total` steps."""

    def __init__(self, progress, lo: int, hi: int, total: int, prefix: str = ""):
        self.progress, self.lo, self.hi, self.total, self.prefix = progress, lo, hi, total, prefix

    def position(self, step, total) -> int:
        frac = min(1.0, step / total) if total else 0.0
        return self.lo + int(frac * (self.hi - self.lo))

    def __call__(self, step, total=None, message=None, metrics=None):
        self.progress(self.position(step, total), self.total, f"{self.prefix}{message or ''}", metrics)

    @property
    def cancelled(self) -> bool:
        return is_cancelled(self.progress)


class Retotal:
    """A sub-task's steps reported against the parent's `total` (e.g. the fits of a protocol plus a
    final fit), mirroring the parent's cancel flag."""

    def __init__(self, progress, total: int):
        self.progress, self.total = progress, total

    def __call__(self, step, total=None, message=None, metrics=None):
        self.progress(step, self.total, message, metrics)

    @property
    def cancelled(self) -> bool:
        return is_cancelled(self.progress)


class TqdmProgress:
    """A tqdm bar on stderr fed by the protocol (the CLI's progress): the message and the latest
    metrics show after the bar. Never cancelled (Ctrl-C stops a CLI command)."""

    cancelled = False

    def __init__(self, desc: str, unit: str = "step", leave: bool = True):
        from tqdm import tqdm  # 50 ms to import: only commands that draw a bar pay it

        self.bar = tqdm(desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr, leave=leave)

    def __call__(self, step, total=None, message=None, metrics=None):
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.n = int(step or 0)
        bits = [str(message)[:60]] if message else []
        bits += [f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in (metrics or {}).items()
                 if v is not None]  # fmt: skip
        if bits:
            self.bar.set_postfix_str(" ".join(bits), refresh=False)
        self.bar.refresh()

    def close(self):
        self.bar.close()
