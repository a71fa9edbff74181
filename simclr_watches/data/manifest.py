"""A catalog's images with their groups: from a folder of sub-folders or a manifest CSV.

What evaluation protocols (:mod:`simclr_watches.evaluation.protocols`) and the box head's
training (:mod:`simclr_watches.detect.train`) read a catalog with. A manifest CSV has a header
line; its ``path`` column is relative to the CSV's folder (``watches-dev/manifest.csv``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.data.images import scan_images


@dataclass(frozen=True)
class Item:
    """A catalog image with its group (one object / watch) and family (colour variants of one model)."""

    path: Path
    group: str
    family: str
    kind: str = ""


def read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV file, checking that ``required`` columns exist and that it has rows."""
    if not path.is_file():
        raise SimclrWatchesError(f"{path}: no such CSV file")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SimclrWatchesError(f"{path}: cannot read CSV: {e}") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise SimclrWatchesError(f"{path}: missing column(s) {', '.join(missing)}; found: {', '.join(header) or 'none'}")
    if not rows:
        raise SimclrWatchesError(f"{path}: no rows")
    return rows


def resolve_rows(manifest: Path, rows: list[dict[str, str]]) -> list[Path]:
    """Image paths of manifest rows, relative to the manifest's folder; each must exist."""
    out = []
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        p = manifest.parent / row["path"]
        if not p.is_file():
            raise SimclrWatchesError(f"{manifest}: line {i}: image {row['path']} does not exist")
        out.append(p)
    return out


def load_items(data: Path, kind: str | None = None) -> list[Item]:
    """The items of a folder of sub-folders or of a manifest CSV.

    In a folder, an image's group is its first sub-folder (an image directly in
    the folder is a group of its own) and the family is the group. A manifest
    needs ``path`` and ``group_id``; ``family`` defaults to the group, and
    ``kind`` is needed when filtering by ``kind``.

    Raises:
        SimclrWatchesError: missing folder or columns, missing images, nothing left.
    """
    data = Path(data)
    if data.suffix.lower() == ".csv":
        rows = read_csv(data, ["path", "group_id"] + (["kind"] if kind else []))
        paths = resolve_rows(data, rows)
        items = [Item(p, r["group_id"], r.get("family") or r["group_id"], r.get("kind", "")) for p, r in zip(paths, rows)]
    else:
        items = []
        for p in scan_images(data):
            parts = p.relative_to(data).parts
            group = parts[0] if len(parts) > 1 else p.stem
            items.append(Item(p, group, group))
    if kind:
        items = [it for it in items if it.kind == kind]
    if not items:
        raise SimclrWatchesError(f"{data}: no images" + (f" of kind {kind!r}" if kind else ""))
    return items
