"""A hostile-SQL corpus (issue 25): every probe through the app's path (`Store.sql` on the store the
app holds read-write, as the Data page calls it) and the CLI (`lcdash sql`, read-only), each refused
with one line: no write to the store (content hash), no file read or written (a sentinel value in
the store's temp folder and outside it, both folders' listings), no setting shown (the store's path,
which the temp folder and attached databases give away, and DuckDB's secret directory).

(The first round's probes stay in tests/test_sql.py.)"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lcdash import io
from lcdash.cli import main
from lcdash.errors import SQLSandboxError
from lcdash.store import Store
from lcdash.store.sql import INTERRUPT_GRACE_S

SENTINEL = "4242424242"
TIMEOUT_S = 5

CORPUS: dict[str, list[str]] = {
    "data-modifying CTE": [
        "WITH d AS (DELETE FROM objects WHERE oid <= 30 RETURNING oid) SELECT count(*) FROM d",
        "WITH u AS (UPDATE meta SET value='999' WHERE key='schema_version' RETURNING *) SELECT * FROM u",
        "WITH i AS (INSERT INTO meta VALUES ('k', 'v') RETURNING *) SELECT * FROM i",
        "WITH d AS (DELETE FROM lightcurves WHERE oid = 1 RETURNING oid) SELECT * FROM objects",
        "WITH a AS (SELECT 1 AS x), d AS (DELETE FROM objects RETURNING oid) SELECT x FROM a",
        "WITH RECURSIVE d AS (DELETE FROM objects RETURNING oid) SELECT * FROM d",
        "WITH d AS MATERIALIZED (DELETE FROM objects RETURNING oid) SELECT * FROM d",
        "WITH d AS (DELETE FROM objects RETURNING oid) SELECT * FROM d UNION ALL SELECT 1",
        "SELECT * FROM (WITH d AS (DELETE FROM objects RETURNING oid) SELECT * FROM d) t",
        "WITH u AS (UPDATE objects SET label = NULL RETURNING oid) SELECT count(*) FROM u",
        'with d as (delete from "OBJECTS" returning oid) select 1',
        "WITH d AS (DELETE FROM main.objects USING lightcurves l WHERE objects.oid = l.oid RETURNING 1) "
        "SELECT 1",
        "WITH i AS (INSERT OR REPLACE INTO meta VALUES ('schema_version', '999') RETURNING 1) SELECT 1",
    ],
    "COPY": [
        "WITH c AS (COPY (SELECT * FROM range(1000000)) TO '{tmp}/out.csv') SELECT 1",
        "WITH c AS (COPY objects TO '{tmp}/o.parquet' (FORMAT parquet)) SELECT 1",
        "WITH c AS (COPY (SELECT 1) TO '{tmp}/x.json' (FORMAT json)) SELECT * FROM objects",
        "SELECT (WITH c AS (COPY (SELECT 1) TO '{tmp}/y.csv') SELECT 1) AS v",
        "WITH a AS (SELECT 1), c AS (COPY (SELECT 2) TO '{outside}/z.csv') SELECT 1",
        "WITH c AS (COPY lightcurves TO '{tmp}/p' (FORMAT parquet, PARTITION_BY (oid))) SELECT 1",
        "COPY objects TO '{tmp}/w.csv'",
        "COPY objects FROM '{tmp}/left.csv'",
        "EXPORT DATABASE '{tmp}/dump'",
    ],
    "shadowing and forward CTE names": [
        "WITH pg_settings AS (SELECT * FROM pg_settings) SELECT name, setting FROM pg_settings",
        "WITH duckdb_databases AS (SELECT * FROM duckdb_databases) SELECT * FROM duckdb_databases",
        "WITH a AS (SELECT * FROM pg_settings), pg_settings AS (SELECT 1) SELECT * FROM a",
        "WITH a AS (SELECT * FROM duckdb_settings), duckdb_settings AS (SELECT 1) SELECT * FROM a",
        "WITH RECURSIVE pg_settings AS (SELECT * FROM pg_settings) SELECT * FROM pg_settings",
        "WITH RECURSIVE pg_settings AS (SELECT name, setting FROM pg_settings UNION SELECT 'x', 'y') "
        "SELECT * FROM pg_settings",
        "WITH pg_settings AS (SELECT 1) SELECT * FROM pg_catalog.pg_settings",
        'WITH "DUC\u212aDB_DATABASES" AS (SELECT 1) SELECT * FROM duckdb_databases',
        'WITH "PG_SETTINGS" AS (SELECT * FROM pg_settings) SELECT * FROM "PG_SETTINGS"',
        "SELECT (WITH pg_settings AS (SELECT 1) SELECT 1) AS k, * FROM pg_settings",
        "WITH x AS (SELECT * FROM '{tmp}/left.csv'), \"{tmp}/left.csv\" AS (SELECT 1) SELECT * FROM x",
        'WITH "{tmp}/left.csv" AS (SELECT * FROM \'{tmp}/left.csv\') SELECT * FROM "{tmp}/left.csv"',
        "WITH schemata AS (SELECT 1) SELECT * FROM information_schema.schemata",
        "WITH a AS (WITH pg_settings AS (SELECT 1) SELECT 1) SELECT * FROM a, pg_settings",
        "WITH a AS (SELECT 1), b AS (SELECT * FROM a, duckdb_databases) SELECT * FROM b",
        "SHOW pg_settings",
        "SHOW DATABASES",
        'SHOW "{tmp}/left.csv"',
    ],
    "size amplifier": [
        "SELECT max(length(printf('%02000000d', range))) FROM range(2048)",
        "SELECT max(length(format('{{:>2000000}}', range))) FROM range(2048)",
        "SELECT max(length(printf('%0*d', 2000000, range))) FROM range(2048)",
        "SELECT max(length(repeat(repeat(range::VARCHAR, 1000), 1000))) FROM range(2048)",
        "SELECT max(length(bitstring('1', 100000000)))",
        "SELECT max(len([x + range for x in range(100000)])) FROM range(2048)",
        "SELECT max(len([[y for y in range(1000)] for x in range(1000)])) FROM range(2048)",
        "SELECT max(length(list_reduce(range(33), lambda a, x: a || a, range::VARCHAR))) FROM range(2)",
        "SELECT max(length(replace(repeat('x', 10000), 'x', repeat('y', 10000))))",
        "SELECT max(length(lpad(range::VARCHAR, 100000, 'x'))) FROM range(20480)",
        "SELECT max(len(list_resize([range], 100000))) FROM range(2048)",
        "SELECT max(length(repeat('x', 6000) || range::VARCHAR || repeat('y', 6000))) FROM range(2048)",
    ],
    "pragma": [
        "PRAGMA database_list",
        "CALL pragma_database_list()",
        "SELECT * FROM pragma_database_list()",
        "SELECT * FROM pragma_storage_info('objects')",
        "SELECT * FROM pragma_metadata_info()",
        "PRAGMA enable_profiling",
        "SELECT * FROM pragma_user_agent()",
    ],
    "macro": [
        "CREATE MACRO m(x) AS x + 1",
        "CREATE OR REPLACE TEMP MACRO s() AS TABLE SELECT * FROM pg_settings",
        "DROP MACRO IF EXISTS m",
        "SELECT * FROM which_secret('s3://bucket/x', 's3')",
    ],
    "prepared statement": [
        "PREPARE p AS DELETE FROM objects",
        "EXECUTE p",
        "DEALLOCATE p",
        "PREPARE q AS SELECT * FROM objects; EXECUTE q",
        "SELECT * FROM objects WHERE oid = $1",
    ],
    "table function": [
        "SELECT * FROM read_csv('{tmp}/left.csv')",
        "SELECT content FROM read_text('{tmp}/left.csv')",
        "SELECT * FROM glob('{tmp}/*')",
        "SELECT * FROM sniff_csv('{tmp}/left.csv')",
        "SELECT * FROM duckdb_settings()",
        "SELECT * FROM duckdb_databases()",
        "SELECT * FROM duckdb_secrets()",
        "SELECT * FROM duckdb_temporary_files()",
        "SELECT * FROM duckdb_memory()",
        "SELECT * FROM query_table('objects')",
        "SELECT * FROM query('DELETE FROM objects')",
        "SELECT * FROM repeat_row(1, num_rows = 1000000000)",
        "SELECT * FROM duckdb_logs()",
    ],
    "comment and unicode trick": [
        "SELECT 1; -- \n DELETE FROM objects",
        "/* read-only */ WITH d AS (DELETE FROM objects RETURNING 1) SELECT 1",
        "SELECT 1 /*; DELETE FROM objects; */ ; DELETE FROM objects",
        "SELECT * FROM pg_settings\u200b",
        "SELECT * FROM \uff50\uff47_settings",
        "SELECT * FROM \u043ebjects",
        'SELECT * FROM "Pg_Settings"',
        "SELECT current_setting/**/('temp_directory')",
        "SELECT * FROM duckdb_databases\t()",
        "WITH d AS (DELETE\u00a0FROM objects RETURNING 1) SELECT 1",
    ],
}
PROBES = [(kind, q) for kind, qs in CORPUS.items() for q in qs]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The store the app holds (read-write), a copy for the CLI, the temp folders with a sentinel."""
    root = tmp_path_factory.mktemp("corpus")
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
    store = Store(root / "app.duckdb")
    o, j, _ = io.prepare(
        obs, objects=pd.DataFrame({"object_id": ["a", "b", "c"], "label": ["RRab", "EW", "EW"]})
    )
    store.ingest(o, j, survey="toy")
    store.con.execute("CHECKPOINT")
    cli_db = root / "cli.duckdb"
    shutil.copy(store.path, cli_db)
    outside = root / "outside"
    for folder in (Path(f"{store.path}.tmp"), Path(f"{cli_db}.tmp"), outside):
        folder.mkdir()
        (folder / "left.csv").write_text(f"x\n{SENTINEL}\n")
    yield {"store": store, "cli_db": cli_db, "outside": outside}
    store.close()


