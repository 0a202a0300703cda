"""The SQL sandbox: read-only SELECTs on the store's tables; everything else refused, store unharmed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lcdash import io
from lcdash.errors import SQLSandboxError
from lcdash.store import Store
from lcdash.store.schema import SCHEMA_VERSION


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
        # (10,000 characters a row: the most a value made row by row may have, MAX_PER_ROW)
        store.sql("SELECT repeat('x', 10000) || i::VARCHAR AS s FROM range(10000) t(i)", limit=10000)


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
        q = "SELECT length(string_agg(repeat('x', 10000) || i::VARCHAR, ',')) FROM range(200000) t(i)"
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


# -- issue 25: the SQL box cannot write; COPY refused; WITH names resolved as DuckDB does ----------


def content_hash(store) -> str:
    """Every table's rows, hashed, read through the store's own (read-write) connection."""
    import hashlib

    cur = store.cursor()
    try:
        names = [
            r[0]
            for r in cur.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1"
            ).fetchall()
        ]
        rows = {n: sorted(map(repr, cur.execute(f'SELECT * FROM "{n}"').fetchall())) for n in names}
        return hashlib.sha1(repr(rows).encode()).hexdigest()
    finally:
        cur.close()


WRITING_CTES = [
    "WITH d AS (DELETE FROM objects WHERE oid <= 30 RETURNING oid) SELECT count(*) FROM d",
    "WITH u AS (UPDATE meta SET value='999' WHERE key='schema_version' RETURNING *) SELECT * FROM u",
    "WITH i AS (INSERT INTO meta VALUES ('x', 'y') RETURNING *) SELECT * FROM i",
    "WITH d AS (DELETE FROM lightcurves RETURNING 1) SELECT 1 UNION ALL SELECT 2",
    "SELECT (WITH d AS (DELETE FROM objects RETURNING 1) SELECT count(*) FROM d) AS n",
    "SELECT * FROM (WITH u AS (UPDATE objects SET label = 'x' RETURNING oid) SELECT * FROM u)",
    "WITH a AS (SELECT 1), d AS (DELETE FROM labels RETURNING *) SELECT * FROM a",
    "WITH a AS (WITH d AS (DELETE FROM objects RETURNING oid) SELECT * FROM d) SELECT * FROM a",
]


@pytest.mark.parametrize("query", WRITING_CTES)
def test_data_modifying_ctes_are_refused(store, query):
    before = content_hash(store)
    with pytest.raises(SQLSandboxError, match="read-only") as info:
        store.sql(query)
    assert len(str(info.value).splitlines()) == 1
    assert content_hash(store) == before
    assert store.schema_version() == SCHEMA_VERSION and counts(store) == [(3, 3)]


@pytest.mark.parametrize("query", WRITING_CTES + ["DELETE FROM objects", "SELECT nextval('oid_seq')"])
def test_read_only_transaction_holds_without_the_check(store, query, monkeypatch):
    """The first wall alone: with the parse-tree check switched off, DuckDB's read-only
    transaction refuses every write on the app's read-write connection."""
    from lcdash.store import sql as sandbox

    monkeypatch.setattr(sandbox, "check_query", lambda con, query, tables: None)
    before = content_hash(store)
    with pytest.raises(SQLSandboxError, match="read-only|must be at the top level"):
        store.sql(query)  # (DuckDB's binder refuses a nested data-modifying WITH by itself)
    assert content_hash(store) == before


@pytest.fixture
def cli_db(store, tmp_path):
    """A copy of the store for `lcdash sql`, with DuckDB's temp folder present (as after a spill)."""
    import shutil

    db = tmp_path / "cli.duckdb"
    store.con.execute("CHECKPOINT")
    shutil.copy(store.path, db)
    Path(f"{db}.tmp").mkdir()
    return db


def copy_probes(folder) -> list[str]:
    return [
        f"WITH c AS (COPY (SELECT * FROM range(1000000)) TO '{folder}/out.csv') SELECT 1",
        f"WITH c AS (COPY objects TO '{folder}/objects.parquet' (FORMAT parquet)) SELECT 1",
        f"SELECT (WITH c AS (COPY (SELECT 1) TO '{folder}/one.csv') SELECT 1) AS x",
        f"WITH a AS (SELECT 1), c AS (COPY (SELECT 2) TO '{folder}/two.csv') SELECT * FROM a",
    ]


