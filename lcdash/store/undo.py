"""The undo log of an ingest that commits in several transactions (`lcdash.store.ingest_dataset`).

A streamed ingest above COMMIT_ROWS observations commits a batch at a time (DuckDB holds what a
transaction wrote in memory until COMMIT), so a process killed between two batches (kill -9, SIGTERM,
SIGHUP, a power cut) leaves the batches it committed. To keep the ingest all-or-nothing anyway, its
first transaction writes a marker (`meta` key MARKER: the largest oid before the ingest) and two undo
tables, and each batch's transaction saves, before changing them, the stored rows it is about to change:

- `_ingest_undo_objects`: the rows of objects that existed before the ingest (catalogue values and
  counts change when new observations merge into them);
- `_ingest_undo_lightcurves`: the light curves of those objects that gained observations
  (`existed`), and the (oid, band) keys of the light curves added to them (not `existed`).

Objects above the marker's oid are the ingest's own. The last transaction drops the log and the marker
(`finish`). `undo` puts the store back as it was, in one transaction: on a failure in the same process,
and when the store is next opened read-write after the process died (`recover`, from `Store`). An
identical re-ingest changes no light curve, so it saves only object rows; saving costs the size of what
the ingest changes.
"""

from __future__ import annotations

import json
import os
import time
import uuid

from lcdash.errors import LcdashError

MARKER = "ingest_in_progress"
OBJECTS = "_ingest_undo_objects"
LIGHTCURVES = "_ingest_undo_lightcurves"
#: Objects' columns that an ingest changes on objects already stored (oid, survey, object_id and
#: synthetic never change).
OBJECT_COLUMNS = ("label", "ra", "dec", "period", "n_obs", "bands", "meta")

_ACTIVE: set[str] = set()  # tokens of the ingests running in this process (a second Store of the
# same file in this process must not undo them)


class UndoLog:
    """The undo log of one running ingest: `before`, the largest oid before it."""

    def __init__(self, token: str, before: int):
        self.token = token
        self.before = int(before)

    def save_objects(self, cur, touched: str) -> None:
        """Save the stored rows of the objects whose oids are in the registered relation `touched`
        (objects that existed before this ingest and that it is about to change), once each."""
        cur.execute(
            f"""
            INSERT INTO {OBJECTS}
            SELECT o.* FROM objects o
            WHERE o.oid IN (SELECT oid FROM {touched}) AND o.oid <= ?
              AND o.oid NOT IN (SELECT oid FROM {OBJECTS})""",
            [self.before],
        )

    def save_lightcurves(self, cur, changed: str) -> None:
        """Save the stored light curves of the (oid, band) rows of `changed` before an UPDATE."""
        cur.execute(
            f"""
            INSERT INTO {LIGHTCURVES}
            SELECT l.oid, l.band, true, l.n_obs, l.time, l.mag, l.mag_err FROM lightcurves l
            SEMI JOIN {changed} c ON c.oid = l.oid AND c.band = l.band
            WHERE l.oid <= ?
              AND NOT EXISTS (SELECT 1 FROM {LIGHTCURVES} u WHERE u.oid = l.oid AND u.band = l.band)""",
            [self.before],
        )

    def note_added(self, cur, added: str) -> None:
        """Note the (oid, band) rows of `added` (new light curves) that belong to objects stored before."""
        cur.execute(
            f"""
            INSERT INTO {LIGHTCURVES} (oid, band, existed)
            SELECT DISTINCT a.oid, a.band, false FROM {added} a
            WHERE a.oid <= ?
              AND NOT EXISTS (SELECT 1 FROM {LIGHTCURVES} u WHERE u.oid = a.oid AND u.band = a.band)""",
            [self.before],
        )


