"""Transactional ingest of validated observations (and catalogue rows) into a Store.

All-or-nothing: everything happens inside one DuckDB transaction, so a failure at any step leaves
the store exactly as it was. Idempotent: objects are keyed by (survey, object_id); a light curve
that is already stored is merged with the new one uniquely on time (stored values win), so
ingesting the same data twice adds nothing and the report says how much was already present.
"""

from __future__ import annotations

import time as _time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from lcdash.errors import ValidationError

REQUIRED = ("object_id", "band", "time", "mag")


@dataclass
class IngestReport:
    """What an ingest did (counts) and the validation report of the data it was given."""

    surveys: list[str] = field(default_factory=list)
    objects_new: int = 0
    objects_existing: int = 0
    lightcurves_new: int = 0
    lightcurves_merged: int = 0
    observations_new: int = 0
    observations_present: int = 0
    seconds: float = 0.0
    validation: object | None = None  # lcdash.io.ValidationReport when the data went through prepare()

    @property
    def objects(self) -> int:
        return self.objects_new + self.objects_existing

    @property
    def observations(self) -> int:
        return self.observations_new + self.observations_present

    def summary(self) -> str:
        rate = self.observations / self.seconds if self.seconds > 0 else float("nan")
        return (
            f"survey {', '.join(self.surveys)}: {self.objects_new:,} new object(s), "
            f"{self.objects_existing:,} already present; {self.observations_new:,} new observation(s), "
            f"{self.observations_present:,} already present ({self.lightcurves_new:,} new light curve(s), "
            f"{self.lightcurves_merged:,} merged) in {self.seconds:.2f} s ({rate:,.0f} obs/s)"
        )

    def __str__(self) -> str:
        return self.summary()


def _series_table(obs: pd.DataFrame) -> tuple[pa.Table, int]:
    """Long observations -> one arrow row per (object_id, band) with list columns.

    Checks the invariants `io.prepare` establishes (sorted by object, band, time; unique times;
    finite time and mag) and sorts when needed; duplicates are an error here because which value to
    keep is a validation decision (use lcdash.io.prepare).
    """
    missing = [c for c in REQUIRED if c not in obs.columns]
    if missing:
        raise ValidationError(
            f"observations: missing column(s) {', '.join(missing)} "
            f"(have {', '.join(map(str, obs.columns))}); use lcdash.io.prepare to map columns"
        )
    ids = (
        obs["object_id"]
        if isinstance(obs["object_id"].dtype, pd.CategoricalDtype)
        else obs["object_id"].astype("string").astype("category")
    )
    bands = (
        obs["band"]
        if isinstance(obs["band"].dtype, pd.CategoricalDtype)
        else obs["band"].astype("string").astype("category")
    )
    oc = ids.cat.codes.to_numpy().astype(np.int64)
    bc = bands.cat.codes.to_numpy().astype(np.int64)
    if (oc < 0).any() or (bc < 0).any():
        raise ValidationError("observations: missing object_id or band values")
    time = obs["time"].to_numpy(dtype=np.float64)
    mag = obs["mag"].to_numpy(dtype=np.float32)
    err = (
        obs["mag_err"].to_numpy(dtype=np.float32, na_value=np.nan)
        if "mag_err" in obs.columns
        else np.full(len(obs), np.nan, np.float32)
    )
    bad = np.flatnonzero(~np.isfinite(time) | ~np.isfinite(mag))
    if bad.size:
        raise ValidationError(
            f"observations: row {bad[0] + 1} has a missing time or magnitude "
            "(use lcdash.io.prepare to clean the data)"
        )
    key = oc * max(len(bands.cat.categories), 1) + bc
    if key.size > 1:
        in_order = np.all((key[1:] > key[:-1]) | ((key[1:] == key[:-1]) & (time[1:] >= time[:-1])))
        if not in_order:
            order = np.lexsort((time, key))
            key, oc, bc, time, mag, err = (a[order] for a in (key, oc, bc, time, mag, err))
        dup = np.flatnonzero((key[1:] == key[:-1]) & (time[1:] == time[:-1]))
        if dup.size:
            i = dup[0] + 1
            raise ValidationError(
                f"observations: object {ids.cat.categories[oc[i]]!r} "
                f"band {bands.cat.categories[bc[i]]!r} has "
                f"two rows at time {time[i]!r}; use lcdash.io.prepare to average or drop duplicates"
            )
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.zeros(0, np.int64)
    offsets = np.r_[starts, key.size].astype(np.int32)
    err_arr = pa.array(err, type=pa.float32(), from_pandas=True)  # NaN -> null
    table = pa.table(
        {
            "object_id": pa.array(np.asarray(ids.cat.categories, dtype=object)[oc[starts]], type=pa.string()),
            "band": pa.array(np.asarray(bands.cat.categories, dtype=object)[bc[starts]], type=pa.string()),
            "n_obs": pa.array(np.diff(offsets), type=pa.int32()),
            "time": pa.ListArray.from_arrays(pa.array(offsets), pa.array(time)),
            "mag": pa.ListArray.from_arrays(pa.array(offsets), pa.array(mag)),
            "mag_err": pa.ListArray.from_arrays(pa.array(offsets), err_arr),
        }
    )
    return table, int(key.size)