def test_copy_inside_with_is_refused_in_the_cli(capsys, cli_db):
    import hashlib

    from lcdash.cli import main

    folder = Path(f"{cli_db}.tmp")
    before = hashlib.sha1(cli_db.read_bytes()).hexdigest()
    for q in copy_probes(folder):
        code = main(["sql", q, "--db", str(cli_db)])
        out, err = capsys.readouterr()
        assert code == 1 and not out and len(err.strip().splitlines()) == 1, err
        assert "COPY is not allowed" in err
    assert list(folder.iterdir()) == []
    assert hashlib.sha1(cli_db.read_bytes()).hexdigest() == before


def test_copy_inside_with_is_refused_in_the_app(store):
    folder = Path(f"{store.path}.tmp")
    folder.mkdir(exist_ok=True)
    before = set(folder.iterdir())
    for q in copy_probes(folder):
        with pytest.raises(SQLSandboxError, match="COPY is not allowed"):
            store.sql(q)
    assert set(folder.iterdir()) == before


def test_files_in_the_temp_folder_cannot_be_read_back(store):
    """DuckDB lets a connection without external access read its temp folder; the check refuses
    every way of naming a file there."""
    folder = Path(f"{store.path}.tmp")
    folder.mkdir(exist_ok=True)
    f = folder / "left.csv"
    f.write_text("x\n4242\n")
    try:
        for q in (
            f"SELECT * FROM '{f}'",
            f"SELECT * FROM read_csv('{f}')",
            f"SELECT content FROM read_text('{f}')",
            f"WITH a AS (SELECT * FROM '{f}'), \"{f}\" AS (SELECT 1) SELECT * FROM a",
            f'WITH "{f}" AS (SELECT * FROM \'{f}\') SELECT * FROM "{f}"',
            f'SELECT * FROM main."{f}"',
            f'SHOW "{f}"',
            f"DESCRIBE SELECT * FROM '{f}'",
            f"SELECT * FROM glob('{folder}/*')",
        ):
            with pytest.raises(SQLSandboxError, match="refused") as info:
                store.sql(q)
            assert "4242" not in str(info.value)
    finally:
        f.unlink()


SHADOWING = [
    "WITH pg_settings AS (SELECT * FROM pg_settings) SELECT name, setting FROM pg_settings",
    "WITH duckdb_databases AS (SELECT * FROM duckdb_databases) SELECT * FROM duckdb_databases",
    "WITH a AS (SELECT * FROM pg_settings), pg_settings AS (SELECT 1) SELECT * FROM a",
    "WITH a AS (SELECT * FROM b), b AS (SELECT 1 AS x) SELECT * FROM a",
    "WITH RECURSIVE pg_settings AS (SELECT * FROM pg_settings) SELECT * FROM pg_settings",
    "WITH RECURSIVE pg_settings AS (SELECT name FROM pg_settings UNION SELECT 'x') SELECT * FROM pg_settings",
    "WITH RECURSIVE s AS (SELECT 1 AS x UNION ALL BY NAME SELECT 1 AS x FROM s) SELECT * FROM s",
    "WITH pg_settings AS (SELECT 1) SELECT * FROM main.pg_settings",
    'WITH "DUC\u212aDB_DATABASES" AS (SELECT 1) SELECT * FROM duckdb_databases',
    'WITH "PG_SETTINGS" AS (SELECT * FROM pg_settings) SELECT * FROM "PG_SETTINGS"',
    "SELECT (WITH pg_settings AS (SELECT 1) SELECT 1), * FROM pg_settings",
    "SHOW pg_settings",
    "SHOW DATABASES",
]


@pytest.mark.parametrize("query", SHADOWING)
def test_with_names_resolve_as_duckdb_does(store, query):
    with pytest.raises(SQLSandboxError, match="refused") as info:
        store.sql(query)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert "temp_directory" not in message and str(store.path) not in message


def test_legitimate_with_queries_still_run(store):
    assert store.sql("WITH objects AS (SELECT 7 AS oid) SELECT oid FROM objects")["oid"].tolist() == [7]
    assert (
        store.sql("WITH a AS (SELECT 1 AS x), b AS (SELECT x + 1 AS y FROM a) SELECT y FROM b")["y"][0] == 2
    )
    nested = (
        "WITH a AS (SELECT 1 AS x), b AS (WITH a AS (SELECT x + 1 AS x FROM a) SELECT x FROM a) "
        "SELECT x FROM b"
    )
    assert store.sql(nested)["x"][0] == 2
    rec = (
        "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM (SELECT n FROM r) WHERE n < 3) "
        "SELECT n FROM r"
    )
    assert store.sql(rec)["n"].tolist() == [1, 2, 3]
    assert "objects" in store.sql("SHOW TABLES")["name"].tolist()
    assert len(store.sql("WITH q AS (SELECT label FROM objects) SELECT * FROM q UNION SELECT 'z'")) == 3


