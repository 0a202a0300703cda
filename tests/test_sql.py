"""The SQL sandbox: read-only SELECTs on the store's tables; everything else refused, store unharmed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lcdash import io
from lcdash.errors import SQLSandboxError
from lcdash.store import Store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("sql")
    rng = np.random.default_rng(0)
    obs = pd.DataFrame(
        {
            "object_id": np.repeat(["a", "b", "c"], 6),
            "band": "V",
            "time": np.tile(np.arange(6.0), 3),
            "mag": 15 + rng.normal(0, 0.1, 18),
            "mag_err": 0.05,
        }
    )
    objects = pd.DataFrame(
        {"object_id": ["a", "b", "c"], "label": ["RRab", "EW", "RRab"], "period": [0.5, 0.3, 0.6]}
    )
    s = Store(tmp_path / "s.duckdb")
    o, j, _ = io.prepare(obs, objects=objects)
    s.ingest(o, j, survey="toy")
    secret = tmp_path / "secret.csv"
    secret.write_text("x\n42\n")
    s.secret = secret  # a real file the sandbox must not read
    yield s
    s.close()


def counts(store):
    cur = store.cursor()
    try:
        return cur.execute(
            "SELECT (SELECT count(*) FROM objects), (SELECT count(*) FROM lightcurves)"
        ).fetchall()
    finally:
        cur.close()


def test_select_works(store):
    df = store.sql("SELECT label, count(*) AS n FROM objects GROUP BY label ORDER BY label")
    assert df.to_dict("list") == {"label": ["EW", "RRab"], "n": [1, 2]}
    long = store.sql(
        "SELECT o.object_id, avg(x.mag) AS m FROM observations x JOIN objects o USING (oid) "
        "GROUP BY ALL ORDER BY 1"
    )
    assert long["object_id"].tolist() == ["a", "b", "c"]
    cte = store.sql("WITH q AS (SELECT oid FROM objects WHERE label = 'RRab') SELECT count(*) AS n FROM q;")
    assert cte["n"][0] == 2
    assert store.sql("SELECT unnest(range(3)) AS i")["i"].tolist() == [0, 1, 2]
    assert store.sql("SELECT * FROM range(4)").shape == (4, 1)
    assert "objects" in store.sql("SELECT table_name FROM information_schema.tables")["table_name"].tolist()


def test_row_limit(store):
    df = store.sql("SELECT * FROM observations", limit=5)
    assert len(df) == 5 and df.attrs["truncated"]
    full = store.sql("SELECT * FROM observations", limit=100)
    assert len(full) == 18 and not full.attrs["truncated"]


REFUSED = [
    "SELECT * FROM read_csv('{secret}')",
    "SELECT * FROM read_csv_auto('{secret}')",
    "SELECT * FROM '{secret}'",
    "SELECT * FROM read_parquet('/etc/x.parquet')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM 'https://example.org/data.parquet'",
    "SELECT * FROM read_parquet('s3://bucket/x.parquet')",
    "SELECT * FROM objects WHERE oid IN (SELECT x FROM read_csv('{secret}'))",
    "WITH s AS (SELECT * FROM read_csv('{secret}')) SELECT * FROM s",
    "SELECT * FROM query('SELECT 1')",
    "SELECT nextval('oid_seq')",
    "SELECT getenv('HOME')",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM store",
    "DESCRIBE SELECT * FROM read_csv('{secret}')",
    "SUMMARIZE SELECT * FROM read_csv('{secret}')",
    "SELECT (SELECT content FROM read_text('{secret}')) AS c",
    "SELECT * FROM objects UNION ALL SELECT * FROM read_csv('{secret}')",
    "SELECT * FROM main.objects, system.main.duckdb_settings()",
    "SELECT * FROM other_db.main.objects",
    "COPY objects TO '{secret}.out'",
    "COPY (SELECT * FROM objects) TO '/tmp/out.csv'",
    "ATTACH '/tmp/other.duckdb' AS other",
    "DETACH other",
    "DROP TABLE objects",
    "INSTALL httpfs",
    "LOAD httpfs",
    "PRAGMA database_list",
    "SET enable_external_access = true",
    "RESET threads",
    "CREATE TABLE t AS SELECT 1",
    "CREATE VIEW v AS SELECT 1",
    "INSERT INTO objects (oid, object_id, survey, n_obs, bands) VALUES (99, 'x', 'y', 0, [])",
    "UPDATE objects SET label = 'x'",
    "DELETE FROM lightcurves",
    "ALTER TABLE objects ADD COLUMN x INT",
    "SELECT 1; DROP TABLE objects",
    "SELECT 1; SELECT 2",
    "EXPORT DATABASE '/tmp/dump'",
    "CALL pragma_version()",
    "BEGIN TRANSACTION",
    "CHECKPOINT",
    "",
    "SELEC 1",
]


@pytest.mark.parametrize("query", REFUSED)
def test_refused_and_store_keeps_working(store, query):
    before = counts(store)
    with pytest.raises(SQLSandboxError):
        store.sql(query.format(secret=store.secret))
    assert counts(store) == before
    assert store.sql("SELECT count(*) AS n FROM objects")["n"][0] == 3
    assert store.read_batch([1, 2]).length.tolist() == [6, 6]


def test_python_variables_are_not_scanned(store):
    local_frame = pd.DataFrame({"x": [1]})  # noqa: F841  (what a replacement scan would find)
    with pytest.raises(SQLSandboxError, match="not a table of this store"):
        store.sql("SELECT * FROM local_frame")


def test_timeout_interrupts_and_store_recovers(store):
    with pytest.raises(SQLSandboxError, match="time limit"):
        store.sql("SELECT count(*) FROM range(100000000000) a, range(10) b", timeout_s=0.5)
    assert store.sql("SELECT count(*) AS n FROM objects")["n"][0] == 3


def test_runtime_errors_are_sandbox_errors(store):
    with pytest.raises(SQLSandboxError, match="query failed"):
        store.sql("SELECT no_such_column FROM objects")
