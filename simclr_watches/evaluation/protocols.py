"""Retrieval evaluation protocols: which photos query which gallery, and what counts as a hit.

Protocols (see docs/EVALUATION.md):

* ``groups``: a folder of sub-folders (one per object) or a manifest CSV; every
  photo of a group with 2+ members queries all photos, itself excluded.
* ``catalog-photo``: a manifest CSV; packshots are the gallery, lifestyle photos the queries.
* ``photo``: simulated user photos (:mod:`simclr_watches.data.simulate`) of each
  item's first image query the whole catalog, one task per severity.
* ``attributes``: a CSV of attributes per image (:func:`load_attributes`); scored by
  :func:`simclr_watches.evaluation.runner.attribute_agreement`.

A task is a (Q, G) problem: query files, gallery files, and boolean masks of
relevant and ignored gallery items per query. Ignored items (the query itself,
a byte-identical copy, another group of the same family, another view of the
source item) are neither hits nor misses. Queries never reach the gallery
unignored; :func:`leaks` checks it and :func:`simclr_watches.evaluation.runner.run_task`
refuses a task that leaks.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.data.manifest import Item, load_items, read_csv, resolve_rows
from simclr_watches.core.files import sha256_file

PROTOCOLS = ("groups", "catalog-photo", "photo", "attributes")


@dataclass
class Task:
    """One retrieval problem.

    Attributes:
        name: e.g. ``"groups"`` or ``"photo/hard"``.
        protocol: one of ``PROTOCOLS`` but ``attributes`` (its report columns: ``report.COLUMNS``).
        queries: Q query files.
        gallery: G gallery files.
        relevant: (Q, G) bool.
        ignore: (Q, G) bool, removed from each query's ranking.
        root: folder that display labels are relative to.
    """

    name: str
    protocol: str
    queries: list[Path]
    gallery: list[Path]
    relevant: np.ndarray
    ignore: np.ndarray
    root: Path


def _pair_masks(queries: Sequence[Item], gallery: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
    """(same group, same family but other group) masks, each (Q, G) bool."""
    qg = np.array([q.group for q in queries], object)[:, None]
    gg = np.array([g.group for g in gallery], object)[None, :]
    qf = np.array([q.family for q in queries], object)[:, None]
    gf = np.array([g.family for g in gallery], object)[None, :]
    same_group = qg == gg
    return same_group, (qf == gf) & ~same_group


def identical(queries: Sequence[Path], gallery: Sequence[Path]) -> np.ndarray:
    """(Q, G) bool: the same file, or a file with the same bytes (sha256)."""
    digest = {p: sha256_file(p) for p in dict.fromkeys([*queries, *gallery])}
    qd = np.array([digest[p] for p in queries], object)[:, None]
    gd = np.array([digest[p] for p in gallery], object)[None, :]
    return qd == gd


def _subsample(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``n`` queries, drawn with ``seed``."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise SimclrWatchesError(f"--limit must be >= 1, got {limit}")
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def groups_task(data: Path, kind: str | None = None, limit: int | None = None, seed: int = 0) -> Task:
    """Every photo of a group with 2+ members queries all photos; relevant = rest of its group.

    Singleton groups stay in the gallery as distractors. The query itself,
    byte-identical copies and other groups of its family are ignored.
    """
    items = load_items(data, kind)
    sizes: dict[str, int] = {}
    for it in items:
        sizes[it.group] = sizes.get(it.group, 0) + 1
    queries = [it for it in items if sizes[it.group] > 1]
    if not queries:
        raise SimclrWatchesError(f"{data}: no group has two or more images, so nothing can be queried")
    queries = [queries[i] for i in _subsample(len(queries), limit, seed)]
    qp, gp = [q.path for q in queries], [g.path for g in items]
    same_group, family = _pair_masks(queries, items)
    ignore = identical(qp, gp) | family
    root = data.parent if data.is_file() else data
    return Task("groups", "groups", qp, gp, same_group & ~ignore, ignore, root)


def catalog_photo_task(manifest: Path, limit: int | None = None, seed: int = 0) -> Task:
    """Lifestyle photos query the packshots; relevant = packshots of the same group.

    Packshots of another group of the same family are ignored; a query whose
    group has no packshot counts in ``queries_without_relevant``.
    """
    manifest = Path(manifest)
    if manifest.suffix.lower() != ".csv":
        raise SimclrWatchesError(f"{manifest}: the catalog-photo protocol needs a manifest CSV")
    read_csv(manifest, ["path", "group_id", "kind"])
    items = load_items(manifest)
    gallery = [it for it in items if it.kind == "packshot"]
    queries = [it for it in items if it.kind == "lifestyle"]
    if not gallery or not queries:
        raise SimclrWatchesError(f"{manifest}: needs rows of kind 'packshot' (gallery) and 'lifestyle' (queries)")
    queries = [queries[i] for i in _subsample(len(queries), limit, seed)]
    qp, gp = [q.path for q in queries], [g.path for g in gallery]
    same_group, family = _pair_masks(queries, gallery)
    ignore = identical(qp, gp) | family
    return Task("catalog-photo", "catalog-photo", qp, gp, same_group & ~ignore, ignore, manifest.parent)


def photo_tasks(data: Path, severities: Sequence[str], cache_dir: Path, kind: str | None = None,
                limit: int | None = None, seed: int = 0) -> list[Task]:
    """Simulated photos of each group's first image (by path) query the whole catalog.

    Relevant = the source image; the group's other images (other views of the
    same watch) and other groups of its family are ignored. The simulated
    files are written under ``cache_dir/<severity>/``, which must lie outside
    the data folder so that they can never be scanned into a gallery.
    """
    from simclr_watches.data.simulate import SEVERITIES, simulate_file

    unknown = [s for s in severities if s not in SEVERITIES]
    if unknown or not severities:
        raise SimclrWatchesError(f"unknown severity {', '.join(unknown) or '(none)'}; known: {', '.join(SEVERITIES)}")
    data, cache_dir = Path(data), Path(cache_dir)
    root = data.parent if data.is_file() else data
    if cache_dir.resolve().is_relative_to(root.resolve()):
        raise SimclrWatchesError(f"{cache_dir}: the simulated queries must be written outside the data folder {root}")
    items = load_items(data, kind)
    firsts: dict[str, Item] = {}
    for it in sorted(items, key=lambda it: it.path.as_posix()):
        firsts.setdefault(it.group, it)
    sources = list(firsts.values())
    sources = [sources[i] for i in _subsample(len(sources), limit, seed)]
    gp = [g.path for g in items]
    same_group, family = _pair_masks(sources, items)
    is_source = np.array([[s.path == g for g in gp] for s in sources], bool)
    tasks = []
    for severity in severities:
        qp = []
        for i, s in enumerate(sources):
            # The item's path keys its scene, so a --limit sample does not change any query's pixels.
            key = zlib.crc32(s.path.relative_to(root).as_posix().encode())
            out = cache_dir / severity / f"{i:05d}_{s.group}.jpg"
            qp.append(simulate_file(s.path, out, (seed, key), severity))
        ignore = (same_group & ~is_source) | family | identical(qp, gp)
        tasks.append(Task(f"photo/{severity}", "photo", qp, gp, is_source & ~ignore, ignore, root))
    return tasks


def leaks(task: Task) -> list[tuple[Path, Path]]:
    """(query, gallery) pairs where a query's own file or bytes would be ranked (not ignored)."""
    same = identical(task.queries, task.gallery) & ~task.ignore
    return [(task.queries[q], task.gallery[g]) for q, g in zip(*np.nonzero(same))]


