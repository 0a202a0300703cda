"""Read/write helpers for the `jobs` table (see schema.py); lcdash.jobs is the only writer.

Every function takes a `Store` and uses its own cursor, so the app's job fragment (a script
thread) and other threads can call them side by side. JSON columns come back parsed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from lcdash.jsonio import to_json

COLUMNS = (
    "job_id",
    "kind",
    "params",
    "state",
    "step",
    "total",
    "message",
    "metrics",
    "error",
    "result",
    "pid",
    "workdir",
    "created_at",
    "started_at",
    "finished_at",
)
JSON_COLUMNS = {"params", "metrics", "result"}
# Columns update_job may set; job_id, kind and created_at never change after insert.
_UPDATABLE = set(COLUMNS) - {"job_id", "kind", "created_at"}


def utcnow() -> datetime:
    """Naive UTC, as stored in TIMESTAMP columns (DuckDB's current_timestamp follows the host TZ)."""
    return datetime.now(UTC).replace(tzinfo=None)


def _row_to_dict(row) -> dict:
    out = dict(zip(COLUMNS, row, strict=True))
    for col in JSON_COLUMNS:
        if isinstance(out[col], str):
            out[col] = json.loads(out[col])
    return out


def insert_job(store, job_id: str, kind: str, params: dict, workdir: str, state: str = "queued") -> None:
    with store.cursor() as cur:
        cur.execute(
            "INSERT INTO jobs (job_id, kind, params, state, step, workdir, created_at) "
            "VALUES (?, ?, ?, ?, 0, ?, ?)",
            [job_id, kind, to_json(params or {}), state, workdir, utcnow()],
        )


def update_job(store, job_id: str, **fields) -> None:
    """Set the given columns of one job (JSON columns take Python objects)."""
    bad = set(fields) - _UPDATABLE
    if bad:
        raise ValueError(f"jobs table: cannot update {sorted(bad)}")
    if not fields:
        return
    names = list(fields)
    values = [to_json(fields[n]) if n in JSON_COLUMNS else fields[n] for n in names]
    sets = ", ".join(f"{n} = ?" for n in names)
    with store.cursor() as cur:
        cur.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", [*values, job_id])


def get_job(store, job_id: str) -> dict | None:
    with store.cursor() as cur:
        row = cur.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE job_id = ?", [job_id]).fetchone()
    return None if row is None else _row_to_dict(row)


def list_jobs(
    store, states=None, kinds=None, limit: int | None = None, oldest_first: bool = False
) -> list[dict]:
    """Jobs newest first (or oldest first), optionally filtered by state and kind."""
    where, args = [], []
    if states:
        states = [states] if isinstance(states, str) else list(states)
        where.append(f"state IN ({', '.join('?' * len(states))})")
        args += states
    if kinds:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        where.append(f"kind IN ({', '.join('?' * len(kinds))})")
        args += kinds
    sql = f"SELECT {', '.join(COLUMNS)} FROM jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_at " + ("ASC" if oldest_first else "DESC") + ", job_id"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with store.cursor() as cur:
        rows = cur.execute(sql, args).fetchall()
    return [_row_to_dict(r) for r in rows]


def delete_job(store, job_id: str) -> None:
    with store.cursor() as cur:
        cur.execute("DELETE FROM jobs WHERE job_id = ?", [job_id])
