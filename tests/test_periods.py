"""The period finder (lcdash.periods) on hand-made curves whose period is known, its failure modes,
and the periods kept in the store (`lcdash periods`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lcdash import periods
from lcdash.periods import find_period, find_periods


def survey_times(rng, n_nights=120, per_night=4, baseline=2900.0):
    """Catalina-like cadence: nights spread over years, a few exposures 10 min apart each night, the
    hour of observation wandering through the season (what breaks the daily alias)."""
    nights = np.sort(rng.choice(np.arange(int(baseline)), n_nights, replace=False)).astype(float)
    hour = rng.uniform(-0.12, 0.12, n_nights)
    t = (nights + hour)[:, None] + np.arange(per_night)[None, :] * 0.007
    return t.ravel()


def eclipsing(t, period, depth1=0.8, depth2=0.4, width=0.05):
    """An eclipsing binary: flat out of eclipse, Gaussian minima of unequal depth half a cycle apart."""
    ph = np.mod(t / period, 1.0)
    d1 = np.minimum(np.abs(ph - 0.25), 1 - np.abs(ph - 0.25))
    d2 = np.minimum(np.abs(ph - 0.75), 1 - np.abs(ph - 0.75))
    return 15.0 + depth1 * np.exp(-0.5 * (d1 / width) ** 2) + depth2 * np.exp(-0.5 * (d2 / width) ** 2)


def rr_lyrae(t, period, amp=0.9):
    """A sawtooth RRab: fast rise (15% of the cycle) to maximum light, slow decline."""
    ph = np.mod(t / period, 1.0)
    rise = 0.15
    return 15.0 + amp * np.where(ph < rise, 1 - ph / rise, (ph - rise) / (1 - rise)) - amp / 2


def clean_fold(found, true, baseline):
    return abs(1 / found - 1 / true) * baseline < 0.1


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_sinusoid_refined_to_a_clean_fold(rng):
    t = survey_times(rng)
    m = 15 + 0.3 * np.sin(2 * np.pi * t / 3.1416) + rng.normal(0, 0.03, t.size)
    res = find_period(t, m, np.full(t.size, 0.03))
    assert res.found and res.period == pytest.approx(3.1416, rel=1e-4)
    assert clean_fold(res.period, 3.1416, np.ptp(t))
    assert res.candidates[0].period == res.period and res.candidates[0].delta_bic == 0
    assert all(c.delta_bic >= 0 for c in res.candidates)
    assert res.reason.startswith("LS peak") and res.delta_bic_constant > 100
    # the model drawn over the fold follows the data
    assert np.std(m - res.model(t)) < 0.04


def test_eclipsing_binary_with_unequal_minima_gets_the_orbital_period(rng):
    """Lomb-Scargle's strongest peak is at P/2 (two minima a cycle); the fit at 2P shows the halves differ."""
    t = survey_times(rng)
    m = eclipsing(t, 0.8123) + rng.normal(0, 0.03, t.size)
    res = find_period(t, m)
    assert res.period == pytest.approx(0.8123, rel=1e-4), res.reason
    assert res.reason.startswith("2 x LS peak")
    assert clean_fold(res.period, 0.8123, np.ptp(t))


def test_contact_binary_with_equal_minima_is_doubled_by_its_shape(rng):
    """Equal minima: the halves do not differ, but a symmetric fold with minima sharper than maxima
    is one half-orbit of a binary (W UMa light curves: a cosine series, Rucinski 1993)."""
    t = survey_times(rng)
    ph = 2 * np.pi * t / 0.3712
    m = 15 + 0.25 * np.cos(2 * ph) + 0.06 * np.cos(4 * ph) + rng.normal(0, 0.02, t.size)
    res = find_period(t, m)
    assert res.period == pytest.approx(0.3712, rel=1e-4), res.reason
    assert "binary" in res.reason


def test_rr_lyrae_sawtooth_is_not_doubled(rng):
    t = survey_times(rng)
    m = rr_lyrae(t, 0.5617) + rng.normal(0, 0.04, t.size)
    res = find_period(t, m)
    assert res.period == pytest.approx(0.5617, rel=1e-4), res.reason
    assert clean_fold(res.period, 0.5617, np.ptp(t))


