"""A content hash of every table of a store: what "the store is as before" means in the hostile tests."""

from __future__ import annotations

import hashlib


def table_hashes(store) -> dict:
    """{table: sha1 of its sorted rows} for every table of the store's main schema."""
    cur = store.cursor()
    try:
        names = [
            r[0]
            for r in cur.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1"
            ).fetchall()
        ]
        return {
            n: hashlib.sha1(
                repr(sorted(map(repr, cur.execute(f'SELECT * FROM "{n}"').fetchall()))).encode()
            ).hexdigest()
            for n in names
        }
    finally:
        cur.close()
