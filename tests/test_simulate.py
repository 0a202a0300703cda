"""The synthetic survey: reproducibility, class mix, cadence, noise, and recoverable periods."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lcdash.errors import ValidationError
from lcdash.lightcurve import LightCurve
from lcdash.simulate import CLASSES, SURVEY, mag_error, simulate_survey


@pytest.fixture(scope="module")
def survey():
    return simulate_survey(n_objects=270, seed=7)


def test_seeded_reproducibility():
    a_obs, a_obj = simulate_survey(n_objects=40, seed=3)
    b_obs, b_obj = simulate_survey(n_objects=40, seed=3)
    pd.testing.assert_frame_equal(a_obs, b_obs)
    pd.testing.assert_frame_equal(a_obj, b_obj)
    c_obs, _ = simulate_survey(n_objects=40, seed=4)
    assert not np.array_equal(a_obs["mag"].to_numpy()[:100], c_obs["mag"].to_numpy()[:100])


def test_columns_classes_and_counts(survey):
    obs, objs = survey
    assert list(obs.columns) == ["object_id", "band", "time", "mag", "mag_err"]
    assert list(objs.columns) == ["object_id", "label", "period", "ra", "dec", "amplitude", "mean_mag",
                                  "survey"]
    assert len(objs) == 270 and objs["object_id"].is_unique
    assert (objs["survey"] == SURVEY).all()
    counts = objs["label"].value_counts()
    assert set(counts.index) == set(CLASSES) and len(CLASSES) >= 8
    assert counts.max() - counts.min() <= 1          # an even split
    assert set(obs["object_id"]) == set(objs["object_id"])
    assert (obs["band"] == "V").all()
    assert objs.loc[objs["label"] == "QSO", "period"].isna().all()
    assert objs.loc[objs["label"] != "QSO", "period"].gt(0).all()
    assert objs["ra"].between(0, 360).all() and objs["dec"].between(-90, 90).all()


def test_class_parameters_are_plausible(survey):
    _, objs = survey
    by = objs.groupby("label")
    assert by.get_group("RRab")["period"].between(0.45, 0.9).all()
    assert by.get_group("RRab")["amplitude"].between(0.5, 1.2).all()
    assert by.get_group("RRc")["period"].between(0.2, 0.45).all()
    assert by.get_group("EW")["period"].between(0.22, 0.6).all()
    assert by.get_group("EA")["period"].between(0.5, 10).all()
    assert by.get_group("LPV")["period"].between(100, 500).all()
    assert by.get_group("LPV")["amplitude"].between(2, 6).all()
    assert by.get_group("HADS_dScuti")["period"].between(0.03, 0.2).all()
    cep = by.get_group("DCEP")
    assert cep["period"].between(2, 50).all()
    # Cepheid amplitude grows with period.
    assert np.corrcoef(np.log(cep["period"]), cep["amplitude"])[0, 1] > 0.5


def test_cadence_and_noise(survey):
    obs, objs = survey
    n = obs.groupby("object_id").size()
    assert n.min() >= 60 and n.max() <= 400
    # Sorted, unique times per object.
    t = obs.groupby("object_id")["time"]
    assert t.apply(lambda s: s.is_monotonic_increasing and s.is_unique).all()
    # Seasonal gaps: every object with >= 2 seasons has a gap of at least two months.
    gaps = t.apply(lambda s: np.diff(s.to_numpy()).max())
    assert (gaps > 60).mean() > 0.95
    assert (t.max() - t.min()).min() > 365
    # Errors rise toward the faint end.
    assert mag_error(19.0) > 5 * mag_error(15.0)
    faint = obs["mag"] > 18.5
    bright = obs["mag"] < 15
    assert obs.loc[faint, "mag_err"].median() > 3 * obs.loc[bright, "mag_err"].median()


def test_class_subset_weights_and_multiband():
    obs, objs = simulate_survey(n_objects=30, seed=1, classes={"RRab": 2, "EW": 1}, bands=("g", "r"))
    assert objs["label"].value_counts().to_dict() == {"RRab": 20, "EW": 10}
    assert set(obs["band"]) == {"g", "r"}
    per_band = obs.groupby(["object_id", "band"]).size()
    assert per_band.min() >= 60 and per_band.max() <= 400
    # g is bluer/has the larger pulsation amplitude than r for RR Lyrae.
    rr = objs.loc[objs["label"] == "RRab", "object_id"]
    amp = obs[obs["object_id"].isin(rr)].groupby(["object_id", "band"])["mag"].agg(lambda m: m.quantile(0.95)
                                                                                  - m.quantile(0.05))
    assert (amp.xs("g", level="band") > amp.xs("r", level="band")).mean() > 0.8


def test_bad_arguments():
    with pytest.raises(ValidationError, match="unknown classes"):
        simulate_survey(10, classes=["RRab", "Nova"])
    with pytest.raises(ValidationError, match="n_objects"):
        simulate_survey(0)
    with pytest.raises(ValidationError, match="bands"):
        simulate_survey(5, bands=("g", "g"))


def _recovered(objs, obs, label, n):
    groups = dict(tuple(obs[obs["object_id"].isin(objs["object_id"])].groupby("object_id")))
    sample = objs[objs["label"] == label].head(n)
    hits = []
    for row in sample.itertuples():
        best = LightCurve.from_frame(groups[row.object_id]).best_period()
        # Eclipsing binaries: LS finds P/2 (two minima per orbit); narrow Algol eclipses also put
        # comparable power in higher harmonics, so P/3, P/4 count as found for EA.
        ks = {"EW": (1, 2), "EA": (1, 2, 3, 4)}.get(label, (1,))
        hits.append(any(abs(best - row.period / k) < 0.01 * row.period / k for k in ks))
    return np.mean(hits)


@pytest.mark.parametrize("label", ["RRab", "RRc", "DCEP", "EW", "HADS_dScuti"])
def test_periods_recovered_quick(survey, label):
    obs, objs = survey
    assert _recovered(objs, obs, label, 4) >= 0.75


@pytest.mark.slow
@pytest.mark.parametrize("label", ["RRab", "RRc", "DCEP", "EA", "EW", "LPV", "HADS_dScuti", "Rot"])
def test_periods_recovered(label):
    obs, objs = simulate_survey(n_objects=40 * len(CLASSES), seed=11)
    assert _recovered(objs, obs, label, 40) >= 0.9
