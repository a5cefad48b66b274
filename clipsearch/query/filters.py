"""A ``where`` filter is SQL run by DuckDB: check it before it runs, whoever sent it.

DuckDB SQL can read files (``read_text('/etc/passwd')``), write them (``; COPY ... TO``),
install extensions (a cast to a type an extension defines downloads it) or run for ever,
and a filter comes from a command line, a Python caller or an HTTP client alike. So a filter
is parsed by DuckDB itself (``json_serialize_sql``) and accepted only when it is one
expression over the catalog's columns: comparisons, AND/OR/NOT, IN lists, BETWEEN, CASE,
casts to built-in types, LIKE/GLOB/regex and a list of plain scalar functions; no
subqueries, no table functions, no second statement. Whatever is accepted is run as
``filter_query`` returns it, so DuckDB executes exactly the text that was checked. The
server, as a second line, runs filters on a DuckDB with no file access at all
(``server.rows``).
"""

from __future__ import annotations

import json
import threading
import unicodedata
from typing import TYPE_CHECKING, Any

from clipsearch.errors import ClipsearchError

if TYPE_CHECKING:
    import duckdb

_PREFIX = "SELECT id FROM catalog WHERE "
# Deeper expressions are refused by DuckDB's parser before their parse tree reaches Python,
# whose JSON decoder and tree walk would run out of stack on a few hundred levels.
MAX_DEPTH = 100
_ALLOWED_CLASSES = frozenset(
    {
        "BETWEEN",
        "CASE",
        "CAST",
        "COLLATE",
        "COLUMN_REF",
        "COMPARISON",
        "CONJUNCTION",
        "CONSTANT",
        "FUNCTION",
        "OPERATOR",
        "TYPE",
    }
)
# Scalar functions with no side effects and bounded cost. Operators (LIKE is ``~~``,
# arithmetic, ``||``) are FUNCTION nodes with is_operator set and are always allowed.
_FUNCTION_GROUPS = (
    # text
    "lower upper lcase ucase length strlen len contains starts_with ends_with prefix suffix "
    "regexp_matches regexp_full_match regexp_extract regexp_replace like_escape ilike_escape "
    "replace substring substr left right trim ltrim rtrim concat concat_ws split_part strpos "
    "instr position reverse parse_filename parse_dirname parse_dirpath",
    # numbers and nulls
    "abs round floor ceil ceiling trunc sqrt ln log log2 log10 pow power sign greatest least "
    "coalesce ifnull nullif isnan isinf isfinite",
    # dates and times
    "year month day hour minute second millisecond dayofweek dayofmonth dayofyear week "
    "weekofyear quarter yearweek isodow date_part datepart date_trunc datetrunc date_diff "
    "datediff date_sub datesub strftime strptime try_strptime epoch epoch_ms epoch_us "
    "epoch_ns make_date make_time make_timestamp to_timestamp now today current_date "
    "current_timestamp get_current_timestamp age",
    # intervals: ``INTERVAL 30 DAY`` parses as to_days(trunc(30))
    "to_years to_quarters to_months to_weeks to_days to_hours to_minutes to_seconds "
    "to_milliseconds to_microseconds",
)
ALLOWED_FUNCTIONS = frozenset(name for group in _FUNCTION_GROUPS for name in group.split())
# Built-in types a cast may name. Any other name is looked up when the query binds, and a
# type an extension defines (INET) makes DuckDB download and install that extension.
_TYPE_GROUPS = (
    "boolean bool logical tinyint int1 smallint int2 short integer int int4 int32 signed "
    "bigint int8 int64 long hugeint int128 utinyint usmallint uinteger ubigint uhugeint "
    "decimal dec numeric float float4 real double float8",
    "varchar text string char bpchar nvarchar blob bytea binary varbinary uuid guid json",
    "date time timestamp datetime timestamp_s timestamp_ms timestamp_us timestamp_ns "
    "timestamptz interval list array",
)
ALLOWED_TYPES = frozenset(
    {name for group in _TYPE_GROUPS for name in group.split()}
    | {"timestamp with time zone", "time with time zone"}
)

_parser_lock = threading.Lock()
_parser: duckdb.DuckDBPyConnection | None = None
_shape: dict[str, Any] | None = None  # see _query_shape


def filter_query(where: str, database: duckdb.DuckDBPyConnection | None = None) -> str:
    """The query for the ids of the catalog rows matching ``where``, once it is checked."""
    return _PREFIX + check_filter(where, database)


