"""A self-contained HTML page of search hits: thumbnails inlined, openable in any browser."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipsearch.decode import DecodeError, load_image

THUMBNAIL_PX = 256

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; }}
h1 {{ font-size: 1.2rem; font-weight: 600; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr));
         gap: 1rem; }}
figure {{ margin: 0; background: white; border: 1px solid #ddd; border-radius: 6px;
          padding: .5rem; }}
img {{ width: 100%; height: 200px; object-fit: contain; background: #eee; }}
figcaption {{ font-size: .8rem; overflow-wrap: anywhere; }}
.score {{ font-weight: 600; }}
.missing {{ height: 200px; display: flex; align-items: center; justify-content: center;
            background: #eee; color: #a00; }}
</style></head>
<body><h1>{title}</h1><div class="grid">
{figures}
</div></body></html>
"""


def _thumbnail(path: str) -> str | None:
    """A JPEG data URI of the image, at most THUMBNAIL_PX on its longer side."""
    try:
        image, _ = load_image(path, min_side=THUMBNAIL_PX)
    except DecodeError:
        return None
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def hits_page(title: str, hits: Sequence[dict[str, Any]]) -> str:
    """HTML for hits given as dicts with rank, score and path."""
    figures = []
    for hit in hits:
        path = html.escape(str(hit["path"]))
        uri = _thumbnail(str(hit["path"]))
        picture = (
            f'<img src="{uri}" alt="{path}">' if uri else '<div class="missing">unreadable</div>'
        )
        figures.append(
            f'<figure>{picture}<figcaption><span class="score">#{hit["rank"]} · '
            f"{hit['score']:.3f}</span><br>{path}</figcaption></figure>"
        )
    return _PAGE.format(title=html.escape(title), figures="\n".join(figures))


def write_hits_page(out: Path, title: str, hits: Sequence[dict[str, Any]]) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(hits_page(title, hits), encoding="utf-8")
    return out
