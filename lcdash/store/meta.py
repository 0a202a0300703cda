"""Key-value settings of a store (the `meta` table): the schema version, the demo-store mark, saved
selections. Values are text; callers encode what they keep."""

from __future__ import annotations


def get_meta(store, key: str) -> str | None:
    """The value under `key`, or None."""
    cur = store.cursor()
    try:
        row = cur.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    finally:
        cur.close()
    return None if row is None else row[0]


def set_meta(store, key: str, value: str) -> None:
    """Set (or replace) the value under `key`."""
    with store.transaction() as cur:
        cur.execute("DELETE FROM meta WHERE key = ?", [key])
        cur.execute("INSERT INTO meta VALUES (?, ?)", [key, value])