def test_daily_cadence_alias_is_not_taken(rng):
    """One visit a night at a wandering hour: f and f +- 1/day fit almost alike; the finder keeps the
    true one, and the aliases are among its candidates."""
    nights = np.sort(rng.choice(np.arange(1500), 200, replace=False)).astype(float)
    t = nights + rng.uniform(-0.15, 0.15, nights.size)
    m = 15 + 0.4 * np.sin(2 * np.pi * t / 0.6) + rng.normal(0, 0.05, t.size)
    res = find_period(t, m)
    assert res.period == pytest.approx(0.6, rel=1e-3), res.reason
    alias = 1 / (1 / 0.6 - 1)  # 1.5 d
    assert any(abs(c.period / alias - 1) < 0.01 for c in res.candidates)


@pytest.mark.parametrize(
    "make, why",
    [
        (lambda r: (np.sort(r.uniform(0, 100, 6)), r.normal(15, 0.1, 6)), "too few observations"),
        (lambda r: (np.sort(r.uniform(0, 100, 80)), np.full(80, 15.0)), "constant magnitudes"),
        (lambda r: (np.full(30, np.nan), r.normal(15, 0.1, 30)), "too few observations"),
        (lambda r: (np.linspace(0, 0.05, 40), r.normal(15, 0.1, 40)), "too short"),
    ],
)
def test_no_period_is_a_result_not_an_exception(rng, make, why):
    t, m = make(rng)
    res = find_period(t, m)
    assert not res.found and np.isnan(res.period) and why in res.reason
    with pytest.raises(ValueError, match="no period model"):
        res.model(t)


def test_nan_times_and_magnitudes_are_dropped(rng):
    t = survey_times(rng)
    m = 15 + 0.3 * np.sin(2 * np.pi * t / 2.5) + rng.normal(0, 0.03, t.size)
    t[::17] = np.nan
    m[5::23] = np.nan
    res = find_period(t, m, np.full(t.size, np.nan))  # no errors at all: equal weights
    assert res.period == pytest.approx(2.5, rel=1e-4)


def test_batch_matches_single_curves_and_reports_progress(rng):
    curves = []
    for p in (0.31, 0.74, 5.3):
        t = survey_times(rng, n_nights=80)
        curves.append((t, 15 + 0.3 * np.sin(2 * np.pi * t / p) + rng.normal(0, 0.02, t.size)))
    curves.append((np.arange(3.0), np.zeros(3)))
    seen = []
    res = find_periods(curves, n_jobs=2, progress=lambda done, total: seen.append((done, total)))
    np.testing.assert_allclose([r.period for r in res[:3]], [0.31, 0.74, 5.3], rtol=1e-3)
    assert not res[3].found and seen[-1] == (4, 4)
    assert [r.period for r in res[:3]] == [find_period(*c).period for c in curves[:3]]
    np.testing.assert_array_equal(periods.best_periods(curves)[:3], [r.period for r in res[:3]])


def test_a_light_curve_batch_is_accepted(rng):
    from lcdash.lightcurve import LightCurveBatch

    t = survey_times(rng, n_nights=60)
    m = 15 + 0.3 * np.sin(2 * np.pi * t / 1.7) + rng.normal(0, 0.02, t.size)
    batch = LightCurveBatch.from_arrays([t, t[:50]], [m, m[:50]], [np.full(t.size, 0.02), np.full(50, 0.02)])
    res = find_periods(batch)
    assert res[0].period == pytest.approx(1.7, rel=1e-4)


# ------------------------------------------------------------------ in the store
def test_lcdash_periods_stores_every_curve_beside_the_catalogue(tmp_path, demo_db, capsys):
    import shutil

    from lcdash.cli import main
    from lcdash.store import Store

    db = tmp_path / "s.duckdb"
    shutil.copy(demo_db, db)
    out = tmp_path / "p.parquet"
    assert main(["periods", "--db", str(db), "--out", str(out)]) == 0
    assert "found and stored" in capsys.readouterr().out
    with Store(db, read_only=True) as s:
        n_curves = s.sql("SELECT count(*) AS n FROM lightcurves")["n"].iloc[0]
        both = s.sql(
            "SELECT o.label, o.period AS catalogue, p.period AS found, p.finder FROM periods p "
            "JOIN objects o USING (oid)"
        )
    assert len(both) == n_curves and set(both["finder"]) == {periods.FINDER_VERSION}
    periodic = both.dropna(subset=["catalogue"])
    right = np.abs(periodic["found"] / periodic["catalogue"] - 1) < 0.01
    assert right.mean() > 0.7  # the simulated survey: real classes' shapes, known periods
    table = pd.read_parquet(out)
    assert {"object_id", "band", "period", "catalogue_period", "reason"} <= set(table.columns)
    assert len(table) == n_curves
    # a second run finds nothing to do; the catalogue period was never touched
    assert main(["periods", "--db", str(db)]) == 0
    assert "already has a period" in capsys.readouterr().out
    with Store(db, read_only=True) as s, Store(demo_db, read_only=True) as orig:
        a = s.objects(columns=["oid", "period"])
        b = orig.objects(columns=["oid", "period"])
        pd.testing.assert_frame_equal(a, b)


