"""Contact sheets: each query beside its top-k results with scores, as PNG and HTML.

The localised window is drawn on the query, so a person sees what the search
thought the watch was.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Callable, Iterable, Sequence

from PIL import Image, ImageDraw, ImageOps

from simclr_watches.core.atomic import atomic_path, write_text_atomic
from simclr_watches.data.images import load_image
from simclr_watches.core.errors import ImageReadError, SimclrWatchesError
from simclr_watches.core.outputs import HTML, HTML_META, PNG, png_info, prepare_output
from simclr_watches.retrieval.search import QueryResult

THUMB = 160
LABEL_H = 34


def _thumb(path: Path | str, box: Sequence[int] | None = None) -> Image.Image:
    try:
        img = load_image(path).rgb
    except ImageReadError:
        return Image.new("RGB", (THUMB, THUMB), (200, 200, 200))
    if box is not None:
        img = img.copy()
        width = max(2, round(max(img.size) / THUMB * 2))
        ImageDraw.Draw(img).rectangle(list(box), outline=(255, 40, 40), width=width)
    return ImageOps.pad(img, (THUMB, THUMB), color=(255, 255, 255))


def _cell(img: Image.Image, lines: Sequence[str]) -> Image.Image:
    cell = Image.new("RGB", (THUMB, THUMB + LABEL_H), (255, 255, 255))
    cell.paste(img, (0, 0))
    d = ImageDraw.Draw(cell)
    for i, line in enumerate(lines):
        d.text((4, THUMB + 2 + 15 * i), line[:26], fill=(0, 0, 0))
    return cell


def _memo_thumb() -> Callable[[str, Sequence[int] | None], Image.Image]:
    """A thumbnail maker that decodes each (image, box) once: the PNG and the HTML show the same."""
    cache: dict[tuple, Image.Image] = {}

    def thumb(path: str, box: Sequence[int] | None = None) -> Image.Image:
        key = (path, tuple(box) if box is not None else None)
        if key not in cache:
            cache[key] = _thumb(path, box)
        return cache[key]

    return thumb


def render_sheet(results: Sequence[QueryResult], thumb: Callable = _thumb) -> Image.Image:
    """One row per answered query: the query (box drawn), then its results left to right."""
    rows = [r for r in results if r.error is None]
    if not rows:
        raise SimclrWatchesError("no answered query to draw")
    cols = 1 + max(len(r.hits) for r in rows)
    sheet = Image.new("RGB", (cols * (THUMB + 8), len(rows) * (THUMB + LABEL_H + 8)), (235, 235, 235))
    for y, r in enumerate(rows):
        cells = [_cell(thumb(r.query, r.box), ["query", Path(r.query).name])]
        cells += [_cell(thumb(h.path), [f"#{h.rank}  {h.score:.3f}", Path(h.path).parent.name + "/" + Path(h.path).name])
                  for h in r.hits]
        for x, c in enumerate(cells):
            sheet.paste(c, (x * (THUMB + 8) + 4, y * (THUMB + LABEL_H + 8) + 4))
    return sheet


def data_uri(img: Image.Image, quality: int = 85) -> str:
    """The image as an inline JPEG ``data:`` URI, for self-contained HTML pages."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render_html(results: Sequence[QueryResult], thumb: Callable = _thumb) -> str:
    """A self-contained page (thumbnails inlined) with the same content as the PNG sheet."""
    parts = [f"<!doctype html><meta charset='utf-8'>{HTML_META}<title>simclr-watches results</title>",
             "<style>body{font-family:sans-serif}td{text-align:center;font-size:12px;vertical-align:top}</style>"]
    for r in results:
        parts.append(f"<h3>{html.escape(r.query)}</h3>")
        if r.error:
            parts.append(f"<p>error: {html.escape(r.error)}</p>")
            continue
        cells = [f"<td><img src='{data_uri(thumb(r.query, r.box))}'><br>query</td>"]
        cells += [f"<td><img src='{data_uri(thumb(h.path))}'><br>#{h.rank} {h.score:.3f}<br>{html.escape(h.path)}</td>"
                  for h in r.hits]
        parts.append("<table><tr>" + "".join(cells) + "</tr></table>")
    return "\n".join(parts)


def check_sheet(out: Path | str, *, force: bool = False, inputs: Iterable[Path | str | None] = ()) -> None:
    """Checks, before any work, that the sheet ``out`` and its HTML page beside it may be written.

    Raises:
        SimclrWatchesError: not a .png path, or a path that may not be written (see
            :func:`simclr_watches.core.outputs.prepare_output`).
    """
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise SimclrWatchesError(f"{out}: the contact sheet is a .png file (an .html page is written beside it)")
    inputs = list(inputs)
    prepare_output(out, PNG, force=force, inputs=inputs)
    prepare_output(out.with_suffix(".html"), HTML, force=force, inputs=inputs)


def write_sheet(results: Sequence[QueryResult], out: Path | str, *, force: bool = False,
                inputs: Iterable[Path | str | None] = ()) -> list[Path]:
    """Writes ``out`` (PNG) and the HTML page beside it (same name, .html); returns both paths.

    Args:
        force: replace a sheet (and page) that this program wrote earlier.
        inputs: paths the outputs must neither equal nor lie in (the queries, the index).
    """
    out = Path(out)
    check_sheet(out, force=force, inputs=inputs)
    thumb = _memo_thumb()
    with atomic_path(out) as tmp:
        render_sheet(results, thumb).save(tmp, "PNG", pnginfo=png_info())
    return [out, write_text_atomic(out.with_suffix(".html"), render_html(results, thumb))]
