"""A client's ``where`` predicate is SQL run by DuckDB: check it before it runs.

Locally a filter is the user's own SQL. Over HTTP it comes from anyone who can reach the
server, and DuckDB SQL can read files (``read_text('/etc/passwd')``), write them
(``; COPY ... TO``) or run for ever. So a predicate is parsed by DuckDB itself
(``json_serialize_sql``) and accepted only when it is one expression over the catalog's
columns: comparisons, AND/OR/NOT, IN lists, BETWEEN, CASE, casts, LIKE/GLOB/regex and a list
of plain scalar functions; no subqueries, no table functions, no second statement.
As a second line, the predicate runs on a DuckDB connection that has no file access at all
(``rows.RowStore``).
"""

from __future__ import annotations

import functools
import json
import threading
from typing import Any

import duckdb

from clipsearch.errors import ClipsearchError

_PREFIX = "SELECT id FROM catalog WHERE "
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
    "abs round floor ceil ceiling sqrt ln log log2 log10 pow power sign greatest least "
    "coalesce ifnull nullif isnan isinf isfinite",
    # dates and times
    "year month day hour minute second millisecond dayofweek dayofmonth dayofyear week "
    "weekofyear quarter yearweek isodow date_part datepart date_trunc datetrunc date_diff "
    "datediff date_sub datesub strftime strptime try_strptime epoch epoch_ms epoch_us "
    "epoch_ns make_date make_time make_timestamp to_timestamp now today current_date "
    "current_timestamp get_current_timestamp age",
)
ALLOWED_FUNCTIONS = frozenset(name for group in _FUNCTION_GROUPS for name in group.split())

_parser_lock = threading.Lock()
_parser: duckdb.DuckDBPyConnection | None = None


def _serialize(sql: str) -> tuple[int, dict[str, Any]]:
    """(number of statements, the parse tree of the first) as DuckDB parses ``sql``."""
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = duckdb.connect()
        try:
            count = len(_parser.extract_statements(sql))
        except duckdb.Error as exc:
            return 0, {"error": True, "error_message": str(exc).split("\n")[0]}
        if count != 1:
            return count, {}
        text = _parser.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0]
    return count, json.loads(text)


def _without_locations(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: _without_locations(v) for k, v in node.items() if not k.startswith("query_location")
        }
    if isinstance(node, list):
        return [_without_locations(v) for v in node]
    return node


@functools.cache
def _reference_query() -> dict[str, Any]:
    statement = _serialize(_PREFIX + "true")[1]["statements"][0]
    statement["node"]["where_clause"] = None
    return _without_locations(statement)


def _refusal(node: Any) -> str | None:
    """Why this expression tree is not allowed, or None when it is."""
    if isinstance(node, list):
        return next((r for r in map(_refusal, node) if r), None)
    if not isinstance(node, dict):
        return None
    kind = node.get("class")
    if kind is not None and kind not in _ALLOWED_CLASSES:
        return "subqueries are not allowed" if kind == "SUBQUERY" else f"{kind} is not allowed"
    if kind == "FUNCTION" and not node.get("is_operator"):
        name = str(node.get("function_name", "")).lower()
        if name not in ALLOWED_FUNCTIONS or node.get("schema") or node.get("catalog"):
            return f"function {name}() is not allowed"
    return next((r for r in map(_refusal, node.values()) if r), None)


@functools.lru_cache(maxsize=512)
def check_where(where: str) -> str:
    """``where`` when it is a safe single predicate; else a one-line ClipsearchError."""
    if not where.strip():
        raise ClipsearchError("the filter is empty", parameter="where")
    count, parsed = _serialize(_PREFIX + where)
    if parsed.get("error"):
        message = " ".join(str(parsed.get("error_message", "cannot parse")).split())
        raise ClipsearchError(f"invalid filter {where!r}: {message}", parameter="where")
    if count != 1:
        raise ClipsearchError(
            f"invalid filter {where!r}: one predicate only (no ';')", parameter="where"
        )
    statement = _without_locations(parsed["statements"][0])
    clause = statement["node"].pop("where_clause", None)
    statement["node"]["where_clause"] = None
    if clause is None or statement != _reference_query():
        raise ClipsearchError(
            f"invalid filter {where!r}: only a predicate over catalog columns "
            "(no ORDER BY, LIMIT, GROUP BY or UNION)",
            parameter="where",
        )
    reason = _refusal(clause)
    if reason:
        raise ClipsearchError(
            f"invalid filter {where!r}: {reason} over HTTP (a search in your own process "
            "takes any SQL)",
            parameter="where",
        )
    return where
