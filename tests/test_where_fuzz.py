"""Any `where` text is a result or a one-line error: generated filters (a grammar of catalog
columns, operators, literals, allowed and forbidden functions, second statements, comments,
subqueries; and plain text) against a real small index, through `Index.search` and
`Index.duplicates` on the Parquet parts and on rows held in memory (the server's path), and
a few nasty ones through the real CLI. None may raise anything but a one-line
ClipsearchError, and none may write a file: not in the index, not in the working directory,
not where a generated COPY or ATTACH points, not in DuckDB's extension directory."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from clipsearch.errors import ClipsearchError
from clipsearch.ingest.indexer import IndexOptions, update_index
from clipsearch.query.search import Index
from clipsearch.query.snapshot import Snapshot
from clipsearch.server.rows import RowStore
from clipsearch.zeroshot.classify import Prediction, write_tags

from .conftest import TINY, run_cli

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
# Stands for the scratch folder's path in the filter texts below (known once the test runs).
SCRATCH = "{scratch}"
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,  # no .hypothesis/ folder: this test watches for new files
    suppress_health_check=[HealthCheck.too_slow],  # recursive texts, on a busy machine
)


# -- a small real index, and the places nothing may be written ---------------------------


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> Iterator[dict[str, Path]]:
    """The index (9 photos, one copied byte for byte, zero-shot tags joined in), a scratch
    folder that generated COPY/ATTACH statements name, and the working directory and
    home (DuckDB installs extensions under it) for the module's tests."""
    root = tmp_path_factory.mktemp("where-fuzz")
    photos = root / "photos"
    for c, (name, color) in enumerate(COLORS.items()):
        (photos / name).mkdir(parents=True)
        for i in range(3):
            rng = np.random.default_rng(10 * c + i)
            noise = rng.integers(-40, 40, (48, 64 + 40 * i, 3))
            pixels = np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(photos / name / f"{name} {i}.png")
    shutil.copy(photos / "red" / "red 0.png", photos / "blue" / "copy of red 0.png")
    index_dir = root / "index"
    update_index([photos], index_dir, TINY, IndexOptions(workers=0))
    rows = Snapshot(index_dir).table(["id", "path"]).to_pylist()
    tags = [Prediction(r["path"], Path(r["path"]).parent.name, 0.9, id=r["id"]) for r in rows]
    write_tags(index_dir, tags)

    places = {name: root / name for name in ("scratch", "cwd", "home")}
    for folder in places.values():
        folder.mkdir()
    places["index"] = index_dir
    old_cwd, old_home = Path.cwd(), os.environ.get("HOME")
    os.chdir(places["cwd"])
    os.environ["HOME"] = str(places["home"])
    try:
        yield places
    finally:
        os.chdir(old_cwd)
        if old_home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = old_home


@pytest.fixture(scope="module")
def indexes(places) -> dict[str, Index]:
    """The index read from its Parquet parts, and with its rows in memory (the server's)."""
    on_disk = Index.open(places["index"])
    in_memory = Index.open(places["index"])
    in_memory.snapshot.keep_rows(RowStore(in_memory.snapshot))
    for index in (on_disk, in_memory):  # the model loaded (and whatever that writes) now
        index.search("a photo", k=1)
    return {"parts": on_disk, "memory": in_memory}


def _files(folder: Path) -> dict[str, tuple[int, int] | None]:
    """Everything under ``folder``: each file's relative path → (size, mtime_ns), and each
    folder's → None (a failed extension install leaves folders only)."""
    found: dict[str, tuple[int, int] | None] = {}
    for directory, folders, names in os.walk(folder):
        here = Path(directory)
        for name in folders:
            found[str((here / name).relative_to(folder)) + "/"] = None
        for name in names:
            info = os.stat(here / name)
            found[str((here / name).relative_to(folder))] = (info.st_size, info.st_mtime_ns)
    return found


def _filter_text(template: str, places: dict[str, Path]) -> str:
    return template.replace(SCRATCH, str(places["scratch"]))


