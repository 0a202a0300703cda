"""The SQL sandbox: read-only SELECTs on the store's tables; everything else refused, store unharmed."""

from __future__ import annotations

from pathlib import Path

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


# -- issue 17: DuckDB itself refuses, the check is a second wall; bounded time, memory, text ---------


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """Real files outside the store, one per format DuckDB could read."""
    import duckdb

    d = tmp_path_factory.mktemp("outside")
    (d / "secret.csv").write_text("x\n42\n")
    (d / "conf.json").write_text('{"d_model": 42}')
    pd.DataFrame({"x": [42]}).to_parquet(d / "secret.parquet")
    con = duckdb.connect(str(d / "other.duckdb"))
    con.execute("CREATE TABLE t AS SELECT 42 AS x")
    con.close()
    return d


def escapes(d):
    return [
        f"SELECT * FROM read_csv('{d}/secret.csv')",
        f"SELECT * FROM '{d}/secret.csv'",
        f"SELECT * FROM read_json_auto('{d}/conf.json')",
        f"SELECT * FROM '{d}/*.parquet'",
        f"SELECT * FROM read_text('{d}/conf.json')",
        f"ATTACH '{d}/other.duckdb' AS other",
        "SELECT * FROM 'https://example.org/x.parquet'",
        "INSTALL httpfs",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
    ]


def test_duckdb_itself_refuses_outside_access(store, outside):
    """The first wall: the store's connection cannot read files, fetch URLs or unlock itself."""
    import duckdb

    for q in escapes(outside):
        cur = store.cursor()
        try:
            with pytest.raises(duckdb.Error):
                cur.execute(q).fetchall()
        finally:
            cur.close()
    cur = store.cursor()
    try:
        settings = dict(
            cur.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', "
                "'autoinstall_known_extensions', 'autoload_known_extensions', 'lock_configuration')"
            ).fetchall()
        )
    finally:
        cur.close()
    assert settings == {
        "enable_external_access": "false",
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
        "lock_configuration": "true",
    }


def test_sql_box_without_the_parser_check_still_reads_nothing(store, outside, monkeypatch):
    """What the app's SQL box calls (Store.sql), with the second wall switched off."""
    from lcdash.store import sql as sandbox

    monkeypatch.setattr(sandbox, "check_query", lambda con, query, tables: None)
    for q in escapes(outside)[:5]:
        with pytest.raises(SQLSandboxError) as info:
            store.sql(q)
        assert "42" not in str(info.value) and len(str(info.value).splitlines()) == 1


CTE_ESCAPE = "SELECT (WITH \"{f}\" AS (SELECT 1) SELECT 1) AS k, * FROM '{f}'"


def test_cte_name_counts_only_in_its_scope(store, outside):
    f = outside / "secret.csv"
    for q in (
        CTE_ESCAPE.format(f=f),
        f"SELECT * FROM (WITH \"{f}\" AS (SELECT 1) SELECT 1) a, '{f}' b",
        f"WITH a AS (WITH \"{f}\" AS (SELECT 1) SELECT 1) SELECT * FROM a, '{f}'",
    ):
        with pytest.raises(SQLSandboxError, match="not a table of this store"):
            store.sql(q)
    # a CTE still works where it is in scope, nested and recursive ones too
    assert store.sql("WITH a AS (SELECT 1 AS x) SELECT (SELECT x FROM a) AS y FROM a")["y"][0] == 1
    rec = store.sql(
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r"
    )
    assert rec["n"].tolist() == [1, 2, 3, 4, 5]