def _objects_table(
    series: pa.Table, objects: pd.DataFrame | None, survey: str | None, synthetic: bool
) -> pa.Table:
    """One row per object in `series`, with catalogue columns from `objects` where given, and the
    object's n_obs and sorted bands as far as this ingest knows them."""
    obj = np.asarray(series.column("object_id").to_pylist(), dtype=object)
    band = np.asarray(series.column("band").to_pylist(), dtype=object)
    n = series.column("n_obs").to_numpy()
    order = np.lexsort((band, obj))  # tens of thousands of rows: numpy, not a python groupby
    obj, band, n = obj[order], band[order], n[order]
    starts = np.flatnonzero(np.r_[True, obj[1:] != obj[:-1]]) if obj.size else np.zeros(0, np.int64)
    base = pd.DataFrame({"object_id": obj[starts].astype(str)})
    base["n_obs"] = np.add.reduceat(n, starts).astype(np.int32) if obj.size else np.zeros(0, np.int32)
    base["bands"] = [b.tolist() for b in np.split(band, starts[1:])] if obj.size else []
    if objects is not None and len(objects):
        if "object_id" not in objects.columns:
            raise ValidationError("objects table: no object_id column (use lcdash.io.prepare to map columns)")
        keep = [
            c for c in ("object_id", "label", "period", "ra", "dec", "survey", "meta") if c in objects.columns
        ]
        cat = objects[keep].copy()
        cat["object_id"] = cat["object_id"].astype(str)
        if cat["object_id"].duplicated().any():
            dup = cat.loc[cat["object_id"].duplicated(), "object_id"].iloc[0]
            raise ValidationError(f"objects table: object id {dup!r} appears more than once")
        base = base.merge(cat, on="object_id", how="left")
    for c in ("label", "survey", "meta"):
        if c not in base.columns:
            base[c] = None
    for c in ("period", "ra", "dec"):
        base[c] = pd.to_numeric(base[c], errors="coerce") if c in base.columns else np.nan
    surv = base["survey"].astype(object).where(base["survey"].notna(), survey)
    if surv.isna().any():
        raise ValidationError(
            f"object {base.loc[surv.isna(), 'object_id'].iloc[0]!r}: no survey name; "
            "give one (--survey NAME) or a survey column in the objects table"
        )

    def strings(values):
        return pa.array(
            [
                None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v)
                for v in values
            ],
            type=pa.string(),
        )

    return pa.table(
        {
            "object_id": pa.array(base["object_id"].tolist(), type=pa.string()),
            "survey": strings(surv.tolist()),
            "label": strings(base["label"].astype(object).tolist()),
            "period": pa.array(base["period"].to_numpy(dtype=float), from_pandas=True),
            "ra": pa.array(base["ra"].to_numpy(dtype=float), from_pandas=True),
            "dec": pa.array(base["dec"].to_numpy(dtype=float), from_pandas=True),
            "meta": strings(base["meta"].astype(object).tolist()),
            "synthetic": pa.array(np.full(len(base), bool(synthetic))),
            "n_obs": pa.array(base["n_obs"].to_numpy(), type=pa.int32()),
            "bands": pa.array(base["bands"].tolist(), type=pa.list_(pa.string())),
        }
    )


