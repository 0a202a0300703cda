"""lcdash.plots: the folded view with the period finder's Fourier model drawn over it, and the
periodogram's marks (named in a legend, never printed over one another)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lcdash import plots
from lcdash.lightcurve import LightCurve
from lcdash.periods import find_period


def _pulsator(period=0.61, n=300, seed=3) -> LightCurve:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 400, n))
    phase = np.mod(t / period, 1.0)
    x = 2 * np.pi * phase  # a smooth, skewed pulsation (no jump for a Fourier series to ring at)
    mag = (
        15
        + 0.3 * np.sin(x)
        + 0.12 * np.sin(2 * x + 1.0)
        + 0.05 * np.sin(3 * x + 2.0)
        + rng.normal(0, 0.02, n)
    )
    return LightCurve(time=t, mag=mag, mag_err=np.full(n, 0.02), band=np.full(n, "V", dtype=object))


def test_phase_curve_follows_the_fold_and_is_drawn_as_a_line_over_both_cycles():
    lc = _pulsator()
    result = find_period(lc.time, lc.mag, lc.mag_err)
    assert result.found and abs(result.period / 0.61 - 1) < 1e-3
    epoch = lc.epoch_of_maximum()
    curve = plots.phase_curve(result.model, result.period, epoch, points=200)
    assert list(curve.columns) == ["phase", "mag"] and len(curve) == 201
    assert curve["phase"].iloc[0] == 0.0 and curve["phase"].iloc[-1] == 1.0
    # the curve at each observation's phase is the model at its time: it lies on the folded points
    phase = lc.fold(result.period)
    on_curve = np.interp(phase, curve["phase"], curve["mag"])
    assert np.allclose(on_curve, result.model(lc.time), atol=0.01)
    assert np.sqrt(np.mean((on_curve - lc.mag) ** 2)) < 0.05

    frame = lc.to_frame().assign(phase=phase)
    fig = plots.folded_figure(frame, result.period, model=curve, model_name="Fourier model", model_band="V")
    points, line = fig.data
    assert points.mode == "markers" and len(points.x) == 2 * len(lc)
    assert line.mode == "lines" and line.name == "Fourier model"
    assert line.line.color == plots.band_colour("V")  # the band's colour, drawn over its points
    xs = np.array([np.nan if x is None else x for x in line.x], dtype=float)
    assert np.nanmin(xs) == 0.0 and np.nanmax(xs) == 2.0  # across the two cycles shown
    assert np.isnan(xs).sum() == 1  # one break between the cycles, no chord back to phase 0
    # without a model the figure is the plain fold
    assert len(plots.folded_figure(frame, result.period).data) == 1


def test_folded_figure_with_an_empty_model_draws_the_points_only():
    frame = pd.DataFrame(
        {"band": "V", "time": [0.0, 1.0], "mag": [15.0, 15.2], "mag_err": 0.01, "phase": [0.1, 0.6]}
    )
    fig = plots.folded_figure(frame, 1.0, model=pd.DataFrame({"phase": [], "mag": []}))
    assert [t.mode for t in fig.data] == ["markers"]


def test_periodogram_marks_are_named_in_a_legend_not_printed_on_the_plot():
    period = np.geomspace(0.05, 500, 800)
    fig = plots.periodogram_figure(
        period,
        np.random.default_rng(0).random(800),
        {"best": 0.7, "P/2": 0.35, "2P": 1.4, "catalogue": 0.7, "finder": 1.4, "folded": 0.7},
    )
    marks = fig.data[1:]
    assert [t.name for t in marks] == ["best = catalogue = folded", "P/2", "2P = finder"]
    assert all(t.mode == "lines" and not t.text for t in marks)  # no labels at the top of the lines
    assert fig.layout.showlegend and fig.layout.legend.orientation == "h"
    assert fig.data[0].showlegend is False  # the power curve itself is not a legend entry