def content_hash(cur) -> str:
    names = [
        r[0]
        for r in cur.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1"
        ).fetchall()
    ]
    rows = {n: sorted(map(repr, cur.execute(f'SELECT * FROM "{n}"').fetchall())) for n in names}
    return hashlib.sha1(repr(rows).encode()).hexdigest()


def listing(*folders) -> list:
    return sorted((str(p), p.stat().st_size) for f in folders for p in Path(f).rglob("*"))


def leaked(text: str, query: str, db: Path) -> list[str]:
    """Settings or file contents in what the user sees (a value the query itself names does not count)."""
    secrets = [SENTINEL, str(db), str(Path.home() / ".duckdb"), "stored_secrets"]
    return [s for s in secrets if s in text and s not in query]


def app_outcome(store, query: str) -> tuple[str, str]:
    t0 = time.monotonic()
    try:
        df = store.sql(query, timeout_s=TIMEOUT_S)
        outcome, text = "ran", df.to_csv(index=False)
    except SQLSandboxError as exc:
        outcome, text = "refused", str(exc)
    assert time.monotonic() - t0 < TIMEOUT_S + INTERRUPT_GRACE_S + 5
    return outcome, text


@pytest.mark.parametrize(("kind", "probe"), PROBES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(PROBES)])
def test_probe_through_the_app_and_the_cli(env, kind, probe, capsys):
    store, cli_db, outside = env["store"], env["cli_db"], env["outside"]
    app_tmp, cli_tmp = Path(f"{store.path}.tmp"), Path(f"{cli_db}.tmp")

    # the app's path: the Data page calls Store.sql on the store it holds read-write
    query = probe.format(tmp=app_tmp, outside=outside)
    cur = store.cursor()
    before, files = content_hash(cur), listing(app_tmp, outside)
    outcome, text = app_outcome(store, query)
    assert outcome == "refused", f"{kind}: ran in the app: {text[:300]}"
    assert len(text.splitlines()) == 1 and "Traceback" not in text
    assert not leaked(text, query, Path(store.path)), text
    assert content_hash(cur) == before and listing(app_tmp, outside) == files
    cur.close()

    # the CLI: lcdash sql on a read-only store
    query = probe.format(tmp=cli_tmp, outside=outside)
    digest, files = hashlib.sha1(cli_db.read_bytes()).hexdigest(), listing(cli_tmp, outside)
    code = main(["sql", query, "--db", str(cli_db), "--timeout", str(TIMEOUT_S)])
    out, err = capsys.readouterr()
    assert code == 1 and not out, f"{kind}: ran in the CLI: {out[:300]}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lcdash sql: "), err
    assert not leaked(err, query, cli_db), err
    assert hashlib.sha1(cli_db.read_bytes()).hexdigest() == digest and listing(cli_tmp, outside) == files


def test_corpus_size():
    assert len(PROBES) >= 60 and all(len(qs) >= 4 for qs in CORPUS.values())
