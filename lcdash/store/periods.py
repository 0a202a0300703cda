"""Periods found from the light curves (`lcdash.periods`), kept per (oid, band) beside the catalogue's.

Written once by `lcdash periods` (or the Data page's job, or an embed that needed them) and read by
every fold: the folded encoders, the folded RNN / CNN inputs and the viewer, instead of one
periodogram per call. Only periods of the current finder version count as found.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


def save_periods(store, frame: pd.DataFrame, finder: str) -> int:
    """Write found periods (`lcdash.periods.results_frame`: oid, band, period, score, n_harmonics,
    reason, candidates) in one transaction, replacing rows with the same keys. Returns the rows."""
    cols = ["oid", "band", "period", "score", "n_harmonics", "reason", "candidates"]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"a periods table needs the columns {', '.join(missing)}")
    table = pa.Table.from_pandas(frame[cols], preserve_index=False)
    with store.transaction() as cur:
        cur.register("_periods", table)
        cur.execute(
            # n_obs: the light curve the period was found on; one that grows later counts as missing
            "INSERT OR REPLACE INTO periods (oid, band, period, score, n_harmonics, reason, candidates, "
            "finder, n_obs) SELECT p.oid, p.band, CASE WHEN isfinite(p.period) THEN p.period END, "
            "p.score, p.n_harmonics, p.reason, p.candidates, ?, l.n_obs FROM _periods p "
            "JOIN lightcurves l ON l.oid = p.oid AND l.band = p.band",
            [finder],
        )
        cur.unregister("_periods")
    return len(frame)


def read_periods(store, oids=None, band: str | None = None, finder: str | None = None) -> pd.DataFrame:
    """Stored periods: columns oid, band, period, score, n_harmonics, reason, candidates, finder,
    n_obs, computed_at; only `finder`'s when given, and then only those of light curves that have not
    changed since (same n_obs); only `oids` / `band` when given; ordered by oid, band."""
    where, params = [], []
    if band is not None:
        where.append("p.band = ?")
        params.append(band)
    if finder is not None:
        where.append("p.finder = ?")
        params.append(finder)
        where.append("p.n_obs = (SELECT l.n_obs FROM lightcurves l WHERE l.oid = p.oid AND l.band = p.band)")
    cur = store.cursor()
    try:
        if oids is not None:
            cur.register("_oids", pa.table({"oid": np.asarray(list(oids), dtype=np.int64)}))
            where.append("p.oid IN (SELECT oid FROM _oids)")
        sql = "SELECT p.* FROM periods p" + (" WHERE " + " AND ".join(where) if where else "")
        return cur.execute(sql + " ORDER BY p.oid, p.band", params).df()
    finally:
        cur.close()


def _light_curves_and_periods(store, select: str, finder: str, survey, band, fetch, where=(), tail: str = ""):
    """fetch(result of `select`) over every light curve (of `survey`, in `band` when given) LEFT
    JOINed to its current period of `finder` (same n_obs), as p; l is the light curve, o its object."""
    where, params = list(where) or ["true"], [finder]
    if survey is not None:
        where.append("o.survey = ?")
        params.append(survey)
    if band is not None:
        where.append("l.band = ?")
        params.append(band)
    cur = store.cursor()
    try:
        return fetch(
            cur.execute(
                f"SELECT {select} FROM lightcurves l JOIN objects o USING (oid) "
                "LEFT JOIN periods p ON p.oid = l.oid AND p.band = l.band AND p.finder = ? "
                f"AND p.n_obs = l.n_obs WHERE {' AND '.join(where)} {tail}",
                params,
            )
        )
    finally:
        cur.close()


def missing_periods(
    store, finder: str, survey: str | None = None, band: str | None = None, every: bool = False
) -> pd.DataFrame:
    """(oid, band) light curves without a period of `finder` (all of them when `every`), of `survey`
    and in `band` when given, ordered by band then oid."""
    where = [] if every else ["p.oid IS NULL"]
    return _light_curves_and_periods(
        store, "l.oid, l.band", finder, survey, band, lambda r: r.df(), where, "ORDER BY l.band, l.oid"
    )


def period_counts(store, finder: str, survey: str | None = None, band: str | None = None) -> dict:
    """How many light curves (of `survey`, in `band` when given) the store has ("light_curves"),
    how many have a stored result of `finder` ("stored") and how many of those a period ("found")."""
    select = "count(*), count(p.oid), count(p.period)"
    n, stored, found = _light_curves_and_periods(store, select, finder, survey, band, lambda r: r.fetchone())
    return {"light_curves": int(n), "stored": int(stored), "found": int(found)}
