"""The sandboxed, read-only SQL runner behind `Store.sql`, the app's SQL box and `lcdash sql`.

DuckDB's `enable_external_access=false` is database-wide and cannot be switched back on, so the
store itself cannot use it without taking file access away from every other part of lcdash; and
a second DuckDB instance cannot open a file this process already holds. The sandbox therefore
checks a query before it runs:

1. `extract_statements` must give exactly one statement, of type SELECT (no COPY, ATTACH,
   PRAGMA, SET, INSTALL/LOAD, DDL or DML, no second statement);
2. the parse tree (`json_serialize_sql`) may reference only the store's own tables and views, the
   query's CTEs and a short list of harmless table functions (unnest, range, generate_series,
   catalogue listings): `read_csv`, `read_parquet`, `glob`, `'/path/file.csv'` and URL
   "replacement scans", `query()` and everything else that reaches outside are refused, and so are
   scalar functions with side effects or host access (nextval, setval, getenv, ...);
3. it runs on its own cursor with Python replacement scans off, a timer that calls
   `interrupt()` after `timeout_s`, and at most `limit` rows are fetched.

Anything refused or timed out raises SQLSandboxError; the store keeps working.
"""

from __future__ import annotations

import json
import threading

import duckdb
import pandas as pd

from lcdash.errors import SQLSandboxError

ALLOWED_TABLE_FUNCTIONS = frozenset(
    {
        "unnest",
        "range",
        "generate_series",
        "duckdb_tables",
        "duckdb_columns",
        "duckdb_views",
        "duckdb_types",
        "duckdb_functions",
        "duckdb_constraints",
        "pragma_table_info",
        "pragma_show",
    }
)
# scalar functions that change state or reach the host; everything that reads files is a table
# function (refused above) but a few scalar ones exist too
FORBIDDEN_FUNCTIONS = frozenset(
    {
        "nextval",
        "setval",
        "currval",
        "getenv",
        "read_text",
        "read_blob",
        "glob",
        "parquet_scan",
        "current_setting",
        "set_config",
        "query",
        "query_table",
        "sniff_csv",
        "load_extension",
        "install_extension",
        "enable_profiling",
        "checkpoint",
        "force_checkpoint",
        "system",
    }
)
_FORBIDDEN_PREFIXES = (
    "read_",
    "parquet_",
    "iceberg_",
    "delta_",
    "sqlite_",
    "postgres_",
    "mysql_",
    "http",
    "s3",
    "pragma_",
    "duckdb_secret",
)
_TABLE_REF_TYPES = frozenset(
    {
        "BASE_TABLE",
        "TABLE_FUNCTION",
        "SUBQUERY",
        "JOIN",
        "EMPTY",
        "EXPRESSION_LIST",
        "PIVOT",
        "SHOW_REF",
        "COLUMN_DATA_REF",
    }
)


