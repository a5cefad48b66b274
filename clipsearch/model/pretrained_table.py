"""open_clip's table of pretrained tags, read from its source file instead of imported.

``open_clip.pretrained`` holds the table that says where each ``ARCH:TAG``'s weights live on
the Hugging Face hub, but importing it imports torch (seconds). To tell an offline user at
once that weights are missing, the table is read here from the installed file's syntax tree:
module-level assignments of literals, ``dict(...)`` and calls of the file's own config
helpers (``_pcfg(url=..., hf_hub=..., ...)``), whose arguments are the config. Anything
else reads as unknown, so a table this reader does not understand names no hub location and
the real loader decides, as it would have anyway.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path
from typing import Any

QUICKGELU_SUFFIX = "-quickgelu"
_UNKNOWN = object()


def hub_location(arch: str, tag: str) -> str | None:
    """open_clip's ``hf_hub`` entry for ``ARCH:TAG`` ("org/repo/" or "org/repo/file"), or
    None: an unknown architecture or tag, weights only at a URL, or open_clip not here."""
    table = _table()
    tags = table.get(arch)
    if tags is None and arch.endswith(QUICKGELU_SUFFIX):
        # open_clip adds ARCH-quickgelu for every ARCH with tags trained with QuickGELU,
        # by a loop after the table (which this reader does not run).
        base = table.get(arch.removesuffix(QUICKGELU_SUFFIX), {})
        tags = {name: cfg for name, cfg in base.items() if cfg.get("quick_gelu") is True}
    # open_clip's own normalization of a tag (its _clean_tag).
    cfg = (tags or {}).get(tag.lower().replace("-", "_"))
    location = cfg.get("hf_hub") if cfg else None
    return location if isinstance(location, str) and location else None


@cache
def _table() -> dict[str, dict[str, dict[str, Any]]]:
    """architecture → tag → config, as far as the source file says it plainly."""
    found = importlib.util.find_spec("open_clip")  # finds the package without running it
    if found is None or not found.submodule_search_locations:
        return {}
    source = Path(next(iter(found.submodule_search_locations))) / "pretrained.py"
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return {}
    table = _ModuleReader().read(tree).get("_PRETRAINED")
    if not isinstance(table, dict):
        return {}
    return {
        arch: {tag: cfg for tag, cfg in tags.items() if isinstance(cfg, dict)}
        for arch, tags in table.items()
        if isinstance(tags, dict)
    }


class _ModuleReader:
    """Evaluates a module's top-level assignments as far as they are plain data."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {}
        self.functions: dict[str, list[str]] = {}  # the module's functions: parameter names

    def read(self, tree: ast.Module) -> dict[str, Any]:
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                self.functions[node.name] = [a.arg for a in node.args.args]
            elif (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                self.names[node.targets[0].id] = self.value(node.value)
        return self.names

    def value(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.names.get(node.id, _UNKNOWN)
        if isinstance(node, ast.Dict):
            # A None key is a **mapping spread: not plain data, left out.
            keys = [None if k is None else self.value(k) for k in node.keys]
            pairs = zip(keys, node.values, strict=True)
            return {key: self.value(v) for key, v in pairs if isinstance(key, str)}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            # dict(key=...) and the config helpers: what a call is given is the config.
            name = node.func.id
            params = [] if name == "dict" else self.functions.get(name)
            if params is None or len(node.args) > len(params):
                return _UNKNOWN
            positional = zip(params[: len(node.args)], node.args, strict=True)
            given = {param: self.value(arg) for param, arg in positional}
            given.update({kw.arg: self.value(kw.value) for kw in node.keywords if kw.arg})
            return given
        return _UNKNOWN