def test_lcdash_periods_refuses_unknown_survey_and_band(tmp_path, demo_db, capsys):
    import shutil

    from lcdash.cli import main

    db = tmp_path / "s.duckdb"
    shutil.copy(demo_db, db)
    assert main(["periods", "--db", str(db), "--band", "nope"]) == 1
    assert "no band 'nope'" in capsys.readouterr().err
    assert main(["periods", "--db", str(tmp_path / "missing.duckdb")]) == 1


def test_folds_read_stored_periods_instead_of_finding_them(tmp_path, demo_db, monkeypatch):
    import shutil

    from lcdash.periods import fold_periods_of
    from lcdash.store import Store

    db = tmp_path / "s.duckdb"
    shutil.copy(demo_db, db)
    with Store(db) as s:
        oids = s.objects(columns=["oid"])["oid"].to_numpy()[:20]
        band = s.bands()[0]
        first = fold_periods_of(s, oids, band, "found")  # found and stored
        assert np.isfinite(first).all()

        def boom(*a, **k):
            raise AssertionError("the finder ran although the periods are stored")

        monkeypatch.setattr(periods, "find_periods", boom)
        np.testing.assert_array_equal(fold_periods_of(s, oids, band, "found"), first)
        cat = fold_periods_of(s, oids, band, "catalogue")
        given = s.objects(oids=oids, columns=["period"])["period"].to_numpy()
        has = np.isfinite(given)
        np.testing.assert_array_equal(cat[has], given[has])
        np.testing.assert_array_equal(cat[~has], first[~has])


def test_worker_processes_give_the_same_answers_as_one_process(rng, monkeypatch):
    """Above POOL_MIN_CURVES the decisions run in joblib's worker processes: same results, in order."""
    monkeypatch.setattr(periods, "POOL_MIN_CURVES", 40)
    curves = []
    for p in rng.uniform(0.2, 20, 60):
        t = survey_times(rng, n_nights=40)
        curves.append((t, 15 + 0.3 * np.sin(2 * np.pi * t / p) + rng.normal(0, 0.02, t.size)))
    curves.insert(7, (np.arange(3.0), np.zeros(3)))
    seen = []
    pooled = find_periods(curves, n_jobs=2, progress=lambda d, t: seen.append(d))
    serial = find_periods(curves, n_jobs=1)
    assert [r.period for r in pooled] == pytest.approx([r.period for r in serial], nan_ok=True)
    assert [r.reason for r in pooled] == [r.reason for r in serial]
    assert seen[-1] == len(curves)


def test_a_light_curve_that_grew_gets_its_period_found_again(tmp_path, demo_db):
    """A stored period belongs to the observations it was found on: new observations (a merge
    ingest, `lcdash update`) make it missing, so folds and `lcdash periods` find it again."""
    import shutil

    from lcdash.store import Store
    from lcdash.store.periods import missing_periods, read_periods

    db = tmp_path / "s.duckdb"
    shutil.copy(demo_db, db)
    with Store(db) as s:
        periods.store_periods(s)
        assert len(missing_periods(s, periods.FINDER_VERSION)) == 0
        oid, band = s.objects(columns=["oid"])["oid"].iloc[3], s.bands()[0]
        with s.transaction() as cur:  # one more observation at the end of the light curve
            cur.execute(
                "UPDATE lightcurves SET time = list_append(time, list_last(time) + 1), "
                "mag = list_append(mag, mag[1]), mag_err = list_append(mag_err, mag_err[1]), "
                "n_obs = n_obs + 1 WHERE oid = ? AND band = ?",
                [int(oid), band],
            )
        todo = missing_periods(s, periods.FINDER_VERSION)
        assert todo[["oid", "band"]].values.tolist() == [[oid, band]]
        assert int(oid) not in read_periods(s, finder=periods.FINDER_VERSION)["oid"].tolist()
        assert periods.store_periods(s)["light_curves"] == 1
        assert len(missing_periods(s, periods.FINDER_VERSION)) == 0
