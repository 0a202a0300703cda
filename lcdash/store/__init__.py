"""The light-curve store: one DuckDB file holding objects, light curves and everything derived.

`Store` owns one DuckDB connection; every method takes its own `cursor()` so Streamlit's threads
can share one Store. DuckDB allows one read-write process per file (or many read-only ones), so
background workers never open the store: they get their data as a `LightCurveBatch` npz
(`export_batch`).

Light curves are stored one row per (oid, band) with LIST columns (see schema.OBSERVATIONS_DDL for
the measurement behind that choice); `observations` is a long-form view for SQL users.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from lcdash.errors import LcdashError
from lcdash.lightcurve import LightCurve, LightCurveBatch
from lcdash.store.ingest import ingest as ingest_frames  # `ingest` stays the submodule
from lcdash.store.schema import MIGRATIONS, SCHEMA_VERSION
from lcdash.store.sql import run_sql, stop_queries
from lcdash.store.undo import recover as recover_ingest

SMALL_BATCH = 256  # oids per IN list when read_batch looks them up through the oid index
INDEX_READ_MAX = 8192  # up to this many oids read_batch uses the index (IN lists), above a hash join


def default_memory_limit() -> str:
    """DuckDB's memory limit for a store: $LCDASH_MEMORY_LIMIT (e.g. "2GB"), else a quarter of
    the machine's memory, at least 1 GB and at most 4 GB. Bounds any one query (the SQL box
    included) inside the app process; larger sorts and joins spill to <store>.tmp/."""
    env = os.environ.get("LCDASH_MEMORY_LIMIT", "").strip()
    if env:
        return env
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return f"{int(min(max(total // 4, 2**30), 4 * 2**30) // 2**20)}MB"


def duckdb_config(memory: str | None = None) -> dict:
    """Settings of every store connection. lcdash reads files with pyarrow / pandas and hands DuckDB
    Arrow tables, so DuckDB itself needs no file, URL or extension access: switching it off (and
    locking the configuration) is what keeps user SQL (the SQL box, `lcdash sql`) inside the store."""
    return {
        "enable_external_access": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "memory_limit": memory or default_memory_limit(),
        "lock_configuration": True,
    }


class Store:
    """A DuckDB file of light curves; see docs/DESIGN.md for the interface."""

    def __init__(self, path: str | Path, read_only: bool = False, memory_limit: str | None = None):
        self.path = str(path)
        self.read_only = read_only
        self.memory_limit = memory_limit or default_memory_limit()
        if self.path != ":memory:":
            p = Path(self.path)
            if read_only and not p.exists():
                raise LcdashError(f"{p}: no such store")
            p.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(self.path, read_only=read_only, config=duckdb_config(self.memory_limit))
        except duckdb.Error as exc:  # lock held by another process, not a DuckDB file, mixed modes
            hint = "; another process has it open (one writer or many readers)" if "lock" in str(exc) else ""
            first = " ".join(str(exc).split())
            raise LcdashError(f"{self.path}: cannot open the store: {first}{hint}") from exc
        self._lock = threading.Lock()  # serialises writers inside this process
        try:
            self._migrate()
            # a streamed ingest killed between its committed batches left an undo log: play it back
            recover_ingest(self)
        except BaseException:
            self.con.close()
            raise

    # -- connection ---------------------------------------------------------------------------

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor (its own DuckDB connection to the same database) for one call or thread."""
        return self.con.cursor()

    @contextmanager
    def transaction(self):
        """`with store.transaction() as cur:` BEGIN ... COMMIT, ROLLBACK on any exception."""
        if self.read_only:
            raise LcdashError(f"{self.path}: the store is open read-only")
        with self._lock:
            cur = self.cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                cur.close()
                raise
            cur.execute("COMMIT")
            cur.close()

    def close(self) -> None:
        """Close the connection, after any SQL-box query that outlived its bound has stopped; if one
        never stops, the connection is left for the process exit rather than failing as busy."""
        if stop_queries(self):
            self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.path!r}{', read_only=True' if self.read_only else ''})"

    # -- schema -------------------------------------------------------------------------------

    def schema_version(self) -> int:
        cur = self.cursor()
        try:
            has_meta = cur.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'meta' AND schema_name = 'main'"
            ).fetchall()[0][0]
            if not has_meta:
                return 0
            rows = cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
            return int(rows[0][0]) if rows else 0
        finally:
            cur.close()

    def _migrate(self) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise LcdashError(
                f"{self.path}: the store has schema version {version}, newer than this lcdash "
                f"({SCHEMA_VERSION}); upgrade lcdash"
            )
        if version == SCHEMA_VERSION:
            return
        if self.read_only:
            raise LcdashError(
                f"{self.path}: the store has schema version {version}, expected {SCHEMA_VERSION}; "
                "open it read-write once to migrate"
            )
        with self.transaction() as cur:
            for v in range(version + 1, SCHEMA_VERSION + 1):
                step = MIGRATIONS[v]
                if callable(step):
                    step(cur)
                else:
                    cur.execute(step)
            cur.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])

    # -- ingest -------------------------------------------------------------------------------

    def ingest(
        self,
        observations: pd.DataFrame,
        objects: pd.DataFrame | None = None,
        survey: str | None = None,
        *,
        synthetic: bool = False,
        validation=None,
        progress=None,
        cursor=None,
    ):
        """Add observations (+ catalogue rows) in one transaction (or the caller's, `cursor`); see
        `lcdash.store.ingest.ingest`."""
        return ingest_frames(
            self,
            observations,
            objects,
            survey,
            synthetic=synthetic,
            validation=validation,
            progress=progress,
            cursor=cursor,
        )

    # -- objects ------------------------------------------------------------------------------

    def objects(
        self,
        survey: str | Sequence[str] | None = None,
        label: str | Sequence[str] | None = None,
        period: tuple[float | None, float | None] | None = None,
        n_obs: tuple[int | None, int | None] | None = None,
        oids: Iterable[int] | None = None,
        band: str | None = None,
        synthetic: bool | None = None,
        labelled: bool | None = None,
        limit: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Objects matching every filter given, ordered by oid.

        survey/label: a value or a list; period/n_obs: (lo, hi), either end None for open; oids: a
        subset; band: objects observed in that band; labelled: only objects with (without) a label.
        """
        where, params = [], []

        def one_or_many(col, value):
            values = [value] if isinstance(value, str) else list(value)
            where.append(f"{col} IN ({', '.join('?' * len(values))})" if values else "false")
            params.extend(values)

        if survey is not None:
            one_or_many("survey", survey)
        if label is not None:
            one_or_many("label", label)
        for col, rng in (("period", period), ("n_obs", n_obs)):
            if rng is not None:
                lo, hi = rng
                if lo is not None:
                    where.append(f"{col} >= ?")
                    params.append(lo)
                if hi is not None:
                    where.append(f"{col} <= ?")
                    params.append(hi)
        if band is not None:
            where.append("list_contains(bands, ?)")
            params.append(band)
        if synthetic is not None:
            where.append("synthetic = ?")
            params.append(bool(synthetic))
        if labelled is not None:
            where.append("label IS NOT NULL" if labelled else "label IS NULL")
        cur = self.cursor()
        try:
            if oids is not None:
                cur.register("_oids", pa.table({"oid": np.asarray(list(oids), dtype=np.int64)}))
                where.append("oid IN (SELECT oid FROM _oids)")
            cols = ", ".join(columns) if columns else "*"
            sql = f"SELECT {cols} FROM objects"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY oid"
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
            return cur.execute(sql, params).df()
        finally:
            cur.close()

    def resolve(self, object_ids: Iterable[str], survey: str | None = None) -> np.ndarray:
        """The oids of user object ids (within one survey when given); unknown ids raise."""
        ids = [str(i) for i in object_ids]
        cur = self.cursor()
        try:
            cur.register("_ids", pa.table({"object_id": ids, "i": np.arange(len(ids))}))
            sql = "SELECT i, oid, survey FROM _ids JOIN objects USING (object_id)"
            params = []
            if survey is not None:
                sql += " WHERE survey = ?"
                params.append(survey)
            found = cur.execute(sql + " ORDER BY i", params).df()
        finally:
            cur.close()
        if found["i"].duplicated().any():
            dup = ids[int(found.loc[found["i"].duplicated(), "i"].iloc[0])]
            raise LcdashError(f"object id {dup!r} exists in several surveys; name the survey")
        if len(found) < len(ids):
            missing = sorted(set(range(len(ids))) - set(found["i"]))
            raise LcdashError(f"{len(missing)} object id(s) not in the store, e.g. {ids[missing[0]]!r}")
        return found["oid"].to_numpy(dtype=np.int64)

    def bands(self, oids: Iterable[int] | None = None) -> list[str]:
        cur = self.cursor()
        try:
            if oids is None:
                rows = cur.execute("SELECT DISTINCT band FROM lightcurves ORDER BY band").fetchall()
            else:
                cur.register("_oids", pa.table({"oid": np.asarray(list(oids), dtype=np.int64)}))
                rows = cur.execute(
                    "SELECT DISTINCT band FROM lightcurves WHERE oid IN (SELECT oid FROM _oids) ORDER BY band"
                ).fetchall()
            return [r[0] for r in rows]
        finally:
            cur.close()

    def surveys(self) -> list[str]:
        cur = self.cursor()
        try:
            return [
                r[0] for r in cur.execute("SELECT DISTINCT survey FROM objects ORDER BY survey").fetchall()
            ]
        finally:
            cur.close()

    def labels(self, survey: str | None = None) -> pd.Series:
        """Catalogue label counts (largest first)."""
        cur = self.cursor()
        try:
            sql = "SELECT label, count(*) AS n FROM objects WHERE label IS NOT NULL"
            params = []
            if survey is not None:
                sql += " AND survey = ?"
                params.append(survey)
            df = cur.execute(sql + " GROUP BY label ORDER BY n DESC, label", params).df()
        finally:
            cur.close()
        return pd.Series(df["n"].to_numpy(), index=df["label"].to_numpy(), name="n")

    def info(self) -> dict:
        """Counts of objects, light curves, observations, classes, bands and surveys."""
        cur = self.cursor()
        try:
            n_obj, n_lab, n_syn = cur.execute(
                "SELECT count(*), count(label), count(*) FILTER (WHERE synthetic) FROM objects"
            ).fetchall()[0]
            n_lc, n_obs = cur.execute("SELECT count(*), coalesce(sum(n_obs), 0) FROM lightcurves").fetchall()[
                0
            ]
            surveys = cur.execute(
                "SELECT survey, count(*) AS objects, count(label) AS labelled, sum(n_obs) AS observations, "
                "count(DISTINCT label) AS classes FROM objects GROUP BY survey ORDER BY survey"
            ).df()
            classes = cur.execute(
                "SELECT label, count(*) AS n FROM objects WHERE label IS NOT NULL "
                "GROUP BY label ORDER BY n DESC, label"
            ).fetchall()
            bands = cur.execute(
                "SELECT band, count(*) AS n, sum(n_obs) AS obs FROM lightcurves GROUP BY band ORDER BY band"
            ).fetchall()
        finally:
            cur.close()
        return {
            "path": self.path,
            "schema_version": SCHEMA_VERSION,
            "objects": int(n_obj),
            "labelled": int(n_lab),
            "synthetic": int(n_syn),
            "lightcurves": int(n_lc),
            "observations": int(n_obs),
            "classes": {k: int(v) for k, v in classes},
            "bands": {k: {"lightcurves": int(n), "observations": int(o)} for k, n, o in bands},
            "surveys": {
                r.survey: {
                    "objects": int(r.objects),
                    "labelled": int(r.labelled),
                    "observations": int(r.observations or 0),
                    "classes": int(r.classes),
                }
                for r in surveys.itertuples()
            },
        }

    # -- light curves -------------------------------------------------------------------------

    def lightcurve(self, oid: int):
        """All bands of one object as a `lcdash.lightcurve.LightCurve` (observations sorted by time)."""
        cur = self.cursor()
        try:
            obj = cur.execute(
                "SELECT object_id, survey, label, period, ra, dec FROM objects WHERE oid = ?", [int(oid)]
            ).fetchall()
            if not obj:
                raise LcdashError(f"no object with oid {oid} in the store")
            tb = cur.sql(
                f"SELECT band, n_obs, time, mag, mag_err FROM lightcurves WHERE oid = {int(oid)} "
                "ORDER BY band"
            ).to_arrow_table()
        finally:
            cur.close()
        n = tb.column("n_obs").to_numpy()
        band = np.repeat(np.asarray(tb.column("band").to_pylist(), dtype=object), n).astype(str)
        time = _flat(tb, "time", np.float64)
        mag = _flat(tb, "mag", np.float64)
        err = _flat(tb, "mag_err", np.float64)
        order = np.argsort(time, kind="stable")
        object_id, survey, label, period, ra, dec = obj[0]
        return LightCurve(
            time=time[order],
            mag=mag[order],
            mag_err=err[order],
            band=band[order],
            object_id=object_id,
            label=label,
            period=None if period is None else float(period),
            meta={"oid": int(oid), "survey": survey, "ra": ra, "dec": dec},
        )

    def read_batch(self, oids: Iterable[int], band: str | None = None) -> LightCurveBatch:
        """Light curves of `oids` (in that order) as a padded `LightCurveBatch`.

        band=None takes each object's first band (alphabetically); an oid without the band raises.
        """
        oids = np.asarray(list(oids) if not isinstance(oids, np.ndarray) else oids, dtype=np.int64)
        params = {} if band is None else {"band": band}
        cur = self.cursor()
        try:
            if 0 < SMALL_BATCH and oids.size <= INDEX_READ_MAX:
                # up to a few thousand objects: IN lists of SMALL_BATCH oids let DuckDB use the oid
                # index instead of a hash join that scans every light curve (one object 10 -> 4 ms of
                # CPU; 1,024 random objects of a million: 5.3 s -> see docs/results/million.md)
                uniq = np.unique(oids)
                parts = []
                for lo in range(0, max(uniq.size, 1), SMALL_BATCH):
                    wanted = ",".join(str(int(o)) for o in uniq[lo : lo + SMALL_BATCH]) or "NULL"
                    sql = (
                        "SELECT oid, band, n_obs, time, mag, mag_err FROM lightcurves "
                        f"WHERE oid IN ({wanted})"
                    )
                    if band is not None:
                        sql += " AND band = $band"
                    parts.append(cur.sql(sql + " ORDER BY oid, band", params=params).to_arrow_table())
                found = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
                found_oid = found.column("oid").to_numpy()
                first = (  # the first band of each oid
                    np.flatnonzero(np.r_[True, found_oid[1:] != found_oid[:-1]])
                    if found_oid.size
                    else np.zeros(0, np.int64)
                )
                pos = pd.Index(found_oid[first]).get_indexer(oids)
                pos = np.where(pos >= 0, first[np.maximum(pos, 0)], -1) if first.size else pos
                tb = found.take(pa.array(pos[pos >= 0], pa.int64())).append_column(
                    "i", pa.array(np.flatnonzero(pos >= 0), pa.int64())
                )
            else:
                cur.register("_req", pa.table({"i": np.arange(oids.size, dtype=np.int64), "oid": oids}))
                if band is None:  # objects.bands is sorted: [1] is the first band alphabetically
                    sql = (
                        "SELECT r.i, l.oid, l.band, l.n_obs, l.time, l.mag, l.mag_err FROM _req r "
                        "JOIN objects o ON o.oid = r.oid "
                        "JOIN lightcurves l ON l.oid = r.oid AND l.band = o.bands[1] "
                        "ORDER BY r.i"
                    )
                else:
                    sql = (
                        "SELECT r.i, l.oid, l.band, l.n_obs, l.time, l.mag, l.mag_err FROM _req r "
                        "JOIN lightcurves l ON l.oid = r.oid AND l.band = $band ORDER BY r.i"
                    )
                tb = cur.sql(sql, params=params).to_arrow_table()
        finally:
            cur.close()
        if tb.num_rows != oids.size:
            got = set(tb.column("i").to_numpy().tolist())
            missing = [int(oids[i]) for i in range(oids.size) if i not in got]
            what = f"band {band!r}" if band is not None else "light curves"
            raise LcdashError(
                f"{len(missing)} of {oids.size} object(s) have no {what} in the store (e.g. oid {missing[0]})"
            )
        n = tb.column("n_obs").to_numpy().astype(np.int32)
        return LightCurveBatch.from_flat(
            tb.column("oid").to_numpy(),
            tb.column("band").to_pylist(),
            n,
            _flat(tb, "time", np.float64),
            _flat(tb, "mag", np.float32),
            _flat(tb, "mag_err", np.float32),
        )

    def iter_batches(
        self, oids: Iterable[int], batch_size: int = 1024, band: str | None = None
    ) -> Iterator[LightCurveBatch]:
        oids = np.asarray(list(oids) if not isinstance(oids, np.ndarray) else oids, dtype=np.int64)
        for start in range(0, oids.size, batch_size):
            yield self.read_batch(oids[start : start + batch_size], band=band)

    def export_batch(self, oids: Iterable[int], band: str | None, path: str | Path) -> Path:
        """Write the light curves of `oids` as a LightCurveBatch npz for a worker process."""
        return self.read_batch(oids, band=band).save(path)

    # -- SQL ----------------------------------------------------------------------------------

    def sql(self, query: str, limit: int = 10_000, timeout_s: float = 10) -> pd.DataFrame:
        """Run one read-only SELECT in the sandbox (see `lcdash.store.sql.run_sql`)."""
        return run_sql(self, query, limit=limit, timeout_s=timeout_s)


def _flat(tb: pa.Table, col: str, dtype) -> np.ndarray:
    """The concatenated list elements of a list column (nulls -> NaN)."""
    arr = tb.column(col).combine_chunks() if tb.num_rows else pa.array([], pa.list_(pa.float64()))
    values = arr.flatten()
    return values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


__all__ = ["Store"]