def check_filter(where: str, database: duckdb.DuckDBPyConnection | None = None) -> str:
    """``where`` when it is one safe predicate over catalog columns; else a one-line
    ClipsearchError. Parsed on a cursor of ``database`` when given (a reader's own DuckDB:
    a new one costs 15 ms to start), else on this module's."""
    if not where.strip():
        raise ClipsearchError("the filter is empty", parameter="where")
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in where):
        # DuckDB's parser stops at a NUL: what it checked would not be all that runs.
        raise ClipsearchError(
            f"invalid filter {where!r}: control characters are not allowed", parameter="where"
        )
    if database is not None:
        with database.cursor() as parser:
            _limit_depth(parser)
            shape, (count, parsed) = _query_shape(parser), _serialize(parser, _PREFIX + where)
    else:
        with _parser_lock:
            parser = _own_parser()
            shape, (count, parsed) = _query_shape(parser), _serialize(parser, _PREFIX + where)
    if parsed.get("error"):
        message = " ".join(str(parsed.get("error_message", "cannot parse")).split())
        raise ClipsearchError(f"invalid filter {where!r}: {message}", parameter="where")
    if count != 1:
        raise ClipsearchError(
            f"invalid filter {where!r}: one predicate only (no ';')", parameter="where"
        )
    statement = parsed["statements"][0]
    clause = statement["node"].pop("where_clause", None)
    statement["node"]["where_clause"] = None
    if clause is None or statement != shape:
        raise ClipsearchError(
            f"invalid filter {where!r}: only a predicate over catalog columns "
            "(no ORDER BY, LIMIT, GROUP BY or UNION)",
            parameter="where",
        )
    reason = _refusal(clause)
    if reason:
        raise ClipsearchError(
            f"invalid filter {where!r}: {reason} (a filter is one predicate over catalog "
            "columns, with plain functions)",
            parameter="where",
        )
    return where


def _own_parser() -> duckdb.DuckDBPyConnection:
    global _parser
    if _parser is None:
        import duckdb  # ~45 ms: imported where a filter is given, not by every query

        _parser = duckdb.connect(config={"enable_external_access": False})
        _limit_depth(_parser)
    return _parser


def _limit_depth(parser: duckdb.DuckDBPyConnection) -> None:
    parser.execute(f"SET max_expression_depth TO {MAX_DEPTH}")  # this connection's only


def _query_shape(parser: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """The parse tree of a filter query less its filter: what every checked query must be
    once its filter is taken out (no ORDER BY, no UNION, ...)."""
    global _shape
    if _shape is None:
        statement = _parse_tree(parser, _PREFIX + "true")["statements"][0]
        statement["node"]["where_clause"] = None
        _shape = statement
    return _shape


def _serialize(parser: duckdb.DuckDBPyConnection, sql: str) -> tuple[int, dict[str, Any]]:
    """(number of statements, the parse tree of the first) as DuckDB parses ``sql``."""
    import duckdb

    try:
        count = len(parser.extract_statements(sql))
        if count != 1:
            return count, {}
        return count, _parse_tree(parser, sql)
    except duckdb.Error as exc:
        message = str(exc).split("\n")[0]
        if "expression depth" in message:  # DuckDB's advice (SET ...) is not the user's to take
            message = f"nested more than {MAX_DEPTH} levels deep"
        return 0, {"error": True, "error_message": message}


def _parse_tree(parser: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    """DuckDB's parse tree of ``sql``, less where each node was in the text."""
    row = parser.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    assert row is not None  # a SELECT without FROM gives one row
    text = row[0]
    return json.loads(text, object_hook=_without_locations)


def _without_locations(node: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if not k.startswith("query_location")}


def _refusal(tree: Any) -> str | None:
    """Why this expression tree is not allowed, or None when it is (the first reason, left
    to right; a loop, not recursion: a tree may be hundreds of levels deep)."""
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(reversed(node))
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("class")
        if kind is not None and kind not in _ALLOWED_CLASSES:
            return "subqueries are not allowed" if kind == "SUBQUERY" else f"{kind} is not allowed"
        if kind == "FUNCTION" and not node.get("is_operator"):
            name = str(node.get("function_name", "")).lower()
            if name not in ALLOWED_FUNCTIONS or node.get("schema") or node.get("catalog"):
                return f"function {_qualified(node, name)}() is not allowed"
        if kind == "TYPE":
            name = str(node.get("type_name", "")).lower()
            if name not in ALLOWED_TYPES or node.get("schema") or node.get("catalog"):
                return f"type {_qualified(node, name)} is not allowed"
        pending.extend(reversed(list(node.values())))
    return None


def _qualified(node: dict[str, Any], name: str) -> str:
    """``name`` with the catalog and schema it was written with (``main.lower``)."""
    return ".".join(str(part) for part in (node.get("catalog"), node.get("schema"), name) if part)