def _result_or_one_line_error(call: Callable[[], object]) -> None:
    """Run ``call``: it returns, or raises a ClipsearchError about ``where`` in one line; any
    other exception fails the test."""
    try:
        call()
    except ClipsearchError as exc:
        message = str(exc)
        assert message and len(message.splitlines()) == 1, repr(message)
        assert exc.parameter == "where", message


def _check(indexes: dict[str, Index], places: dict[str, Path], where: str) -> None:
    """The property, for one filter text: result or one-line error everywhere, no writes."""
    before = {name: _files(folder) for name, folder in places.items()}
    for index in indexes.values():
        _result_or_one_line_error(lambda i=index: i.search("a photo", k=4, where=where))
        _result_or_one_line_error(lambda i=index: i.duplicates(where=where))
    for name, folder in places.items():
        assert _files(folder) == before[name], f"{where!r} wrote into {name}"


# -- what filters are made of --------------------------------------------------------------

COLUMNS = st.sampled_from(
    [
        "id",
        "path",
        "width",
        "height",
        "size",
        "mtime_ns",
        "taken_at",
        "indexed_at",
        "format",
        "label",
        "label_probability",
        "embedding",
        "nosuchcolumn",
        '"width"',
        "catalog.path",
        "main.catalog.id",
    ]
)
# Quotes, unicode, backslashes; control characters have plain st.text() below.
TEXTS = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=12)
LITERALS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    TEXTS.map(lambda t: "'" + t.replace("'", "''") + "'"),  # quoted as SQL quotes
    TEXTS.map(lambda t: f"'{t}'"),  # quoted carelessly: a quote inside ends it
    st.sampled_from(
        [
            "NULL",
            "TRUE",
            "FALSE",
            "'%/red/%'",
            "'2023-06-01'",
            "DATE '2023-06-01'",
            "TIMESTAMP '2023-06-01 12:00'",
            "INTERVAL 30 DAY",
            "INTERVAL '1 year'",
            "'nan'::DOUBLE",
            "1e999999",
            "'é ü 日本 🐈'",
            "E'\\n'",
            "$1",
            "?",
        ]
    ),
)
OPERATORS = st.sampled_from(
    [
        *("=", "<>", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "//", "%", "||", "~"),
        *("^@", "AND", "OR", "LIKE", "ILIKE", "GLOB", "IS", "IS NOT", "NOT LIKE", "SIMILAR TO"),
        *("IS DISTINCT FROM", "COLLATE nocase ="),
    ]
)
ALLOWED_FUNCTIONS = [
    "lower",
    "length",
    "year",
    "epoch_ns",
    "coalesce",
    "regexp_matches",
    "strftime",
    "abs",
    "round",
    "starts_with",
    "date_diff",
    "now",
]
FORBIDDEN_FUNCTIONS = [
    "read_text",
    "read_csv",
    "read_parquet",
    "read_blob",
    "glob",
    "getenv",
    "current_setting",
    "count",
    "random",
    "unnest",
    "md5",
    "main.lower",
    "query",
]
FUNCTIONS = st.sampled_from(ALLOWED_FUNCTIONS)
TYPES = st.sampled_from(
    ["INTEGER", "BIGINT", "VARCHAR", "DOUBLE", "DATE", "TIMESTAMP", "BLOB", "INET", "nosuchtype"]
)
FILE_ARGUMENT = st.sampled_from(
    ["'/etc/passwd'", f"'{SCRATCH}/*'", "'*.csv'", "'HOME'", f"'{SCRATCH}/read.csv'"]
)
# Whole statements after a filter, or around it: each would write, read or change DuckDB.
STATEMENTS = [
    f"COPY (SELECT 42) TO '{SCRATCH}/copy.csv'",
    "COPY catalog TO 'catalog.csv'",  # relative: the working directory
    f"COPY (SELECT * FROM catalog) TO '{SCRATCH}/copy.parquet' (FORMAT parquet)",
    f"ATTACH '{SCRATCH}/attached.duckdb' AS attached",
    f"EXPORT DATABASE '{SCRATCH}/export'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "PRAGMA version",
    "SET memory_limit = '1MB'",
    "SET enable_external_access = true",
    "CREATE TABLE made AS SELECT 1",
    "DROP VIEW catalog",
    "CALL pragma_version()",
    "SELECT 1",
]
_ENDINGS = [
    *(f"; {statement}" for statement in STATEMENTS),
    *(f"; {statement}; --" for statement in STATEMENTS),
    *(" --", " -- ; COPY x", " /*", " /* */", ")", " ORDER BY id", " LIMIT 1"),
    *(" UNION SELECT 1", " UNION ALL SELECT id FROM read_csv('x.csv')"),
]
# Half the filters end with their expression, so that DuckDB runs them.
TAILS = st.sampled_from(["" for _ in _ENDINGS] + _ENDINGS)


