"""Self-contained HTML pages of images (search hits, the demo's results): thumbnails inlined,
openable in any browser, movable anywhere."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipsearch.base.access import OWNER_FILE, write_owner_only
from clipsearch.base.durable import publishing, write_failure
from clipsearch.base.images import DecodeError, load_image
from clipsearch.errors import ClipsearchError

if TYPE_CHECKING:
    from clipsearch.query.duplicates import DuplicateGroup

THUMBNAIL_PX = 256
# Every thumbnail is inlined: a page of thousands of groups would weigh hundreds of MB.
MAX_GROUPS_ON_PAGE = 500

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; }}
h1 {{ font-size: 1.2rem; font-weight: 600; }}
h2 {{ font-size: 1rem; font-weight: 600; margin-top: 1.5rem; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr));
         gap: 1rem; }}
figure {{ margin: 0; background: white; border: 1px solid #ddd; border-radius: 6px;
          padding: .5rem; }}
figure.right {{ border: 3px solid #2a8a2a; }}
figure.wrong {{ border: 3px solid #c33; }}
img {{ width: 100%; height: 200px; object-fit: contain; background: #eee;
       image-rendering: pixelated; }}
figcaption {{ font-size: .8rem; overflow-wrap: anywhere; }}
.score {{ font-weight: 600; }}
.missing {{ height: 200px; display: flex; align-items: center; justify-content: center;
            background: #eee; color: #a00; }}
</style></head>
<body><h1>{title}</h1>
{sections}
</body></html>
"""


@dataclass
class Figure:
    """One image on a page, with its caption."""

    path: str
    heading: str  # shown in bold above the caption
    caption: str = ""
    right: bool | None = None  # a green (True) or red (False) frame when the answer is known


@dataclass
class Section:
    title: str
    figures: list[Figure]
    intro: str = ""  # a paragraph under the title


def _thumbnail(path: str) -> str | None:
    """A PNG data URI of the image, at most THUMBNAIL_PX on its longer side."""
    try:
        image, _ = load_image(path, min_side=THUMBNAIL_PX)
    except DecodeError:
        return None
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    # JPEG for photos; PNG for small images, which JPEG would blur at the page's scale.
    small = max(image.size) < 128
    image.save(buffer, format="PNG" if small else "JPEG", **({} if small else {"quality": 85}))
    kind = "png" if small else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(figure: Figure) -> str:
    path = html.escape(figure.path)
    uri = _thumbnail(figure.path)
    picture = f'<img src="{uri}" alt="{path}">' if uri else '<div class="missing">unreadable</div>'
    frame = {True: ' class="right"', False: ' class="wrong"', None: ""}[figure.right]
    caption = f"<br>{html.escape(figure.caption)}" if figure.caption else ""
    return (
        f'<figure{frame}>{picture}<figcaption><span class="score">'
        f"{html.escape(figure.heading)}</span>{caption}</figcaption></figure>"
    )


def page(title: str, sections: Sequence[Section]) -> str:
    """A page of sections, each a title, a paragraph and a grid of images."""
    parts = []
    for section in sections:
        if section.title:
            parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.intro:
            parts.append(f"<p>{html.escape(section.intro)}</p>")
        figures = "\n".join(_figure(f) for f in section.figures)
        parts.append(f'<div class="grid">\n{figures}\n</div>')
    return _PAGE.format(title=html.escape(title), sections="\n".join(parts))


def hits_page(title: str, hits: Sequence[dict[str, Any]]) -> str:
    """HTML for hits given as dicts with rank, score and path."""
    figures = [
        Figure(str(hit["path"]), f"#{hit['rank']} · {hit['score']:.3f}", _caption(hit))
        for hit in hits
    ]
    return page(title, [Section("", figures)])


def _caption(hit: dict[str, Any]) -> str:
    """The path, and the words found in the photo (the query's in [brackets])."""
    if not hit.get("text"):
        return str(hit["path"])
    from clipsearch.query.words import marked

    return f"{hit['path']} · {marked(hit['text'], hit.get('text_marks') or [])}"


def duplicates_page(groups: Sequence[DuplicateGroup], threshold: float) -> str:
    """HTML for duplicate groups: one row per group, the keeper framed green first."""
    shown = groups[:MAX_GROUPS_ON_PAGE]
    sections = []
    for number, group in enumerate(shown, 1):
        figures = []
        for position, image in enumerate(group.images):
            alike = "identical" if image.identical else f"{image.similarity:.3f}"
            heading = "keep" if position == 0 else alike
            details = [image.dimensions, image.format or "?", f"{image.size / 1e6:.2f} MB"]
            caption = " · ".join([*details, image.path])
            figures.append(Figure(image.path, heading, caption, True if position == 0 else None))
        sections.append(Section(f"Group {number}: {len(group.images)} images", figures))
    more = len(groups) - len(shown)
    intro = (
        f"{len(groups):,} group(s) at threshold {threshold:g}"
        + (f"; the first {len(shown):,} shown (the JSON and path lists hold all)" if more else "")
        + ". Nothing was deleted or moved."
    )
    return page("clipsearch: duplicates", [Section("", [], intro), *sections])


def write_duplicates_page(out: Path, groups: Sequence[DuplicateGroup], threshold: float) -> Path:
    return write_page(out, duplicates_page(groups, threshold))


def write_page(out: Path, text: str) -> Path:
    """Write a page; it inlines small copies of the photos, so it is its owner's alone."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # Whole or not at all: a page replaced while a browser shows it stays readable.
        with publishing(out.with_name(f".{out.name}.tmp"), out, mode=OWNER_FILE) as tmp:
            write_owner_only(tmp, text.encode("utf-8"))
    except OSError as exc:
        raise ClipsearchError(f"cannot write the page {out}: {write_failure(exc)}") from None
    return out


def write_hits_page(out: Path, title: str, hits: Sequence[dict[str, Any]]) -> Path:
    return write_page(out, hits_page(title, hits))