def test_cte_escape_through_the_cli(capsys, store, outside, tmp_path):
    import shutil

    from lcdash.cli import main

    db = tmp_path / "copy.duckdb"
    store.con.execute("CHECKPOINT")
    shutil.copy(store.path, db)
    code = main(["sql", CTE_ESCAPE.format(f=outside / "secret.csv"), "--db", str(db)])
    out, err = capsys.readouterr()
    assert code == 1 and "42" not in out and len(err.strip().splitlines()) == 1
    assert "not a table of this store" in err


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM pg_catalog.pg_settings",
        "SELECT * FROM pg_settings",
        "SELECT * FROM pg_catalog.pg_database",
        "SELECT * FROM information_schema.schemata",
        "SELECT * FROM duckdb_databases()",
        "SELECT * FROM duckdb_extensions()",
        "SELECT current_setting('memory_limit')",
    ],
)
def test_settings_and_attached_databases_hidden(store, query):
    with pytest.raises(SQLSandboxError, match="refused"):
        store.sql(query)


def test_query_text_is_capped(store):
    from lcdash.store.sql import MAX_QUERY_CHARS

    big = "SELECT count(*) AS n FROM objects WHERE oid IN (" + ",".join(["1"] * (MAX_QUERY_CHARS // 2)) + ")"
    with pytest.raises(SQLSandboxError, match="characters long"):
        store.sql(big)


def test_deep_nesting_is_one_line(store):
    q = "SELECT " + "CASE WHEN oid > 0 THEN " * 400 + "1" + " ELSE 0 END" * 400 + " AS x FROM objects"
    with pytest.raises(SQLSandboxError) as info:
        store.sql(q)
    assert len(str(info.value).splitlines()) == 1 and "Error" not in str(info.value)[:20]


def test_result_size_is_capped(store):
    with pytest.raises(SQLSandboxError, match="larger than"):
        store.sql("SELECT repeat('x', 100000) || i::VARCHAR AS s FROM range(1000) t(i)", limit=1000)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT repeat('x', 400000000) FROM range(6)",
        "SELECT lpad('x', oid::INT * 100000000, ' ') FROM objects",
        "SELECT range(1000000000)",
        "SELECT system.main.repeat('x', 3)",
    ],
)
def test_one_call_cannot_allocate_gigabytes(store, query):
    with pytest.raises(SQLSandboxError, match="refused"):
        store.sql(query)
    assert store.sql("SELECT repeat('ab', 3) AS s")["s"][0] == "ababab"


def test_time_limit_covers_the_whole_run(store):
    """A runaway recursive CTE: the caller regains control within the limit plus the interrupt
    grace period (generous margin for a loaded machine)."""
    import time

    from lcdash.store.sql import INTERRUPT_GRACE_S

    t0 = time.monotonic()
    with pytest.raises(SQLSandboxError, match="time limit"):
        store.sql(
            "WITH RECURSIVE r(n, s) AS (SELECT 1, 'x' UNION ALL SELECT n + 1, s || s FROM r, range(2) "
            "WHERE n < 40) SELECT max(length(s)) FROM r",
            timeout_s=1,
        )
    assert time.monotonic() - t0 < 1 + INTERRUPT_GRACE_S + 10
    assert store.sql("SELECT count(*) AS n FROM objects")["n"][0] == 3


def test_memory_is_bounded_in_a_fresh_process(store, tmp_path):
    """A 2 GB aggregate: the store's memory limit stops the query and the process stays far
    below what it would need. (Peak memory is VmHWM: ru_maxrss of a child process starts from
    the parent's peak, which is pytest's.)"""
    import json
    import os
    import shutil
    import subprocess
    import sys

    db = tmp_path / "mem.duckdb"
    store.con.execute("CHECKPOINT")
    shutil.copy(store.path, db)
    code = """if True:
        import json, sys
        from lcdash.store import Store
        from lcdash.errors import SQLSandboxError
        s = Store(sys.argv[1], read_only=True)
        q = "SELECT length(string_agg(repeat('x', 100000) || i::VARCHAR, ',')) FROM range(20000) t(i)"
        try:
            s.sql(q, timeout_s=60)
            msg = "no error"
        except SQLSandboxError as exc:
            msg = str(exc)
        rss = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) / 1024
        print(json.dumps({"msg": msg, "rss_mb": rss}))
    """
    env = {**os.environ, "LCDASH_MEMORY_LIMIT": "300MB"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(db)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "memory" in got["msg"], got
    assert got["rss_mb"] < 1200, got