def _step(progress, i, total, message):
    if progress is not None:
        progress(i, total, message)


def ingest(
    store,
    observations: pd.DataFrame,
    objects: pd.DataFrame | None = None,
    survey: str | None = None,
    *,
    synthetic: bool = False,
    validation=None,
    progress=None,
    cursor=None,
) -> IngestReport:
    """Write observations (long: object_id, band, time, mag[, mag_err]) and catalogue rows.

    `objects` (object_id[, label, period, ra, dec, survey, meta]) supplies catalogue columns; an
    object's survey comes from its `survey` column, else from `survey`. Existing objects keep their
    oid; catalogue values given here replace stored ones (NULLs do not erase). Raises
    ValidationError for data that breaks the store's invariants; any exception rolls back.
    `cursor`: a transaction the caller holds (`with store.transaction() as cur`), so that several
    ingests commit or roll back together (`lcdash ingest DS1 DS2`).
    """
    t0 = _time.perf_counter()
    if validation is not None and not validation.ok:
        validation.raise_if_errors()
    total = 5
    _step(progress, 0, total, "grouping light curves")
    series, n_rows = _series_table(observations)
    objs = _objects_table(series, objects, survey, synthetic)
    report = _write(store, series, n_rows, objs, objects is not None, validation, progress, cursor)
    _step(progress, total, total, "done")
    report.seconds = _time.perf_counter() - t0
    return report


