"""The sandboxed, read-only SQL runner behind `Store.sql`, the app's SQL box and `lcdash sql`.

Three walls:

1. A transaction that cannot write. The query runs on its own cursor inside `BEGIN TRANSACTION READ
   ONLY`, and only the one parsed statement is executed, so nothing can end that transaction: any
   write to the store (a DELETE inside WITH, nextval, ...) fails in DuckDB itself, in the app (which
   holds the read-write connection) as in `lcdash sql`. (DuckDB 2.0 refuses a second, read-only
   connection to a file this process has open read-write ("different configuration"), and a
   read-only ATTACH of it ("Unique file handle conflict"), hence a read-only transaction.)
2. DuckDB's own limits. Every `Store` connection is opened with `enable_external_access=false` (no
   file, URL, ATTACH or Python-variable access: lcdash reads files with pyarrow/pandas and hands
   DuckDB Arrow tables), extension auto-install/auto-load off and `lock_configuration=true`, so no
   statement can switch any of this back on (see `lcdash.store.duckdb_config`). DuckDB still lets
   such a connection read and write files in its temp directory (<store>.tmp), which is why:
3. A check of the query before it runs: `extract_statements` must give exactly one SELECT, and its
   parse tree (`json_serialize_sql`) may hold only SELECT nodes (INSERT / UPDATE / DELETE / COPY
   bodies of a WITH are refused wherever they sit) and may name only the store's own tables and
   views, WITH entries where DuckDB's binder would resolve the name to them (`_walk`), three
   `information_schema` views and a short list of harmless table functions; settings
   (`pg_settings`, `duckdb_settings()`, `current_setting`), attached databases, files and
   functions with side effects are refused.

Bounds: at most MAX_QUERY_CHARS of query text (parsing is not interruptible), the whole run
(parse, check, execute, fetch, close) in a thread the caller leaves after `timeout_s` plus
INTERRUPT_GRACE_S, at most `limit` rows and MAX_RESULT_BYTES of result. Memory: the store's DuckDB
`memory_limit` covers what DuckDB's buffer manager sees (joins, sorts, aggregates, spilling where it
can); what it does not see is bounded by the other rules: the values of one vector (2,048 rows of
`repeat(x, n)` are allocated before any limit or interrupt is consulted), so every call whose
output size is written in the query (repeat / lpad / rpad / list_resize / bitstring sizes, printf /
format widths, scalar range(), a lambda over a generated list, replace's replacement) counts, sizes
multiply where such calls nest and add up across the query, and the total must stay within
MAX_PER_ROW for values made row by row or MAX_GENERATED for values computed once (`_amplify`);
reductions (list_reduce, which can double a value at each step) are refused. Then the result
(MAX_RESULT_BYTES), and a watchdog that interrupts a query once this process has grown by more
than the memory limit. Anything refused, failed or stopped raises SQLSandboxError with a one-line
message; the store keeps working, and `Store.close()` waits for a stopped query to leave DuckDB
(`stop_queries`). What no rule sees (a long chain of || of a column) still only meets the
watchdog, which stops a query between two vectors: a separate process with its own memory limit
would be the sure bound.
"""

from __future__ import annotations

import json
import os
import threading
import time

import duckdb
import pandas as pd
import pyarrow as pa

from lcdash.errors import SQLSandboxError

