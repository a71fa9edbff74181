"""Item metadata as columns (format 3): ids, sha256, sizes and paths of a forest's items, read per item.

A million items' records in one JSON cost seconds to parse on every opening; as columns
in ``.npy`` files (docs/INDEX_FORMAT.md) they are memory-mapped, and a search reads only
the rows it shows. One generation of the forest writes five immutable files:

    ids-G.npy       (F,) int64, strictly ascending item ids (the row of an id: a binary search)
    sha256-G.npy    (F, 32) uint8, the sha256 of each item's file
    sizes-G.npy     (F,) int64, its byte size
    offsets-G.npy   (F + 1,) int64, where each path starts in paths-G.npy (0 first, its length last)
    paths-G.npy     (L,) uint8, the absolute paths as the file system's bytes (``os.fsencode``), one after the other

Columns over SQLite: five flat arrays are validated with a few vectorised passes and read
with no parser at all, while a crafted SQLite file is a whole database engine's input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

COLUMN_ROLES = ("ids", "sha256", "sizes", "offsets", "paths")
MAX_PATH_BYTES = 16384  # one item's path


@dataclass(frozen=True)
class Columns:
    """Records of N items as arrays (each may be a read-only memory map).

    Attributes:
        ids: (N,) int64 item ids.
        sha256: (N, 32) uint8 digests.
        sizes: (N,) int64 byte sizes.
        offsets: (N + 1,) int64 starts of each path in ``paths``, then its length.
        paths: (L,) uint8 paths (``os.fsencode``: UTF-8 but for bytes that are no UTF-8), concatenated.
    """

    ids: np.ndarray
    sha256: np.ndarray
    sizes: np.ndarray
    offsets: np.ndarray
    paths: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> "Columns":
        """Columns of records ``{"id", "path", "sha256", "bytes"}`` (validated ones: no check here)."""
        encoded = [os.fsencode(r["path"]) for r in records]
        offsets = np.zeros(len(records) + 1, np.int64)
        np.cumsum([len(p) for p in encoded], out=offsets[1:])
        return cls(np.array([r["id"] for r in records], np.int64).reshape(-1),
                   np.frombuffer(b"".join(bytes.fromhex(r["sha256"]) for r in records), np.uint8).reshape(-1, 32),
                   np.array([r["bytes"] for r in records], np.int64).reshape(-1),
                   offsets, np.frombuffer(b"".join(encoded), np.uint8))

    def path(self, i: int) -> str:
        return os.fsdecode(bytes(self.paths[int(self.offsets[i]) : int(self.offsets[i + 1])]))

    def record(self, i: int) -> dict[str, Any]:
        """Item ``i`` as the manifest's records read: ``id``, ``path``, ``sha256``, ``bytes``."""
        return {"id": int(self.ids[i]), "path": self.path(i), "sha256": bytes(self.sha256[i]).hex(),
                "bytes": int(self.sizes[i])}

    def all_paths(self) -> list[str]:
        """Every path, in order (reads the whole column)."""
        blob, off = bytes(self.paths), self.offsets.tolist()
        return [os.fsdecode(blob[a:b]) for a, b in zip(off[:-1], off[1:])]

    def all_sha256(self) -> list[str]:
        """Every digest as hex, in order (reads the whole column)."""
        raw = np.ascontiguousarray(self.sha256).tobytes()
        return [raw[i : i + 32].hex() for i in range(0, len(raw), 32)]

    def select(self, rows: np.ndarray) -> "Columns":
        """The items at ``rows`` (int array), in that order, as new in-memory columns."""
        rows = np.asarray(rows, np.int64)
        starts, stops = self.offsets[rows], self.offsets[rows + 1]
        lengths = stops - starts
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return Columns(np.array(self.ids[rows]), np.array(self.sha256[rows]), np.array(self.sizes[rows]), offsets,
                       np.array(self.paths[gather]))

    def concat(self, other: "Columns") -> "Columns":
        return Columns(np.concatenate([self.ids, other.ids]), np.concatenate([self.sha256, other.sha256]),
                       np.concatenate([self.sizes, other.sizes]),
                       np.concatenate([self.offsets[:-1], other.offsets + self.offsets[-1]]),
                       np.concatenate([self.paths, other.paths]))

    def arrays(self) -> dict[str, np.ndarray]:
        """The column files' contents by role (COLUMN_ROLES)."""
        return {"ids": self.ids, "sha256": self.sha256, "sizes": self.sizes, "offsets": self.offsets,
                "paths": self.paths}

    def problem(self) -> str | None:
        """Why these columns (from files, their shapes already checked) are unusable; None when sound.

        Reads every column once: ids strictly ascending from 0 up, sizes not negative, paths
        of 1 to MAX_PATH_BYTES bytes without NUL.
        """
        ids, off, blob = np.asarray(self.ids), np.asarray(self.offsets), np.asarray(self.paths)
        if len(ids) and ids[0] < 0:
            return f"ids: item 0 has a negative id {int(ids[0])}"
        if (np.diff(ids) <= 0).any():
            return f"ids: not strictly ascending at item {int(np.flatnonzero(np.diff(ids) <= 0)[0]) + 1}"
        if (np.asarray(self.sizes) < 0).any():
            return f"sizes: item {int(np.flatnonzero(np.asarray(self.sizes) < 0)[0])} has a negative size"
        lengths = np.diff(off)
        if off[0] != 0 or ((lengths < 1) | (lengths > MAX_PATH_BYTES)).any():
            return f"offsets: paths must be 1..{MAX_PATH_BYTES} bytes each, from offset 0"
        if off[-1] != len(blob):
            return f"offsets: end at {int(off[-1])}, but the paths hold {len(blob)} bytes"
        if (blob == 0).any():
            return f"paths: a path holds a NUL byte (at byte {int(np.flatnonzero(blob == 0)[0])})"
        return None


