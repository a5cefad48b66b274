"""``clipsearch texts``: store text collections for image→text queries.

``clipsearch texts index FILE --name NAME`` embeds the lines of FILE once;
``clipsearch query --image PATH --texts NAME`` then ranks them without re-encoding (through
``clipsearch.texts.rank_image_against_texts``, which also takes a FILE).
Heavy modules load inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from clipsearch.cli.options import CacheDirOpt, DeviceOpt, EngineOpt, JsonOpt, ModelOpt
from clipsearch.settings import INDEXES_DIR, resolve_index_dir

texts_app = typer.Typer(
    help=(
        "Text collections: captions or labels embedded once, so that "
        "`clipsearch query --image PATH --texts NAME` ranks them without re-encoding."
    ),
    no_args_is_help=True,
)

_PROGRESS_MIN_TEXTS = 4096  # smaller files embed in a few seconds: no progress lines
_PROGRESS_EVERY_S = 5.0


@texts_app.callback()
def _texts() -> None:
    """Text collections: captions or labels embedded once, for image→text queries."""


@texts_app.command("index")
def index(
    file: Annotated[
        Path,
        typer.Argument(
            help="UTF-8 text file, one text per line (blank lines skipped, repeats kept once)."
        ),
    ],
    name: Annotated[
        str,
        typer.Option(
            "--name",
            "-n",
            help=f"Collection name (→ {INDEXES_DIR}/NAME) or directory. Rebuilding replaces it.",
            show_default=False,
        ),
    ],
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    cache_dir: CacheDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Embed the lines of FILE and store them as a text collection (Parquet + FAISS).

    Without --model a rebuilt collection keeps its model; a new one gets the default model.
    """
    from clipsearch.texts import build_collection

    directory = resolve_index_dir(name)
    collection, seconds = build_collection(
        file,
        directory,
        model,
        device=device,
        cache_dir=cache_dir,
        progress=_Progress(),
        engine=engine,
    )
    manifest = collection.manifest
    if as_json:
        result: dict[str, Any] = {
            "collection": str(collection.directory),
            "count": len(collection),
            "model": collection.model_spec,
            "model_identity": collection.identity.as_dict(),
            "source": manifest.source,
            "vector_index": manifest.vector_index.to_json() if manifest.vector_index else None,
            "seconds": round(seconds, 3),
        }
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    assert manifest.source is not None  # a collection records the file it was built from
    print(
        summary_line(
            len(collection), collection.directory, collection.model_spec, seconds, manifest.source
        )
    )


def summary_line(
    count: int, directory: Path, model_spec: str, seconds: float, source: dict[str, Any]
) -> str:
    """``stored 1,234 texts in indexes/NAME (model SPEC, 0.8 s)``, plus what was skipped."""
    noun = "text" if count == 1 else "texts"
    line = f"stored {count:,} {noun} in {_shown(directory)} (model {model_spec}, {seconds:.1f} s)"
    skipped = [
        f"{n:,} {what} line{'s' if n != 1 else ''}"
        for what, n in (
            ("duplicate", source.get("duplicates", 0)),
            ("blank", source.get("blank", 0)),
        )
        if n
    ]
    return line + (f"; skipped {' and '.join(skipped)}" if skipped else "")


def _shown(directory: Path) -> str:
    """A directory as the user would type it: relative under the current directory."""
    try:
        return directory.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(directory)


class _Progress:
    """Plain lines on stderr every few seconds while a large file embeds."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        if total < _PROGRESS_MIN_TEXTS:
            return
        now = time.perf_counter()
        if now - self.last < _PROGRESS_EVERY_S and done < total:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        eta = (total - done) / rate if rate else 0.0
        print(
            f"embedding texts: {done:,}/{total:,} ({rate:,.0f} texts/s, ETA {eta:,.0f} s)",
            file=sys.stderr,
            flush=True,
        )


def print_text_hits(rows: list[dict[str, Any]], as_json: bool = False) -> None:
    """Print ``rank_image_against_texts`` rows: a JSON array, or lines of rank, score, text."""
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    print(_format_text_hits(rows))


def _format_text_hits(rows: Sequence[dict[str, Any]]) -> str:
    """The plain-text table of ``rank_image_against_texts`` rows: rank, score, text."""
    if not rows:
        return "no texts"
    width = len(str(rows[-1]["rank"]))
    return "\n".join(
        f"{row['rank']:>{width}}  {row['score']:.4f}  {' '.join(str(row['text']).split())}"
        for row in rows
    )