MAX_QUERY_CHARS = 100_000  # a 3 MB IN-list took 20 s to parse, outside any interrupt
MAX_RESULT_BYTES = 64 * 2**20  # Arrow bytes fetched into the app / CLI
INTERRUPT_GRACE_S = 2.0  # after the time limit: how long DuckDB gets to stop before we give up

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
# catalogue views a user may read; pg_catalog (pg_settings, pg_database, ...) and the rest of
# information_schema (schemata lists attached databases) are refused
ALLOWED_SYSTEM_VIEWS = frozenset({"tables", "columns", "views"})
# scalar functions that change state or reach the host; everything that reads files is a table
# function (refused above) but a few scalar ones exist too
FORBIDDEN_FUNCTIONS = frozenset(
    {
        "nextval",
        "setval",
        "currval",
        "getenv",
        "getvariable",
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
    "duckdb_setting",
    "duckdb_database",
    "duckdb_extension",
)
# functions whose output size is an argument: one call can allocate gigabytes inside one vector,
# before any memory limit or interrupt is consulted, so the size must be a constant within bounds
SIZE_ARGUMENTS = {
    "repeat": (1,),
    "lpad": (1,),
    "rpad": (1,),
    "list_resize": (1,),
    "array_resize": (1,),
    "bitstring": (1,),
}
RANGE_FUNCTIONS = frozenset({"range", "generate_series"})  # as scalar (list) functions
FORMAT_FUNCTIONS = frozenset({"printf", "format"})  # widths written in the format string
REPLACE_FUNCTIONS = frozenset({"replace", "regexp_replace"})  # each match becomes the replacement
# functions that map a lambda over a list: the lambda's result is made once per element
LAMBDA_FUNCTIONS = frozenset(
    {
        "list_transform",
        "list_apply",
        "array_transform",
        "array_apply",
        "apply",
        "list_filter",
        "array_filter",
        "filter",
        "list_sort",
        "array_sort",
    }
)
# a reduction applies its lambda to its own result: `lambda a, x: a || a` doubles at every step
REDUCE_FUNCTIONS = frozenset({"list_reduce", "array_reduce", "reduce"})
# The size of one value, in elements or characters: sizes multiply when these nest (repeat inside
# repeat, repeat inside a list comprehension over range(n), a printf width inside a lambda, ...), so
# the product along any chain of them is bounded: MAX_GENERATED for a value that is the same in
# every row (computed once), MAX_PER_ROW for one that depends on a column (DuckDB computes 2,048
# rows of it in one vector before any limit or interrupt is consulted: 2,048 x 10,000 x 8 bytes
# is 160 MB).
MAX_GENERATED = 100_000
MAX_PER_ROW = 10_000
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
    if len(query) > MAX_QUERY_CHARS:
        raise SQLSandboxError(
            f"the query is {len(query):,} characters long; the limit is {MAX_QUERY_CHARS:,} "
            "(put long value lists in a label set instead)"
        )
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
    try:
        tree = json.loads(raw)
    except RecursionError as exc:
        raise SQLSandboxError("the query is nested too deeply") from exc
    if tree.get("error"):
        raise SQLSandboxError(f"query refused: {_one_line(tree.get('error_message', 'not a plain SELECT'))}")
    _walk(tree, frozenset(_fold(t) for t in allowed_tables))


def _fold(name) -> str:
    """An identifier as DuckDB compares it: ASCII letters folded, nothing else (str.lower would
    turn the Kelvin sign into 'k' and match a name DuckDB does not)."""
    return str(name or "").translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _cte_entries(node: dict) -> list[tuple[str, object]]:
    """(name, definition) of a query node's WITH entries, in order; anything else is refused."""
    cte_map = node.get("cte_map")
    if cte_map is None:
        return []
    entries = cte_map.get("map") if isinstance(cte_map, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "key" in e for e in entries):
        raise SQLSandboxError("query refused: its WITH clause has a form the SQL box cannot check")
    return [(_fold(e["key"]), e.get("value")) for e in entries]


def _all_cte_names(tree) -> set[str]:
    names, stack = set(), [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if isinstance(node.get("cte_map"), dict):
                names.update(
                    _fold(e.get("key")) for e in node["cte_map"].get("map") or [] if isinstance(e, dict)
                )
            stack.extend(node.values())
    return names


def _walk(tree, tables: frozenset[str]) -> None:
    """Check every node of the parse tree, resolving names the way DuckDB's binder does: a WITH
    entry is visible in the entries after it and in its query (not in its own body, nor in the
    entries before it), a recursive entry also in the recursive term of its own UNION, and a
    qualified name (main.x) is never a WITH entry. Iterative: deep trees cannot overflow."""
    named = _all_cte_names(tree)
    # (node, WITH names visible there, size chain (see _amplify), the expression it is part of)
    stack = [(tree, frozenset(), None, None)]
    totals: dict = {}  # what the size functions make, per row and once (see _amplify)
    while stack:
        node, ctes, chain, root = stack.pop()
        if isinstance(node, list):
            stack.extend((v, ctes, chain, root) for v in node if isinstance(v, (dict, list)))
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        children = dict(node)
        if "cte_map" in node or "info_type" in node or (isinstance(kind, str) and kind.endswith("_NODE")):
            _check_query_node(node)
            root = None  # a query node starts new expressions
            for name, body in _cte_entries(node):
                stack.append((body, ctes, chain, None))  # an entry sees the entries before it
                ctes = ctes | {name}
            children.pop("cte_map", None)
            if kind == "RECURSIVE_CTE_NODE":  # the recursive term (right) sees its own entry
                stack.append((children.pop("left", None), ctes, chain, None))
                right = children.pop("right", None)
                stack.append((right, ctes | {_fold(node.get("cte_name"))}, chain, None))
        if _is_table_ref(node):
            root = None
        elif root is None and "class" in node:
            root = node
        _check_node(node, tables, ctes, named)
        if node.get("class") == "FUNCTION":
            inner = _amplify(node, chain, root, totals)
            args = children.pop("arguments", None) or []
            if _fold(node.get("function_name")) in LAMBDA_FUNCTIONS and args:
                stack.append((args[0], ctes, chain, root))  # the list: its own size, not per element
                args = args[1:]
            stack.extend((a, ctes, inner, root) for a in args if isinstance(a, (dict, list)))
            chain = inner
        stack.extend((v, ctes, chain, root) for v in children.values() if isinstance(v, (dict, list)))


QUERY_NODE_TYPES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE"})
# what DuckDB accepts as a WITH body besides a SELECT, each of which changes the store or writes a file
_WRITING_NODES = {
    "INSERT_QUERY_NODE": "INSERT",
    "UPDATE_QUERY_NODE": "UPDATE",
    "DELETE_QUERY_NODE": "DELETE",
    "MERGE_INTO_QUERY_NODE": "MERGE",
    "COPY_QUERY_NODE": "COPY",
}


def _check_query_node(node: dict) -> None:
    """Only SELECTs (plain, set operations, recursive): the data-modifying and COPY bodies DuckDB
    accepts inside WITH are refused wherever they sit, as is any node type this check does not know."""
    kind = node.get("type")
    if kind in QUERY_NODE_TYPES and "info_type" not in node:
        return
    what = _WRITING_NODES.get(kind) or ("COPY" if "COPY" in str(node.get("info_type", "")) else None)
    if what == "COPY":
        raise SQLSandboxError("query refused: COPY is not allowed in the SQL box, which writes no files")
    if what:
        raise SQLSandboxError(
            f"query refused: {what} is not allowed, even inside WITH; the SQL box is read-only"
        )
    shown = _one_line(str(kind or node.get("info_type") or "unknown").lower().replace("_", " "))
    raise SQLSandboxError(f"query refused: a {shown} is not allowed in the SQL box")


# SHOW TABLES / SHOW ALL TABLES list the store's tables; SHOW DATABASES / SCHEMAS the attached ones
ALLOWED_SHOW_SPECIAL = frozenset({'"tables"', "__show_tables_expanded"})


def _check_name(name: str, schema: str, catalog: str, tables, ctes, named, path=None) -> None:
    """A table name must be one of the store's tables, or a WITH entry visible at that point."""
    path = [_fold(p) for p in path] if isinstance(path, list) else None
    unqualified = not schema and not catalog and (path is None or len(path) <= 1)
    ok = (unqualified and (name in ctes or name in tables)) or (
        schema == "main" and not catalog and name in tables and (path is None or len(path) <= 2)
    )
    if ok:
        return
    shown = ".".join(p for p in (catalog, schema, name) if p)
    hint = "; a WITH entry is seen only by the entries after it and by its query" if name in named else ""
    raise SQLSandboxError(
        f"query refused: {_one_line(repr(shown))} is not a table of this store "
        f"(tables: {', '.join(sorted(tables))}){hint}"
    )


def _is_table_ref(node: dict) -> bool:
    # table refs carry alias + sample; query nodes (SELECT_NODE, ...) carry modifiers instead
    return (
        "sample" in node
        and "alias" in node
        and "class" not in node
        and "modifiers" not in node
        and isinstance(node.get("type"), str)
    )


def _check_node(node: dict, tables: frozenset[str], ctes: frozenset[str], named: set[str]) -> None:
    if _is_table_ref(node):
        ref = node["type"]
        if ref not in _TABLE_REF_TYPES:
            raise SQLSandboxError(f"query refused: {_one_line(ref.lower().replace('_', ' '))} is not allowed")
        path = (node.get("qualified_name") or {}).get("path")
        if ref == "BASE_TABLE":
            name = _fold(node.get("table_name"))
            schema = _fold(node.get("schema_name"))
            catalog = _fold(node.get("catalog_name"))
            system_view = (
                schema == "information_schema"
                and catalog in ("", "system")
                and name in ALLOWED_SYSTEM_VIEWS
                and (not isinstance(path, list) or len(path) <= 3)
            )
            if not system_view:
                _check_name(name, schema, catalog, tables, ctes, named, path)
        elif ref == "SHOW_REF":
            show, name = node.get("show_type"), _fold(node.get("table_name"))
            schema, catalog = _fold(node.get("schema_name")), _fold(node.get("catalog_name"))
            if show == "SHOW_SPECIAL":
                if name not in ALLOWED_SHOW_SPECIAL or schema or catalog:
                    raise SQLSandboxError(
                        f"query refused: SHOW {_one_line(name.strip(chr(34)))} is not allowed"
                    )
            elif show == "SHOW_FROM":
                if schema not in ("", "main") or catalog:
                    raise SQLSandboxError("query refused: SHOW TABLES FROM another schema is not allowed")
            elif name or schema or catalog:  # SHOW x: the store's tables only (DESCRIBE q has a query)
                _check_name(name, schema, catalog, tables, frozenset(), named, path)
        elif ref == "TABLE_FUNCTION":
            fn = node.get("function") or {}
            if isinstance(fn, dict):
                fn["_table_function"] = True  # range() as a table streams: no size check below
            fname = _fold(fn.get("function_name", ""))
            if fname not in ALLOWED_TABLE_FUNCTIONS:
                raise SQLSandboxError(
                    f"query refused: table function {_one_line(fname)}() reads outside the store "
                    "or is not allowed in the SQL box"
                )
    if node.get("class") == "FUNCTION" or node.get("type") == "FUNCTION":
        _check_function(node)


def _check_function(node: dict) -> None:
    fname = _fold(node.get("function_name", ""))
    names = {fname, str(node.get("function_name", "")).lower()}
    if names & FORBIDDEN_FUNCTIONS or any(
        n.startswith(_FORBIDDEN_PREFIXES) and n not in ALLOWED_TABLE_FUNCTIONS for n in names
    ):
        raise SQLSandboxError(f"query refused: function {_one_line(fname)}() is not allowed in the SQL box")
    if node.get("schema") or node.get("catalog"):
        raise SQLSandboxError(f"query refused: qualified function names ({_one_line(fname)}) are not allowed")
    sizes = SIZE_ARGUMENTS.get(fname) or (
        range(len(node.get("arguments") or []))
        if fname in RANGE_FUNCTIONS and not node.get("_table_function")
        else ()
    )
    args = node.get("arguments") or []
    for i in sizes:
        if i < len(args) and not _small_constant(args[i]):
            raise SQLSandboxError(
                f"query refused: the size given to {fname}() must be a number of at most "
                f"{MAX_GENERATED:,} written in the query"
            )


def _amplify(node: dict, chain, root, totals: dict):
    """The size chain below a function call: (product of the size factors of the enclosing
    amplifying calls, whether the expression they sit in (`root`) reads a column). Raises when the
    product passes MAX_PER_ROW (a value made row by row: a big constant concatenated to a column is
    one too) or MAX_GENERATED (a value DuckDB computes once); `totals` sums the products over the
    query, so that 50 calls of 10,000 cannot make 500,000 either."""
    fname = _fold(node.get("function_name"))
    args = [a.get("expression", a) if isinstance(a, dict) else a for a in node.get("arguments") or []]
    if fname in REDUCE_FUNCTIONS:
        raise SQLSandboxError(
            f"query refused: {fname}() is not allowed in the SQL box (a reduction can double a value "
            "at every step); use list_aggregate() or unnest() and an aggregate"
        )
    factor = None
    if fname in SIZE_ARGUMENTS:
        factor = max(abs(_constant_number(args[i]) or 1) for i in SIZE_ARGUMENTS[fname] if i < len(args))
        if fname == "repeat" and args:
            factor *= max(_constant_length(args[0]), 1)  # repeat('abc', n): 3n characters
    elif fname in RANGE_FUNCTIONS and not node.get("_table_function"):
        factor = _range_length(fname, args)
    elif fname in FORMAT_FUNCTIONS:
        factor = _format_width(fname, args[0] if args else None)
    elif fname in REPLACE_FUNCTIONS and len(args) >= 3:
        if not _is_string_constant(args[2]):
            raise SQLSandboxError(
                f"query refused: the replacement given to {fname}() must be a string written in the query"
            )
        factor = max(_constant_length(args[2]), 1)
    elif fname in LAMBDA_FUNCTIONS:
        factor = _generated_length(args[0]) if args else 1
    if factor is None:
        return chain
    product, per_row = chain if chain is not None else (1, _depends_on_data(root or node))
    product *= max(int(factor), 1)
    bound = MAX_PER_ROW if per_row else MAX_GENERATED
    where = "in every row" if per_row else "in one value"
    if product > bound:
        nested = " (sizes multiply when such calls nest)" if chain is not None else ""
        raise SQLSandboxError(
            f"query refused: {fname}() here makes values of up to {product:,} characters or elements "
            f"{where}; the SQL box allows {bound:,}{nested}"
        )
    totals[per_row] = totals.get(per_row, 0) + product  # and they add up across the query
    if totals[per_row] > bound:
        raise SQLSandboxError(
            f"query refused: its size functions together make up to {totals[per_row]:,} characters or "
            f"elements {where}; the SQL box allows {bound:,}"
        )
    return product, per_row


def _generated_length(expr) -> int:
    """Elements of a list generated in the query (range(...), generate_series(...), list_resize(x, n)
    with constants), else 1: a lambda over it runs that many times in each row."""
    if isinstance(expr, dict) and expr.get("class") == "FUNCTION":
        fname = _fold(expr.get("function_name"))
        args = [a.get("expression", a) if isinstance(a, dict) else a for a in expr.get("arguments") or []]
        if fname in RANGE_FUNCTIONS:
            return _range_length(fname, args)
        if fname in ("list_resize", "array_resize") and len(args) > 1:
            return int(abs(_constant_number(args[1]) or 1))
    return 1


def _range_length(fname: str, args) -> int:
    """How many elements range(...) / generate_series(...) with these (constant) arguments gives;
    1 when they are not all constants (a non-constant size is refused by _check_function)."""
    nums = [_constant_number(a) for a in args]
    if not nums or any(n is None for n in nums):
        return 1
    start, stop = (0.0, nums[0]) if len(nums) == 1 else (nums[0], nums[1])
    step = abs(nums[2]) if len(nums) > 2 else 1.0
    if step == 0:
        return 1
    n = abs(stop - start) / step
    return max(int(n) + (1 if fname == "generate_series" or n != int(n) else 0), 1)


def _format_width(fname: str, fmt) -> int:
    """The widths and precisions written in a printf / format string, summed (each one pads a value
    to that many characters); a format that is not a constant, or a width taken from an argument
    ('%*d', '{:{}}'), is refused."""
    import re

    if not _is_string_constant(fmt):
        raise SQLSandboxError(
            f"query refused: the format given to {fname}() must be a string written in the query"
        )
    text = str(fmt["literal"]["text"])
    if fname == "printf":
        specs = re.findall(r"%(?:\d+\$)?([-+ #0']*)(\*|\d+)?(?:\.(\*|\d*))?", text.replace("%%", ""))
        if any("*" in (w or "") or "*" in (p or "") for _, w, p in specs):
            raise SQLSandboxError("query refused: a printf() width or precision taken from an argument ('*')")
        return 1 + sum(int(w or 0) + int(p or 0) for _, w, p in specs)
    text = text.replace("{{", "").replace("}}", "")
    if re.search(r"\{[^{}]*\{", text):
        raise SQLSandboxError("query refused: a format() width taken from an argument ('{:{}}')")
    specs = [f.split(":", 1)[1] for f in re.findall(r"\{([^{}]*)\}", text) if ":" in f]
    return 1 + sum(int(d) for spec in specs for d in re.findall(r"\d+", spec))


def _is_string_constant(expr) -> bool:
    expr = _uncast(expr)
    return (
        isinstance(expr, dict)
        and expr.get("class") == "CONSTANT"
        and isinstance((expr.get("literal") or {}).get("text"), str)
    )


def _uncast(expr):
    while isinstance(expr, dict) and expr.get("class") == "CAST":
        expr = expr.get("child")
    return expr


def _constant_number(expr) -> float | None:
    expr = _uncast(expr)
    if not isinstance(expr, dict) or expr.get("class") != "CONSTANT":
        return None
    try:
        return float((expr.get("literal") or {}).get("text"))
    except (TypeError, ValueError):
        return None


def _constant_length(expr) -> int:
    """Characters of a string constant, elements of a list written in the query; else 1."""
    expr = _uncast(expr)
    if _is_string_constant(expr):
        return len(expr["literal"]["text"])
    if (
        isinstance(expr, dict)
        and expr.get("class") == "FUNCTION"
        and _fold(expr.get("function_name")) == "list_value"
    ):
        return len(expr.get("arguments") or [])
    return 1


def _depends_on_data(node) -> bool:
    """Whether an expression reads a column (or a subquery), other than its own lambdas' parameters:
    then DuckDB computes it row by row instead of once."""
    stack = [(node, frozenset())]
    while stack:
        n, params = stack.pop()
        if isinstance(n, list):
            stack.extend((v, params) for v in n)
            continue
        if not isinstance(n, dict):
            continue
        cls = n.get("class")
        if cls == "LAMBDA":
            lhs = n.get("lhs") or {}
            refs = (
                [lhs]
                if lhs.get("class") == "COLUMN_REF"
                else [a.get("expression", a) for a in lhs.get("arguments") or [] if isinstance(a, dict)]
            )
            names = {_fold((r.get("column_names") or [""])[-1]) for r in refs if isinstance(r, dict)}
            stack.append((n.get("expr"), params | names))
            continue
        if cls == "COLUMN_REF":
            cols = n.get("column_names") or []
            if not (len(cols) == 1 and _fold(cols[0]) in params):
                return True
        if cls == "SUBQUERY" or cls == "STAR":
            return True
        stack.extend((v, params) for v in n.values() if isinstance(v, (dict, list)))
    return False


def _small_constant(arg) -> bool:
    expr = arg.get("expression", arg) if isinstance(arg, dict) else arg
    while isinstance(expr, dict) and expr.get("class") == "CAST":
        expr = expr.get("child")
    if not isinstance(expr, dict) or expr.get("class") != "CONSTANT":
        return False
    try:
        return abs(float((expr.get("literal") or {}).get("text"))) <= MAX_GENERATED
    except (TypeError, ValueError):
        return False


def _one_line(text: str, width: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return _one_line(lines[0]) if lines else type(exc).__name__


def store_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Names of the store's own tables and views (schema main, no temp objects)."""
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' AND NOT temporary "
        "UNION SELECT view_name FROM duckdb_views() WHERE schema_name = 'main' AND NOT internal "
        "AND NOT temporary"
    ).fetchall()
    return {r[0] for r in rows}


def run_sql(store, query: str, limit: int = 10_000, timeout_s: float = 10) -> pd.DataFrame:
    """Run one read-only SELECT; at most `limit` rows (df.attrs['truncated'] says if there were more).

    The query runs in its own thread on its own cursor, so the caller regains control after
    `timeout_s` (+ INTERRUPT_GRACE_S) whatever DuckDB is doing: parsing, executing, or closing.
    """
    query = query.strip().rstrip(";").strip() if isinstance(query, str) else query
    if not isinstance(query, str) or not query:
        raise SQLSandboxError("empty query")
    if len(query) > MAX_QUERY_CHARS:  # before DuckDB parses anything
        raise SQLSandboxError(
            f"the query is {len(query):,} characters long; the limit is {MAX_QUERY_CHARS:,}"
        )
    limit = None if limit is None else max(int(limit), 0)
    state: dict = {}
    started = threading.Event()

    def work():
        try:
            cur = store.cursor()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            state["error"] = exc
            started.set()
            return
        state["cur"] = cur
        started.set()
        try:
            cur.execute("BEGIN TRANSACTION READ ONLY")  # closing the cursor rolls it back
            check_query(cur, query, store_tables(cur))
            state["result"] = _execute(cur, query, limit)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            state["error"] = exc
        finally:
            try:
                cur.close()
            except duckdb.Error:
                pass

    thread = threading.Thread(target=work, name="lcdash-user-sql", daemon=True)
    budget = max(_size_bytes(getattr(store, "memory_limit", None)), 256 * 2**20)
    base = _rss()
    thread.start()
    deadline = time.monotonic() + timeout_s
    why = f"query stopped after the {timeout_s:g} s time limit"
    while thread.is_alive() and time.monotonic() < deadline:
        thread.join(min(0.05, max(deadline - time.monotonic(), 0)))
        if base and _rss() - base > budget:  # memory DuckDB's limit does not see (results, strings)
            why = f"query stopped: it used more than {budget // 2**20:,} MB of memory"
            break
    if thread.is_alive():
        started.wait(INTERRUPT_GRACE_S)
        cur = state.get("cur")
        for _ in range(max(int(INTERRUPT_GRACE_S / 0.05), 1)):  # a starting statement may clear the flag
            if cur is not None:
                try:
                    cur.interrupt()
                except duckdb.Error:
                    pass
            thread.join(0.05)
            if not thread.is_alive():
                break
        if thread.is_alive():  # still inside DuckDB: Store.close() waits for it (stop_queries)
            with _ABANDONED_LOCK:
                _ABANDONED.setdefault(id(store), []).append((thread, state))
        raise SQLSandboxError(why)
    exc = state.get("error")
    if exc is not None:
        raise _as_sandbox_error(exc) from exc
    columns, rows, truncated = state["result"]
    df = pd.DataFrame(dict(enumerate(rows)), columns=range(len(columns)))
    df.columns = _unique(columns)
    df.attrs["truncated"] = truncated
    df.attrs["limit"] = limit
    return df


_ABANDONED: dict[int, list] = {}  # id(store) -> (thread, state) of queries run_sql gave up on
_ABANDONED_LOCK = threading.Lock()


def stop_queries(store, wait_s: float = 30.0) -> bool:
    """Interrupt the queries run_sql stopped waiting for (past their time or memory bound but still
    inside one DuckDB call) and wait for them, so that the store's connection closes cleanly
    instead of "connection is busy" (and the process does not exit under a running query).
    False if one is still running after `wait_s`."""
    with _ABANDONED_LOCK:
        left = _ABANDONED.pop(id(store), [])
    deadline = time.monotonic() + wait_s
    for thread, state in left:
        while thread.is_alive() and time.monotonic() < deadline:
            cur = state.get("cur")
            if cur is not None:
                try:
                    cur.interrupt()
                except duckdb.Error:
                    pass
            thread.join(0.05)
    alive = [(t, st) for t, st in left if t.is_alive()]
    if alive:
        with _ABANDONED_LOCK:
            _ABANDONED.setdefault(id(store), []).extend(alive)
    return not alive


def _execute(cur, query: str, limit: int | None):
    """Fetch at most limit + 1 rows and MAX_RESULT_BYTES: (columns, column values, truncated)."""
    statements = cur.extract_statements(query)
    if len(statements) != 1:  # also without check_query: nothing can end the read-only transaction
        raise SQLSandboxError(f"one statement at a time, got {len(statements)}")
    rel = cur.sql(statements[0])
    columns = list(rel.columns)
    reader = rel.to_arrow_reader(1024)  # streams: rows past the limit are never computed
    batches, n_rows, n_bytes = [], 0, 0
    want = None if limit is None else limit + 1
    for batch in reader:
        if want is not None and n_rows + batch.num_rows > want:
            batch = batch.slice(0, want - n_rows)
        batches.append(batch)
        n_rows += batch.num_rows
        n_bytes += batch.nbytes
        if n_bytes > MAX_RESULT_BYTES:
            raise SQLSandboxError(
                f"the result is larger than {MAX_RESULT_BYTES // 2**20} MB; select fewer rows or columns"
            )
        if want is not None and n_rows >= want:
            break
    reader.close()
    table = pa.Table.from_batches(batches, schema=reader.schema)
    truncated = limit is not None and table.num_rows > limit
    if truncated:
        table = table.slice(0, limit)
    return columns, [col.to_pylist() for col in table.columns], truncated


def _rss() -> int:
    """This process's resident memory in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _size_bytes(text: str | None) -> int:
    """'300MB', '2GB', '4096MiB' -> bytes (0 when unknown)."""
    import re

    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)i?b?\s*", str(text or ""), re.I)
    if not m:
        return 0
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))


def _as_sandbox_error(exc: BaseException) -> SQLSandboxError:
    if isinstance(exc, SQLSandboxError):
        return exc
    if isinstance(exc, RecursionError):
        return SQLSandboxError("the query is nested too deeply")
    if isinstance(exc, duckdb.OutOfMemoryException) or "Out of Memory" in str(exc):
        return SQLSandboxError(
            "query stopped: it needs more memory than the store's limit "
            "(select fewer rows or columns, or aggregate first)"
        )
    if "read-only mode" in str(exc) or "read-only transaction" in str(exc):  # the first wall held
        return SQLSandboxError("query refused: it would change the store, and the SQL box is read-only")
    if isinstance(exc, duckdb.PermissionException):
        return SQLSandboxError(f"query refused: {_first_line(exc)}")
    if isinstance(exc, duckdb.InterruptException):
        return SQLSandboxError("query interrupted")
    if isinstance(exc, duckdb.Error):
        return SQLSandboxError(f"query failed: {_first_line(exc)}")
    return SQLSandboxError(f"query failed: {_first_line(exc) if str(exc).strip() else type(exc).__name__}")


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