def check_query(con: duckdb.DuckDBPyConnection, query: str, allowed_tables: set[str]) -> None:
    """Raise SQLSandboxError unless `query` is one SELECT touching only `allowed_tables`."""
    if not query or not query.strip():
        raise SQLSandboxError("empty query")
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise SQLSandboxError(f"cannot parse the query: {_first_line(exc)}") from exc
    if len(statements) != 1:
        raise SQLSandboxError(f"one statement at a time, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        name = str(kind).split(".")[-1]
        raise SQLSandboxError(f"only SELECT queries are allowed (this is {name}); the SQL box is read-only")
    raw = con.execute("SELECT json_serialize_sql($q)", {"q": query}).fetchall()[0][0]
    tree = json.loads(raw)
    if tree.get("error"):
        raise SQLSandboxError(f"query refused: {tree.get('error_message', 'not a plain SELECT')}")
    ctes: set[str] = set()
    _collect_ctes(tree, ctes)
    allowed = {t.lower() for t in allowed_tables} | {c.lower() for c in ctes}
    _walk(tree, allowed)


def _collect_ctes(node, out: set[str]) -> None:
    if isinstance(node, dict):
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            for entry in cte_map.get("map", []):
                if isinstance(entry, dict) and "key" in entry:
                    out.add(str(entry["key"]))
        for v in node.values():
            _collect_ctes(v, out)
    elif isinstance(node, list):
        for v in node:
            _collect_ctes(v, out)


def _walk(node, allowed: set[str]) -> None:
    if isinstance(node, list):
        for v in node:
            _walk(v, allowed)
        return
    if not isinstance(node, dict):
        return
    # table refs carry alias + sample; query nodes (SELECT_NODE, ...) carry modifiers instead
    is_table_ref = (
        "sample" in node
        and "alias" in node
        and "class" not in node
        and "modifiers" not in node
        and isinstance(node.get("type"), str)
    )
    if is_table_ref:
        ref = node["type"]
        if ref not in _TABLE_REF_TYPES:
            raise SQLSandboxError(f"query refused: {ref.lower().replace('_', ' ')} is not allowed")
        if ref == "BASE_TABLE":
            name = str(node.get("table_name", ""))
            schema = str(node.get("schema_name", "") or "").lower()
            catalog = str(node.get("catalog_name", "") or "").lower()
            ok_schema = schema in ("", "main", "information_schema", "pg_catalog")
            if schema in ("information_schema", "pg_catalog") and catalog in ("", "system", "temp"):
                pass
            elif not ok_schema or catalog not in ("",) or name.lower() not in allowed:
                shown = ".".join(p for p in (catalog, schema, name) if p)
                raise SQLSandboxError(
                    f"query refused: {shown!r} is not a table of this store "
                    f"(tables: {', '.join(sorted(allowed))})"
                )
        elif ref == "TABLE_FUNCTION":
            fn = node.get("function") or {}
            fname = str(fn.get("function_name", "")).lower()
            if fname not in ALLOWED_TABLE_FUNCTIONS:
                raise SQLSandboxError(
                    f"query refused: table function {fname}() reads outside the store "
                    "or is not allowed in the SQL box"
                )
    if node.get("class") == "FUNCTION" or node.get("type") == "FUNCTION":
        fname = str(node.get("function_name", "")).lower()
        if fname in FORBIDDEN_FUNCTIONS or (
            fname.startswith(_FORBIDDEN_PREFIXES) and fname not in ALLOWED_TABLE_FUNCTIONS
        ):
            raise SQLSandboxError(f"query refused: function {fname}() is not allowed in the SQL box")
    for v in node.values():
        if isinstance(v, (dict, list)):
            _walk(v, allowed)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def store_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Names of the store's own tables and views (schema main, no temp objects)."""
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' AND NOT temporary "
        "UNION SELECT view_name FROM duckdb_views() WHERE schema_name = 'main' AND NOT internal "
        "AND NOT temporary"
    ).fetchall()
    return {r[0] for r in rows}


def run_sql(store, query: str, limit: int = 10_000, timeout_s: float = 10) -> pd.DataFrame:
    """Run one read-only SELECT; at most `limit` rows (df.attrs['truncated'] says if there were more)."""
    query = query.strip().rstrip(";").strip() if query else query
    cur = store.cursor()
    try:
        check_query(cur, query, store_tables(cur))
        try:
            cur.execute("SET python_enable_replacements = false")
        except duckdb.Error:  # older DuckDB: the table allow-list already covers Python objects
            pass
        timed_out = threading.Event()

        def stop():
            timed_out.set()
            cur.interrupt()

        timer = threading.Timer(timeout_s, stop)
        timer.daemon = True
        timer.start()
        try:
            cur.execute(query)
            columns = [d[0] for d in cur.description] if cur.description else []
            rows = cur.fetchmany(int(limit) + 1) if limit is not None else cur.fetchall()
        except duckdb.Error as exc:
            if timed_out.is_set():
                raise SQLSandboxError(f"query stopped after the {timeout_s:g} s time limit") from exc
            raise SQLSandboxError(f"query failed: {_first_line(exc)}") from exc
        finally:
            timer.cancel()
        if timed_out.is_set():
            raise SQLSandboxError(f"query stopped after the {timeout_s:g} s time limit")
    finally:
        cur.close()
    truncated = limit is not None and len(rows) > limit
    if truncated:
        rows = rows[:limit]
    df = pd.DataFrame.from_records(rows, columns=_unique(columns))
    df.attrs["truncated"] = truncated
    df.attrs["limit"] = limit
    return df


def _unique(columns: list[str]) -> list[str]:
    """DataFrame-safe column names: repeated names get a suffix."""
    seen: dict[str, int] = {}
    out = []
    for c in columns:
        if c in seen:
            seen[c] += 1
            out.append(f"{c}_{seen[c]}")
        else:
            seen[c] = 0
            out.append(c)
    return out