def _write(store, series: pa.Table, n_rows: int, objs: pa.Table, catalogue: bool, validation=None,
           progress=None, cursor=None, undo=None) -> IngestReport:
    """Write light curves (`_series_table`, object ids unique) and their objects (`_objects_table`).
    `lcdash.store.ingest_dataset` hands it several partitions at once: DuckDB writes an INSERT of a
    full row group (122,880 rows) straight to the file, smaller ones stay in memory until COMMIT.
    `undo`: the `lcdash.store.undo.UndoLog` of an ingest in several transactions, which saves the
    stored rows this one changes before it changes them."""
    total = 5
    report = IngestReport(surveys=sorted(set(objs.column("survey").to_pylist())), validation=validation)
    with _transaction(store, cursor) as cur:
        cur.register("_in_obj", objs)
        _step(progress, 1, total, "writing objects")
        existing = cur.sql(
            "SELECT o.oid FROM _in_obj i JOIN objects o USING (survey, object_id)"
        ).to_arrow_table()
        cur.register("_touched", existing)
        report.objects_existing = existing.num_rows
        report.objects_new = objs.num_rows - existing.num_rows
        if undo is not None and existing.num_rows:
            undo.save_objects(cur, "_touched")
        # new objects go in with their final counts; existing ones are recounted after the merge
        cur.execute("""
            INSERT INTO objects
                (oid, object_id, survey, label, ra, dec, period, n_obs, bands, synthetic, meta)
            SELECT nextval('oid_seq'), i.object_id, i.survey, i.label, i.ra, i.dec, i.period, i.n_obs,
                   i.bands, i.synthetic, i.meta::JSON
            FROM _in_obj i ANTI JOIN objects o USING (survey, object_id)
            ORDER BY i.object_id""")
        if catalogue and existing.num_rows:
            cur.execute("""
                UPDATE objects SET label = coalesce(i.label, objects.label),
                                   ra = coalesce(i.ra, objects.ra), dec = coalesce(i.dec, objects.dec),
                                   period = coalesce(i.period, objects.period),
                                   meta = coalesce(i.meta::JSON, objects.meta)
                FROM _in_obj i
                WHERE objects.survey = i.survey AND objects.object_id = i.object_id
                  AND objects.oid IN (SELECT oid FROM _touched)""")
        _step(progress, 2, total, "writing light curves")
        # each light curve's oid (object ids are unique within one ingest) and whether it is stored
        ids = cur.sql(
            "SELECT i.object_id, o.oid FROM _in_obj i JOIN objects o USING (survey, object_id)"
        ).to_arrow_table()
        lookup = pd.Index(ids.column("object_id").to_pandas())
        oid = ids.column("oid").to_numpy()[lookup.get_indexer(series.column("object_id").to_pandas())]
        present = np.zeros(series.num_rows, bool)
        if existing.num_rows:
            stored = (
                cur.sql("SELECT oid, band FROM lightcurves WHERE oid IN (SELECT oid FROM _touched)")
                .to_arrow_table()
                .to_pandas()
            )
            stored_keys = pd.MultiIndex.from_frame(stored)
            mine = pd.MultiIndex.from_arrays([oid, series.column("band").to_pandas()])
            present = mine.isin(stored_keys)
        order = np.argsort(oid, kind="stable")  # insert in oid order: zone maps stay tight
        if np.any(order != np.arange(order.size)):
            series, oid, present = series.take(order), oid[order], present[order]
        n_obs = series.column("n_obs").to_numpy()
        series = series.append_column("oid", pa.array(oid, pa.int64())).append_column(
            "present", pa.array(present)
        )
        cur.register("_in_lc", series)
        report.lightcurves_merged = int(present.sum())
        report.lightcurves_new = int(present.size - report.lightcurves_merged)
        cur.execute(
            "INSERT INTO lightcurves SELECT oid, band, n_obs, time, mag, mag_err FROM _in_lc "
            "WHERE NOT present"
        )
        if undo is not None and existing.num_rows:
            undo.note_added(cur, "(SELECT oid, band FROM _in_lc WHERE NOT present)")
        added_merged = 0
        if report.lightcurves_merged:
            _step(progress, 3, total, "merging with stored light curves")
            # stored values win on equal times; new times are added; lists stay sorted and unique
            cur.execute("""
                CREATE TEMP TABLE _merged AS
                WITH old AS (
                    SELECT l.oid, l.band, unnest(l.time) AS time, unnest(l.mag) AS mag,
                           unnest(l.mag_err) AS mag_err, 0 AS src
                    FROM lightcurves l
                    SEMI JOIN _in_lc k ON k.oid = l.oid AND k.band = l.band AND k.present),
                new AS (
                    SELECT oid, band, unnest(time) AS time, unnest(mag) AS mag,
                           unnest(mag_err) AS mag_err, 1 AS src
                    FROM _in_lc WHERE present),
                both_ AS (
                    SELECT * FROM (SELECT * FROM old UNION ALL SELECT * FROM new)
                    QUALIFY row_number() OVER (PARTITION BY oid, band, time ORDER BY src) = 1)
                SELECT oid, band, count(*)::INTEGER AS n_obs, list(time ORDER BY time) AS time,
                       list(mag ORDER BY time) AS mag, list(mag_err ORDER BY time) AS mag_err,
                       count(*) FILTER (WHERE src = 1) AS added
                FROM both_ GROUP BY oid, band""")
            added_merged = cur.execute("SELECT coalesce(sum(added), 0) FROM _merged").fetchall()[0][0]
            if undo is not None and added_merged:
                undo.save_lightcurves(cur, "(SELECT oid, band FROM _merged WHERE added > 0)")
            cur.execute("""
                UPDATE lightcurves SET n_obs = m.n_obs, time = m.time, mag = m.mag, mag_err = m.mag_err
                FROM _merged m WHERE lightcurves.oid = m.oid AND lightcurves.band = m.band
                  AND m.added > 0""")
            cur.execute("DROP TABLE _merged")
        report.observations_new = int(n_obs[~present].sum() + added_merged)
        report.observations_present = int(n_rows - report.observations_new)
        _step(progress, 4, total, "updating object counts")
        _update_object_counts(cur)
        for name in ("_in_obj", "_touched", "_in_lc"):
            cur.unregister(name)
    return report


@contextmanager
def _transaction(store, cursor):
    """The caller's open transaction, or a new one."""
    if cursor is not None:
        yield cursor
    else:
        with store.transaction() as cur:
            yield cur


def _update_object_counts(cur) -> None:
    """Recount objects.n_obs / bands of the objects that existed before this ingest (`_touched`)."""
    cur.execute("""
        UPDATE objects SET n_obs = s.n_obs, bands = s.bands
        FROM (SELECT l.oid, sum(l.n_obs)::INTEGER AS n_obs, list(l.band ORDER BY l.band) AS bands
              FROM lightcurves l WHERE l.oid IN (SELECT oid FROM _touched) GROUP BY l.oid) s
        WHERE objects.oid = s.oid""")