class Items:
    """Every row's record, read on demand: the forest's items from columns, then the added ones from the manifest.

    ``items[r]`` is row ``r``'s ``{"id", "path", "sha256", "bytes"}`` (plus ``"removed": True``
    for a hidden one); only that row's column entries are read.

    Args:
        forest: the columns of the forest's items (rows ``0..F-1``).
        added: the manifest's records of the rows added since (rows ``F..``).
        removed: ids of the hidden items.
    """

    def __init__(self, forest: Columns, added: Sequence[Mapping[str, Any]], removed: Sequence[int]):
        self.forest, self.added, self.removed = forest, list(added), frozenset(removed)
        self._added_row = {r["id"]: len(forest) + j for j, r in enumerate(self.added)}

    def __len__(self) -> int:
        return len(self.forest) + len(self.added)

    def __getitem__(self, row: int) -> dict[str, Any]:
        row = int(row)
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} out of range for {len(self)} items")
        f = len(self.forest)
        rec = self.forest.record(row) if row < f else {k: self.added[row - f][k] for k in ("id", "path", "sha256", "bytes")}
        if rec["id"] in self.removed:
            rec["removed"] = True
        return rec

    def id(self, row: int) -> int:
        f = len(self.forest)
        return int(self.forest.ids[row]) if row < f else int(self.added[row - f]["id"])

    def row_of(self, item_id: int) -> int | None:
        """The row of the item with this id (hidden or not), or None."""
        ids = self.forest.ids
        i = int(np.searchsorted(ids, item_id))
        if i < len(ids) and int(ids[i]) == item_id:
            return i
        return self._added_row.get(item_id)

    def ids(self) -> np.ndarray:
        """(N,) int64 every row's id (reads the whole column)."""
        return np.concatenate([np.asarray(self.forest.ids), np.array([r["id"] for r in self.added], np.int64)])

    def paths(self) -> list[str]:
        """Every row's path (reads the whole column)."""
        return self.forest.all_paths() + [r["path"] for r in self.added]

    def sha256s(self) -> list[str]:
        """Every row's sha256 as hex (reads the whole column)."""
        return self.forest.all_sha256() + [r["sha256"] for r in self.added]

    def rows_with_sha256(self, digests: Sequence[str]) -> dict[str, list[int]]:
        """The rows (hidden or not) whose file has each of these hex sha256 digests, for those found.

        Vectorised over the column (its first 8 bytes as integers, then exact), so a few
        digests cost a pass over the column, not a record per item.
        """
        wanted = set(digests)
        out: dict[str, list[int]] = {}
        if wanted and len(self.forest):
            col = np.asarray(self.forest.sha256)
            prefix = np.ascontiguousarray(col[:, :8]).view("<u8").ravel()
            keys = np.array([int.from_bytes(bytes.fromhex(d)[:8], "little") for d in wanted], np.uint64)
            for r in np.flatnonzero(np.isin(prefix, keys)).tolist():
                digest = bytes(col[r]).hex()
                if digest in wanted:
                    out.setdefault(digest, []).append(r)
        for j, rec in enumerate(self.added):
            if rec["sha256"] in wanted:
                out.setdefault(rec["sha256"], []).append(len(self.forest) + j)
        return out

    def columns(self, rows: np.ndarray) -> Columns:
        """Columns of the items at ``rows`` (ascending forest rows first, then added rows)."""
        rows = np.asarray(rows, np.int64)
        f = len(self.forest)
        return self.forest.select(rows[rows < f]).concat(Columns.from_records([self.added[r - f] for r in rows[rows >= f]]))