def build_tasks(protocol: str, data: Path, *, severities: Sequence[str] = ("mild", "medium", "hard"),
                cache_dir: Path | None = None, kind: str | None = None, limit: int | None = None,
                seed: int = 0) -> list[Task]:
    """The tasks of a ranking protocol (all but ``attributes``).

    Raises:
        SimclrWatchesError: unknown protocol, or bad data for it.
    """
    if protocol == "groups":
        return [groups_task(data, kind, limit, seed)]
    if protocol == "catalog-photo":
        return [catalog_photo_task(data, limit, seed)]
    if protocol == "photo":
        if cache_dir is None:
            raise SimclrWatchesError("the photo protocol needs a folder for its simulated queries")
        return photo_tasks(data, severities, cache_dir, kind, limit, seed)
    raise SimclrWatchesError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")


@dataclass
class AttributeTable:
    """The ``attributes`` protocol's data: N images and their value of each attribute.

    Attributes:
        paths: N image files.
        values: attribute column -> (N,) object array of strings; ``""`` is unknown.
    """

    paths: list[Path]
    values: dict[str, np.ndarray]


def load_attributes(csv_path: Path, columns: Sequence[str] | None = None) -> AttributeTable:
    """The images of a CSV (column ``path``, relative to the CSV) and their attribute values.

    Args:
        columns: the attribute columns to keep (default: every column but ``path``).

    Raises:
        SimclrWatchesError: missing columns or images, no attribute column.
    """
    csv_path = Path(csv_path)
    rows = read_csv(csv_path, ["path", *(columns or [])])
    attrs = list(columns or [c for c in rows[0] if c != "path"])
    if not attrs:
        raise SimclrWatchesError(f"{csv_path}: no attribute columns besides 'path'")
    paths = resolve_rows(csv_path, rows)
    return AttributeTable(paths, {a: np.array([r[a] for r in rows], object) for a in attrs})
