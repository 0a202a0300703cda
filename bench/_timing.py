"""Timing helpers shared by the bench scripts (run as `python bench/<script>.py`, so this folder is on
sys.path)."""

from __future__ import annotations

import time

import numpy as np


def best_of(fn, repeat: int, min_seconds: float = 0.3) -> float:
    """CPU seconds of this process per call (on a shared machine wall time mostly measures the other
    processes): calls repeated until min_seconds of CPU have passed, best of `repeat` such runs."""
    best = np.inf
    for _ in range(repeat):
        calls, t0 = 0, time.process_time()
        while True:
            fn()
            calls += 1
            elapsed = time.process_time() - t0
            if elapsed >= min_seconds:
                break
        best = min(best, elapsed / calls)
    return best