def _grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Expressions over ``inner`` that a filter may hold (or nearly: types are not checked)."""
    return st.one_of(
        st.tuples(inner, OPERATORS, inner).map(" ".join),
        st.tuples(FUNCTIONS, st.lists(inner, max_size=3)).map(
            lambda f: f"{f[0]}({', '.join(f[1])})"
        ),
        inner.map(lambda e: f"({e})"),
        inner.map(lambda e: f"NOT {e}"),
        st.tuples(inner, TYPES).map(lambda c: f"CAST({c[0]} AS {c[1]})"),
        st.tuples(inner, TYPES).map(lambda c: f"{c[0]}::{c[1]}"),
        st.tuples(inner, st.lists(LITERALS, min_size=1, max_size=3)).map(
            lambda c: f"{c[0]} IN ({', '.join(c[1])})"
        ),
        st.tuples(inner, inner, inner).map(lambda c: f"{c[0]} BETWEEN {c[1]} AND {c[2]}"),
        st.tuples(inner, inner).map(lambda c: f"CASE WHEN {c[0]} THEN {c[1]} END"),
    )


EXPRESSIONS = st.recursive(st.one_of(COLUMNS, LITERALS), _grow, max_leaves=8)
# What reads files or reaches outside the predicate, inside an expression.
HOSTILE = st.one_of(
    st.tuples(st.sampled_from(FORBIDDEN_FUNCTIONS), st.lists(EXPRESSIONS, max_size=2)).map(
        lambda f: f"{f[0]}({', '.join(f[1])})"
    ),
    st.tuples(st.sampled_from(FORBIDDEN_FUNCTIONS), FILE_ARGUMENT).map(lambda f: f"{f[0]}({f[1]})"),
    EXPRESSIONS.map(lambda e: f"id IN (SELECT id FROM catalog WHERE {e})"),
    EXPRESSIONS.map(lambda e: f"EXISTS (SELECT 1 FROM read_text('{SCRATCH}/*') WHERE {e})"),
)
PREDICATES = st.one_of(
    EXPRESSIONS,
    st.tuples(EXPRESSIONS, st.sampled_from([" AND ", " OR "]), HOSTILE).map("".join),
)
FILTERS = st.tuples(PREDICATES, TAILS).map("".join)
# Tokens strung together without a grammar: what a typo or a paste makes.
TOKENS = st.sampled_from(
    [
        "width",
        "path",
        "label",
        ">",
        "=",
        "1",
        "'x'",
        "'",
        '"',
        "(",
        ")",
        ",",
        ";",
        "--",
        "/*",
        "*/",
        "AND",
        "OR",
        "NOT",
        "SELECT",
        "FROM",
        "WHERE",
        "COPY",
        "TO",
        f"'{SCRATCH}/soup.csv'",
        "ATTACH",
        "INSTALL",
        "LOAD",
        "PRAGMA",
        "SET",
        "read_text",
        "getenv",
        "catalog",
        "::",
        "INET",
        "\\",
        "\n",
    ]
)
SOUP = st.lists(TOKENS, min_size=1, max_size=12).map(" ".join)


# -- the properties ------------------------------------------------------------------------


@FUZZ
@given(where=FILTERS)
@example(where=f"1=1; COPY (SELECT 42) TO '{SCRATCH}/copy.csv'")
@example(where="1=1; COPY catalog TO 'catalog.csv'")
@example(where=f"1=1; ATTACH '{SCRATCH}/attached.duckdb' AS attached")
@example(where="path::INET IS NULL")  # a type from an extension: DuckDB would install it
@example(where=" + ".join(["width"] * 300) + " > 0")  # deep: the server's checker overflowed
def test_generated_filters_are_results_or_one_line_errors_and_write_nothing(indexes, places, where):
    _check(indexes, places, _filter_text(where, places))


@settings(FUZZ, max_examples=60)
@given(where=SOUP)
def test_token_soup_is_a_result_or_a_one_line_error(indexes, places, where):
    _check(indexes, places, _filter_text(where, places))


@settings(FUZZ, max_examples=40)
@given(where=st.text(max_size=40))
@example(where="width > 1\x00; COPY (SELECT 1) TO 'nul.csv'")
@example(where="\u2028width > 1")
def test_any_text_is_a_result_or_a_one_line_error(indexes, places, where):
    _check(indexes, places, where)


# -- fixed examples: what must be refused, what must keep working --------------------------


@pytest.mark.parametrize(
    ("where", "fragment"),
    [
        ("length(read_text('/etc/passwd')) > 0", "read_text() is not allowed"),
        ("getenv('HOME') = ''", "getenv() is not allowed"),
        ("EXISTS (SELECT 1 FROM glob('/*'))", "subqueries are not allowed"),
        ("path::INET IS NULL", "type inet is not allowed"),
        ("main.lower(path) = 'x'", "function main.lower() is not allowed"),
        ("1=1; COPY (SELECT 42) TO 'x.csv'", "one predicate only"),
        ("1=1 UNION SELECT 1", "only a predicate"),
        (" + ".join(["width"] * 300) + " > 0", "nested more than 100 levels deep"),
        ("width > 1\x00; COPY (SELECT 1) TO 'x.csv'", "control characters are not allowed"),
    ],
)
def test_reading_writing_and_installing_are_refused_locally(indexes, places, where, fragment):
    for index in indexes.values():
        with pytest.raises(ClipsearchError, match=re.escape(fragment)):
            index.search("a photo", where=where)
    _check(indexes, places, where)


@pytest.mark.parametrize(
    ("where", "matching"),
    [
        ("path LIKE '%/red/%'", 3),
        ("width > 100", 6),  # widths 64, 104, 144 in each colour; the copy of red 0 is 64
        ("width > 1000 AND path LIKE '%/holidays/%'", 0),
        ("label = 'blue' AND label_probability > 0.8", 4),
        ("taken_at >= '2023-06-01'", 0),  # generated PNGs carry no camera date
        ("mtime_ns >= epoch_ns(TIMESTAMP '2023-06-01')", 10),
        ("indexed_at > now() - INTERVAL 30 DAY", 10),
        ("format IN ('PNG', 'JPEG') AND NOT starts_with(path, '/nowhere')", 10),
        ("CASE WHEN width > 100 THEN true ELSE false END", 6),
    ],
)
def test_filters_from_the_docs_keep_working(indexes, where, matching):
    for index in indexes.values():
        assert len(index.search("a photo", k=50, where=where)) == matching, where
        index.duplicates(where=where)


@pytest.mark.parametrize(
    "where",
    [
        "1=1; COPY (SELECT 42) TO 'copied.csv'",
        "path::INET IS NULL",
        "length(read_text('/etc/passwd')) > 0",
    ],
)
def test_the_cli_says_one_line_and_writes_nothing(places, where):
    home = {"HOME": str(places["home"])}
    before = {name: _files(folder) for name, folder in places.items()}
    for command in (["query", "a photo", "--local"], ["duplicates"]):
        args = [*command, "--index", str(places["index"]), "--where", where]
        result = run_cli(*args, cwd=places["cwd"], env=home, timeout=120)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: --where: invalid filter"), result.stderr
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    for name, folder in places.items():
        assert _files(folder) == before[name], f"{where!r} wrote into {name}"


def test_a_filter_holding_the_index_path_is_not_damage(indexes, places):
    """A conversion error quoting a string that holds the index's path is the filter's
    fault: not "index ... is damaged, run clipsearch repair"."""
    where = f"width = '{places['index']}/catalog/x'"
    for index in indexes.values():
        with pytest.raises(ClipsearchError) as caught:
            index.search("a photo", k=4, where=where)
        assert caught.value.parameter == "where" and "damaged" not in str(caught.value)
