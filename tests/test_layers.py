"""The house's floors: each package imports only packages on floors below its own (README
"Layout"). Every import counts, also those inside functions and under TYPE_CHECKING: a
deferred import is still a dependency, and a cycle through one is still a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "clipsearch"

# Bottom first. Packages on one floor do not import each other.
FLOORS = [
    {"errors", "settings", "bundled"},
    {"base"},
    {"model", "ocr"},
    {"store"},
    {"ingest", "texts"},
    {"zeroshot"},
    {"query"},
    {"train"},
    {"server"},
    {"demo"},
    {"cli"},
    {"__init__", "__main__"},
]
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}


def _package_of(module: Path, root: Path = PACKAGE) -> str:
    relative = module.relative_to(root)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imported_packages(module: Path) -> set[tuple[str, int]]:
    """(package, line) of every clipsearch package ``module`` imports."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from clipsearch import bundled` imports the package named after the dot.
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "clipsearch" and len(parts) > 1:
                found.add((parts[1], node.lineno))
    return found


def _violations(root: Path = PACKAGE) -> list[str]:
    found = []
    for module in sorted(root.rglob("*.py")):
        package = _package_of(module, root)
        for imported, line in _imported_packages(module):
            if imported == package or imported not in FLOOR:
                continue  # within the package; a module-level name (`__version__`)
            if FLOOR[imported] >= FLOOR[package]:
                where = module.relative_to(root.parent)
                found.append(f"{where}:{line}: {package} imports {imported}")
    return found


def test_every_package_has_a_floor():
    packages = {_package_of(m) for m in PACKAGE.rglob("*.py")}
    assert packages <= set(FLOOR), f"give {sorted(packages - set(FLOOR))} a floor in FLOORS"


def test_packages_import_only_the_floors_below():
    assert _violations() == []


def test_the_check_sees_an_upward_import_and_a_cycle(tmp_path):
    # The check must be able to fail: a store module reaching up into query, deferred.
    fake = tmp_path / "clipsearch"
    (fake / "store").mkdir(parents=True)
    (fake / "query").mkdir()
    (fake / "store" / "catalog.py").write_text(
        "def f():\n    from clipsearch.query.snapshot import Snapshot\n", encoding="utf-8"
    )
    (fake / "query" / "snapshot.py").write_text("import clipsearch.store.catalog\n")
    assert _violations(fake) == ["clipsearch/store/catalog.py:2: store imports query"]