# -- issue 25, point 4: sizes that multiply are bounded before the query runs --------------------

AMPLIFIERS = [
    "SELECT max(length(printf('%02000000d', range))) FROM range(2048)",
    "SELECT max(length(format('{:>2000000}', range))) FROM range(2048)",
    "SELECT max(length(printf('%0*d', 2000000, range))) FROM range(2048)",
    "SELECT max(length(format('{:0>{}}', range, 2000000))) FROM range(2048)",
    "SELECT max(length(printf(oid::VARCHAR, 1))) FROM objects",
    "SELECT max(length(repeat(repeat('x', 1000), 100000))) FROM range(2048)",
    "SELECT max(length(repeat(repeat(range::VARCHAR, 1000), 1000))) FROM range(2048)",
    "SELECT max(length(bitstring('1', 100000000)))",
    "SELECT max(len([x + range for x in range(100000)])) FROM range(2048)",
    "SELECT max(len([[y for y in range(1000)] for x in range(1000)])) FROM range(2048)",
    "SELECT max(len(list_transform(range(100000), lambda x: x + range))) FROM range(2048)",
    "SELECT max(length(list_reduce(range(33), lambda a, x: a || a, range::VARCHAR))) FROM range(2)",
    "SELECT max(length(list_reduce(range(33), lambda a, x: replace(a, '1', '11'), 'x'))) FROM range(2)",
    "SELECT max(length(replace(repeat('x', 10000), 'x', repeat('y', 10000))))",
    "SELECT max(length(replace(object_id, 'a', label))) FROM objects",
    "SELECT max(length(lpad(range::VARCHAR, 100000, 'x'))) FROM range(20480)",
    "SELECT max(len(list_resize([range], 100000))) FROM range(2048)",
    "SELECT max(length(repeat('x', 100000) || range::VARCHAR)) FROM range(20480)",
    "SELECT max(length(repeat('x', 6000) || range::VARCHAR || repeat('y', 6000))) FROM range(2048)",
]


@pytest.mark.parametrize("query", AMPLIFIERS)
def test_size_amplifiers_are_refused(store, query):
    with pytest.raises(SQLSandboxError, match="refused") as info:
        store.sql(query)
    assert len(str(info.value).splitlines()) == 1


def test_small_sizes_still_run(store):
    assert store.sql("SELECT printf('%5.2f|%-4s|', 3.14159, 'ab') AS s")["s"][0] == " 3.14|ab  |"
    assert store.sql("SELECT format('{:>6}', 'ab') AS s")["s"][0] == "    ab"
    assert store.sql("SELECT lpad(object_id, 4, '.') AS s FROM objects ORDER BY 1")["s"].tolist() == [
        "...a",
        "...b",
        "...c",
    ]
    assert store.sql("SELECT [x * 2 for x in range(4) if x > 0] AS l")["l"][0] == [2, 4, 6]
    assert len(store.sql("SELECT unnest(range(100000)) AS i")) == 10_000  # the row limit
    assert store.sql("SELECT replace(label, 'R', 'r') AS s FROM objects WHERE oid = 1")["s"][0] == "rrab"
    assert store.sql("SELECT list_transform(range(3), lambda x: x + oid) AS l FROM objects WHERE oid = 1")[
        "l"
    ][0] == [1, 2, 3]


def test_store_closes_cleanly_after_a_stopped_query(tmp_path):
    """A query still inside one DuckDB call when run_sql gives up: closing the store waits for it
    instead of failing with "connection is busy" (the CLI closed the store and printed that)."""
    import subprocess
    import sys

    code = """if True:
        import sys
        from lcdash.store import Store, sql as sandbox
        from lcdash.errors import SQLSandboxError
        sandbox.INTERRUPT_GRACE_S = 0.0  # give up at once
        sandbox.check_query = lambda con, query, tables: None  # a query the rules would refuse
        s = Store(sys.argv[1])
        try:
            s.sql("SELECT max(length(printf('%0200000d', range))) FROM range(100000)", timeout_s=0.2)
        except SQLSandboxError as exc:
            print(exc)
        s.close()
        print("closed")
    """
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "s.duckdb")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["query stopped after the 0.2 s time limit", "closed"]
