"""A catalog that changes without a rebuild: add and remove items, compact, update from the catalog folder.

Annoy cannot add items to a built forest (https://github.com/spotify/annoy), so an index
(format 3, docs/INDEX_FORMAT.md) keeps the rows added since its forest was built in a
separate file that every query scores exactly, and marks removed items hidden instead of
deleting their rows. A compaction rebuilds the forest from the stored live rows (no
re-embedding, ids kept) once the pending changes pass :func:`needs_compaction`'s
threshold, or when asked (``simclr-watches compact``).

Every change is one commit of :mod:`simclr_watches.retrieval.store`, made under the
index's writer lock: readers (a ``Searcher`` in another thread or process) see the index
as before or as after it, and a kill at any moment loses nothing.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Union

import numpy as np

from simclr_watches import __version__
from simclr_watches.core.clock import utc_now
from simclr_watches.core.errors import ImageReadError, SimclrWatchesError
from simclr_watches.core.outputs import check_disjoint
from simclr_watches.retrieval import store
from simclr_watches.retrieval.columns import Columns
from simclr_watches.retrieval.index import (MAX_PENDING, Index, Rows, generation_writes, item_record, load_index,
                                            save_rows, vouch_written)

# Compact once added + removed items exceed min(COMPACT_MAX_PENDING, max(COMPACT_MIN_PENDING, COMPACT_FRACTION *
# live items)): exact scoring of the added rows, the hidden items Annoy is asked to skip, and the manifest that
# lists both stay small beside the forest.
COMPACT_MIN_PENDING = 256
COMPACT_FRACTION = 0.10
COMPACT_MAX_PENDING = 10_000

# An item to remove: its id, or the path of its file.
Selector = Union[int, str, os.PathLike]


def needs_compaction(added: int, removed: int, live: int) -> bool:
    """Whether an index with these pending changes should have its forest rebuilt (module constants).

    Args:
        added: rows added since the forest was built (removed since, or not).
        removed: rows of the forest removed since (an added row removed again is one change, not two).
        live: searchable items.
    """
    return added + removed > min(COMPACT_MAX_PENDING, max(COMPACT_MIN_PENDING, COMPACT_FRACTION * live))


@dataclass
class UpdateReport:
    """What a change did to an index.

    Attributes:
        directory: the index folder.
        added: records (``id``, ``path``, ``sha256``, ``bytes``) of the items added.
        removed: records of the items removed (hidden until the next compaction).
        skipped: ``(input, reason)`` of inputs that could not be used: unreadable files,
            unknown ids or paths.
        unchanged: ``(input, reason)`` of inputs with nothing to do (content already indexed).
        embedded: files decoded and embedded (the others' vectors were already stored).
        compacted: whether the forest was rebuilt.
        live, pending_added, pending_removed: the index's items afterwards: searchable, added
            since the forest was built, hidden.
    """

    directory: Path
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unchanged: list[tuple[str, str]] = field(default_factory=list)
    embedded: int = 0
    compacted: bool = False
    live: int = 0
    pending_added: int = 0
    pending_removed: int = 0

    def _counts(self, index: Index) -> "UpdateReport":
        self.live, self.pending_added, self.pending_removed = index.live_count, index.added_count, index.removed_count
        return self


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[Index]:
    """The index as it is once this process holds its writer lock, leftovers of killed writers removed.

    The folder is checked to be an index before the lock file is made in it.
    """
    load_index(directory)
    with store.writer_lock(directory):
        index = load_index(directory)
        store.clean(directory, index.meta)
        yield index


def _record(item: dict[str, Any]) -> dict[str, Any]:
    return {k: item[k] for k in ("id", "path", "sha256", "bytes")}


def apply_change(index: Index, new_items: Sequence[dict[str, Any]], new_rows: np.ndarray, hide: Iterable[int], *,
                 skipped: Sequence[tuple[str, str]] | None = None, compact: bool | None = None) -> bool:
    """Writes the index with ``new_items`` (rows ``new_rows``) added and rows ``hide`` hidden; returns whether it compacted.

    Args:
        new_rows: (K, W) unit rows in the index's space (:meth:`Index.project` of the embeddings).
        hide: rows of the index, or of the new items after them.
        compact: rebuild the forest from the live rows; None: when :func:`needs_compaction` says so.
        skipped: replaces the manifest's ``skipped`` list (None: kept).

    Raises:
        SimclrWatchesError: every item would be hidden with more than MAX_PENDING changes pending
            (no forest can be built of nothing: rebuild instead).
    """
    meta, dim, n = index.meta, index.meta["dim"], len(index)
    new_items = [_record(it) for it in new_items]
    new_ids = [it["id"] for it in new_items]
    removed = set(meta["removed"]) | {index.items.id(r) if r < n else new_ids[r - n] for r in hide}
    count = n + len(new_items)
    live = count - len(removed)
    added_count = count - index.forest_count
    if compact is None:
        in_forest = np.isin(np.array(sorted(removed), np.int64), index.items.ids()[:index.forest_count])
        compact = needs_compaction(added_count, int(in_forest.sum()), live)
    compact = compact and live > 0
    generation = meta["generation"] + 1
    new_rows = np.asarray(new_rows, np.float32).reshape(-1, dim)
    new_meta = {**meta, "package_version": __version__, "generation": generation, "updated": utc_now(),
                "next_id": max([meta["next_id"], *(i + 1 for i in new_ids)])}
    if compact:
        ids = np.concatenate([index.items.ids(), np.array(new_ids, np.int64)])
        keep = np.flatnonzero(~np.isin(ids, np.array(sorted(removed), np.int64)))
        old, fresh = keep[keep < n], keep[keep >= n] - n
        vectors = np.concatenate([np.asarray(index.vectors[old], np.float32), new_rows[fresh]])
        columns = index.items.columns(old).concat(Columns.from_records([new_items[j] for j in fresh]))
        files, writes = generation_writes(generation, vectors, columns, meta["n_trees"], meta["forest_dim"])
        if "projection" in meta["files"]:
            files["projection"] = meta["files"]["projection"]
        new_meta.update(files=files, forest_count=len(keep), count=len(keep), added=[], removed=[])
    else:
        if added_count + len(removed) > MAX_PENDING:
            raise SimclrWatchesError(f"{index.directory}: this change would leave no item and {len(removed)} "
                                     f"removed ones pending (at most {MAX_PENDING}); rebuild the index instead")
        files = {role: name for role, name in meta["files"].items() if role != "added"}
        writes = {}
        if len(new_rows):
            before = index.vectors.added if isinstance(index.vectors, Rows) else np.zeros((0, dim), np.float16)
            files["added"] = store.data_name("added", generation)
            writes[files["added"]] = save_rows(np.concatenate([np.asarray(before, np.float32), new_rows]))
        elif "added" in meta["files"]:
            files["added"] = meta["files"]["added"]
        new_meta.update(files=files, count=count, added=[*meta["added"], *new_items], removed=sorted(removed))
    if skipped is not None:
        new_meta["skipped"] = [{"path": p, "reason": r} for p, r in skipped]
    store.commit(index.directory, new_meta, writes)
    vouch_written(index.directory)
    return compact


def _finish(report: UpdateReport, directory: Path) -> UpdateReport:
    return report._counts(load_index(directory))


def _embed(index: Index, encoder: Any, paths: Sequence[Path], batch_size: int, device: str, progress: bool):
    """Embeds files as the index's catalog was: its preprocessing and its crop."""
    from simclr_watches.data.mask import crop_to_foreground
    from simclr_watches.retrieval.embed import embed_paths

    margin = index.crop_margin
    view = None if margin is None else functools.partial(crop_to_foreground, margin=margin)
    return embed_paths(encoder, index.preprocessing, list(paths), batch_size=batch_size, device=device,
                       progress=progress, view=view)


def _digests(paths: Sequence[Path]) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """``(path, sha256)`` of the readable files, and ``(path, reason)`` of the others."""
    from simclr_watches.data.images import file_digest

    found, skipped = [], []
    for path in paths:
        digest = file_digest(path)
        if isinstance(digest, ImageReadError):
            skipped.append((str(path), digest.reason))
        else:
            found.append((path, digest[0]))
    return found, skipped


def _expand(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given; the images under each folder (as ``build-index`` finds them)."""
    from simclr_watches.data.images import scan_images

    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(scan_images(p) if p.is_dir() else [p])
    return out


def _live_with_sha256(index: Index, digests: Sequence[str]) -> dict[str, int]:
    """digest -> the first live row whose file has it, for the digests some live item has."""
    found = index.items.rows_with_sha256(digests)
    live = {sha: [r for r in rows if not index.is_hidden(r)] for sha, rows in found.items()}
    return {sha: rows[0] for sha, rows in live.items() if rows}


def add_items(index_dir: Path | str, paths: Iterable[str | os.PathLike], *, batch_size: int = 32,
              device: str = "auto", progress: bool = False, model: tuple[Any, Any] | None = None,
              checkpoint: str | None = None) -> UpdateReport:
    """Embeds image files with the index's own model and adds them, without rebuilding the forest.

    A file whose bytes are those of a live item is not added again (``unchanged``); an
    unreadable one is reported (``skipped``) like ``build-index`` does. What
    ``simclr-watches add`` runs; safe while searches read the index.

    Args:
        index_dir: an index folder (format 2).
        paths: image files, or folders searched for images like a catalog.
        batch_size, device, progress: as for ``build-index``.
        model: an already-loaded ``(encoder, ModelInfo)`` (a server keeps one): not loaded again.
        checkpoint: where the index's model is, if not where its manifest says.

    Raises:
        IndexFormatError: not an index, or the model is not the index's; another writer
            kept the lock too long.
    """
    directory = Path(index_dir)
    files = _expand(paths)
    encoder, info = model or load_index(directory).load_model(checkpoint)
    report = UpdateReport(directory)
    with _locked(directory) as index:
        index.check_model(info)
        digests, report.skipped = _digests(files)
        live = _live_with_sha256(index, [sha for _, sha in digests])
        todo, given = [], {}
        for path, sha in digests:
            if sha in live:
                same = index.items[live[sha]]
                report.unchanged.append((str(path), f"same content as item {same['id']} ({same['path']})"))
            elif sha in given:
                report.unchanged.append((str(path), f"same content as {given[sha]}, given before"))
            else:
                given[sha] = path
                todo.append(path)
        emb = _embed(index, encoder, todo, batch_size, device, progress)
        report.embedded = len(emb.items)
        report.skipped += [(str(e.path), e.reason) for e in emb.skipped]
        live.update(_live_with_sha256(index, [it.sha256 for it in emb.items if it.sha256 not in live]))
        keep, next_id = [], index.meta["next_id"]
        for j, item in enumerate(emb.items):  # the bytes decoded may differ from those hashed above
            if item.sha256 in live or any(a["sha256"] == item.sha256 for a in report.added):
                report.unchanged.append((str(item.path), "same content as an item already indexed"))
                continue
            keep.append(j)
            report.added.append(item_record(next_id + len(report.added), item))
        if report.added:
            report.compacted = apply_change(index, report.added, index.project(emb.vectors[keep]), ())
    return _finish(report, directory)


def remove_items(index_dir: Path | str, selectors: Iterable[Selector]) -> UpdateReport:
    """Hides items, chosen by id (an ``int``) or by the path of their file, from every result.

    Their rows stay until the next compaction. Unknown ids and paths are reported in
    ``skipped``. What ``simclr-watches remove`` runs; safe while searches read the index.

    Raises:
        IndexFormatError: not an index; another writer kept the lock too long.
    """
    directory = Path(index_dir)
    report = UpdateReport(directory)
    with _locked(directory) as index:
        by_path: dict[str, list[int]] = {}
        for r, path in enumerate(index.items.paths()):
            if not index.is_hidden(r):
                by_path.setdefault(path, []).append(r)
        hide: list[int] = []
        for s in selectors:
            if isinstance(s, (int, np.integer)) and not isinstance(s, bool):
                row = index.row_of(int(s))
                rows = [] if row is None else [row]
                why = f"no item with id {s} (unknown or already removed)"
            else:
                rows = by_path.get(str(Path(s).expanduser().resolve()), [])
                why = "no item with this path (unknown or already removed)"
            if not rows:
                report.skipped.append((str(s), why))
            for row in rows:
                if row not in hide:
                    hide.append(row)
                    report.removed.append(_record(index.items[row]))
        if hide:
            report.compacted = apply_change(index, [], np.zeros((0, index.meta["dim"]), np.float32), hide)
    return _finish(report, directory)


def compact(index_dir: Path | str) -> UpdateReport:
    """Rebuilds the forest from the stored rows of the live items and swaps it in; ids are kept.

    No image is read or embedded. Does nothing when no item was added or removed since
    the forest was built. What ``simclr-watches compact`` runs; safe while searches read the index.

    Raises:
        IndexFormatError: not an index; another writer kept the lock too long.
        SimclrWatchesError: every item is removed: there is nothing to build a forest of.
    """
    directory = Path(index_dir)
    report = UpdateReport(directory)
    with _locked(directory) as index:
        if index.added_count or index.removed_count:
            if index.live_count == 0:
                raise SimclrWatchesError(f"{directory}: every item is removed, there is nothing to build a forest "
                                         "of; add items first or rebuild it with build-index --force")
            report.compacted = apply_change(index, [], np.zeros((0, index.meta["dim"]), np.float32), (), compact=True)
    return _finish(report, directory)


def update_index(catalog: Path | str, index_dir: Path | str, *, batch_size: int = 32, device: str = "auto",
                 progress: bool = False, model: tuple[Any, Any] | None = None,
                 checkpoint: str | None = None) -> UpdateReport:
    """Brings an index up to date with its catalog folder: what ``build-index --update`` runs.

    Files are matched to items by path and sha256. Only files whose content is in no
    stored row are decoded and embedded; a file moved or copied within the catalog (or
    put back after a removal) reuses its stored vector; items whose file under ``catalog`` is gone,
    changed or now unreadable are removed. Items from outside ``catalog`` (added with ``add`` or
    through ``serve``, whose photos are in ``INDEX/uploads/``) are not the catalog's: they stay.
    The index keeps its model, crop and trees; its ``skipped`` list becomes this run's.

    Args:
        catalog: the folder the index mirrors (searched like ``build-index`` does).
        index_dir: an index folder (format 2) outside ``catalog``.
        model, checkpoint: as for :func:`add_items`.

    Raises:
        SimclrWatchesError: the catalog has no image file, or overlaps the index.
        IndexFormatError: not an index, or the model is not the index's.
    """
    from simclr_watches.data.images import scan_images

    directory = Path(index_dir)
    check_disjoint(directory, [catalog])
    paths = scan_images(catalog)
    if not paths:
        raise SimclrWatchesError(f"{catalog}: no image files (jpg, jpeg, png, webp, bmp, tif, tiff) found")
    encoder, info = model or load_index(directory).load_model(checkpoint)
    report = UpdateReport(directory)
    with _locked(directory) as index:
        index.check_model(info)
        paths_of, sha_of = index.items.paths(), index.items.sha256s()
        live = [r for r in range(len(index)) if not index.is_hidden(r)]
        by_path = {paths_of[r]: r for r in live}
        by_sha = {sha: r for r, sha in enumerate(sha_of)}  # a removed item's row is still stored
        by_sha.update({sha_of[r]: r for r in live})
        digests, report.skipped = _digests(paths)
        keep: set[int] = set()
        reuse: list[tuple[Path, str, int]] = []  # (file, sha256, row whose vector it reuses)
        todo: list[Path] = []
        for path, sha in digests:
            row = by_path.get(str(path.resolve()))
            if row is not None and sha_of[row] == sha and row not in keep:
                keep.add(row)
            elif sha in by_sha:
                reuse.append((path, sha, by_sha[sha]))
            else:
                todo.append(path)
        emb = _embed(index, encoder, todo, batch_size, device, progress)
        report.embedded = len(emb.items)
        report.skipped += [(str(e.path), e.reason) for e in emb.skipped]
        next_id = index.meta["next_id"]
        for path, sha, row in reuse:
            report.added.append({"id": next_id + len(report.added), "path": str(path.resolve()), "sha256": sha,
                                 "bytes": index.items[row]["bytes"]})
        for item in emb.items:
            report.added.append(item_record(next_id + len(report.added), item))
        root = Path(catalog).resolve()
        hide = [r for r in live if r not in keep and Path(paths_of[r]).is_relative_to(root)]
        report.removed = [_record(index.items[r]) for r in hide]
        rows = np.concatenate([np.asarray(index.vectors[np.array([r for _, _, r in reuse], dtype=np.int64)], np.float32),
                               index.project(emb.vectors).reshape(-1, index.meta["dim"])])
        skipped = sorted(report.skipped)
        if report.added or hide or skipped != [(s["path"], s["reason"]) for s in index.meta["skipped"]]:
            report.compacted = apply_change(index, report.added, rows, hide, skipped=skipped)
    return _finish(report, directory)