def begin(store, source: str = "") -> UndoLog:
    """Commit the marker and empty undo tables; the ingest's batches follow in their own transactions."""
    token = uuid.uuid4().hex
    with store.transaction() as cur:
        if cur.execute("SELECT count(*) FROM meta WHERE key = ?", [MARKER]).fetchall()[0][0]:
            raise LcdashError(f"{store.path}: another ingest into this store is running")
        before = cur.execute("SELECT coalesce(max(oid), 0) FROM objects").fetchall()[0][0]
        cur.execute(f"DROP TABLE IF EXISTS {OBJECTS}")
        cur.execute(f"DROP TABLE IF EXISTS {LIGHTCURVES}")
        cur.execute(f"CREATE TABLE {OBJECTS} AS SELECT * FROM objects LIMIT 0")
        cur.execute(
            f"CREATE TABLE {LIGHTCURVES} AS SELECT oid, band, true AS existed, n_obs, time, mag, "
            "mag_err FROM lightcurves LIMIT 0"
        )
        marker = {
            "token": token,
            "before": int(before),
            "pid": os.getpid(),
            "source": str(source),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        cur.execute("INSERT INTO meta VALUES (?, ?)", [MARKER, json.dumps(marker)])
    _ACTIVE.add(token)
    return UndoLog(token, before)


def finish(store, log: UndoLog) -> None:
    """Publish the ingest: drop its undo log and marker in one transaction."""
    with store.transaction() as cur:
        _drop(cur)
    _ACTIVE.discard(log.token)


def undo(store, log: UndoLog | None = None) -> dict:
    """Put the store back as it was before the ingest of the marker, in one transaction; returns the
    marker. `log`: the running ingest of this process (else the marker is read)."""
    with store.transaction() as cur:
        marker = _marker(cur)
        if marker is None:
            return {}
        before = int(marker["before"]) if log is None else log.before
        cur.execute("DELETE FROM lightcurves WHERE oid > ?", [before])
        cur.execute("DELETE FROM objects WHERE oid > ?", [before])
        if _has(cur, LIGHTCURVES):
            cur.execute(f"""
                UPDATE lightcurves SET n_obs = u.n_obs, time = u.time, mag = u.mag, mag_err = u.mag_err
                FROM {LIGHTCURVES} u
                WHERE u.existed AND lightcurves.oid = u.oid AND lightcurves.band = u.band""")
            cur.execute(f"""
                DELETE FROM lightcurves WHERE (oid, band) IN
                    (SELECT (oid, band) FROM {LIGHTCURVES} WHERE NOT existed)""")
        if _has(cur, OBJECTS):
            sets = ", ".join(f"{c} = u.{c}" for c in OBJECT_COLUMNS)
            cur.execute(f"UPDATE objects SET {sets} FROM {OBJECTS} u WHERE objects.oid = u.oid")
        _drop(cur)
    if log is not None:
        _ACTIVE.discard(log.token)
    return marker


def recover(store) -> dict:
    """On opening a store: undo an ingest that a dead process left half done (its marker is there and
    its token is not one of this process's running ingests). Returns the marker undone, or {}. A store
    opened read-only cannot be put back: it is refused, with what to do."""
    cur = store.cursor()
    try:
        if not _has(cur, "meta"):
            return {}
        marker = _marker(cur)
    finally:
        cur.close()
    if marker is None or marker.get("token") in _ACTIVE:
        return {}
    if store.read_only:
        raise LcdashError(
            f"{store.path}: an ingest into this store was interrupted ({_what(marker)}); open it read-write "
            "once (e.g. `lcdash info --db ...`) to undo it"
        )
    return undo(store)


def pending(store) -> dict | None:
    """The marker of an ingest in progress (or interrupted), else None."""
    cur = store.cursor()
    try:
        return _marker(cur)
    finally:
        cur.close()


def _what(marker: dict) -> str:
    src = f" of {marker['source']}" if marker.get("source") else ""
    return f"ingest{src} started {marker.get('started', '?')} by process {marker.get('pid', '?')}"


def _marker(cur) -> dict | None:
    row = cur.execute("SELECT value FROM meta WHERE key = ?", [MARKER]).fetchone()
    if row is None:
        return None
    try:
        marker = json.loads(row[0])
        int(marker["before"])
    except (ValueError, TypeError, KeyError) as exc:
        raise LcdashError(f"meta key {MARKER!r} is not an ingest marker ({row[0]!r:.80})") from exc
    return marker


def _has(cur, table: str) -> bool:
    return bool(
        cur.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'", [table]
        ).fetchall()[0][0]
    )


def _drop(cur) -> None:
    cur.execute(f"DROP TABLE IF EXISTS {OBJECTS}")
    cur.execute(f"DROP TABLE IF EXISTS {LIGHTCURVES}")
    cur.execute("DELETE FROM meta WHERE key = ?", [MARKER])
