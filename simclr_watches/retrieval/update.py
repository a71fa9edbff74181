"""A catalog that changes without a rebuild: add and remove items, compact, update from the catalog folder.

Annoy cannot add items to a built forest (https://github.com/spotify/annoy), so an index
(format 3, docs/INDEX_FORMAT.md) keeps the rows added since its forest was built in a
separate file that every query scores exactly, and marks removed items hidden instead of
deleting their rows. A compaction rebuilds the forest from the stored live rows (no
re-embedding, ids kept) once the pending changes pass :func:`needs_compaction`'s
threshold, or when asked (``simclr-watches compact``).

Every change is one commit of :mod:`simclr_watches.retrieval.store`, made under the
index's writer lock: readers (a ``Searcher`` in another thread or process) see the index
as before or as after it, and a kill at any moment loses nothing. Files are hashed and
embedded before the lock is taken, against the index as it was then: the lock is held only
to re-read the index (when another writer committed meanwhile), drop what became a
duplicate, and commit.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar, Union

import numpy as np

from simclr_watches import __version__
from simclr_watches.core.clock import utc_now
from simclr_watches.core.errors import ImageReadError, IndexFormatError, SimclrWatchesError
from simclr_watches.core.outputs import check_disjoint
from simclr_watches.retrieval import store
from simclr_watches.retrieval.columns import Columns
from simclr_watches.retrieval.index import (MAX_PENDING, Index, Rows, check_is_index, generation_writes, item_record,
                                            load_index, save_rows, vouch_written)

# Compact once added + removed items exceed min(COMPACT_MAX_PENDING, max(COMPACT_MIN_PENDING, COMPACT_FRACTION *
# live items)): exact scoring of the added rows, the hidden items Annoy is asked to skip, and the manifest that
# lists both stay small beside the forest.
COMPACT_MIN_PENDING = 256
COMPACT_FRACTION = 0.10
COMPACT_MAX_PENDING = 10_000

# An item to remove: its id, or the path of its file.
Selector = Union[int, str, os.PathLike]
T = TypeVar("T")


def run_here(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Calls ``fn``: where :func:`add_items` and :func:`update_index` run the encoder unless told otherwise."""
    return fn(*args, **kwargs)


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
        index: the index afterwards, as this process opened it (a server searches it without
            opening it again).
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
    index: Index | None = field(default=None, repr=False, compare=False)

    def _counts(self, index: Index) -> "UpdateReport":
        self.index = index
        self.live, self.pending_added, self.pending_removed = index.live_count, index.added_count, index.removed_count
        return self


@contextlib.contextmanager
def _locked(directory: Path, opened: Index | None = None) -> Iterator[Index]:
    """The index as it is once this process holds its writer lock, leftovers of killed writers removed.

    Args:
        opened: the index as this process opened it before taking the lock: used as it is
            when no other writer committed since (:meth:`Index.is_current`), not opened again.
            None: the folder's manifest is checked to be an index's before the lock file is made in it.
    """
    if opened is None:
        check_is_index(directory)
    with store.writer_lock(directory):
        index = opened if opened is not None and opened.is_current() else load_index(directory)
        store.clean(directory, index.meta)
        yield index


def _check_same_embedding(before: Index, now: Index, info: Any) -> None:
    """Refuses to store vectors embedded for ``before`` in ``now`` unless both embed alike (a rebuild may not).

    Raises:
        IndexFormatError: ``now`` has another model, preprocessing or crop (``build-index --force`` ran meanwhile).
    """
    now.check_model(info)
    if any(before.meta.get(key) != now.meta.get(key) for key in ("model", "preprocessing", "catalog_view")):
        raise IndexFormatError(f"{now.directory}: the index was rebuilt with other settings while the photos were "
                               "embedded; nothing was changed, run the command again")


def _record(item: dict[str, Any]) -> dict[str, Any]:
    return {k: item[k] for k in ("id", "path", "sha256", "bytes")}


def apply_change(index: Index, new_items: Sequence[dict[str, Any]], new_rows: np.ndarray, hide: Iterable[int], *,
                 skipped: Sequence[tuple[str, str]] | None = None, compact: bool | None = None) -> tuple[bool, Index]:
    """Writes the index with ``new_items`` (rows ``new_rows``) added and rows ``hide`` hidden.

    Call it holding the writer lock, with ``index`` as it is under that lock.

    Args:
        new_rows: (K, W) unit rows in the index's space (:meth:`Index.project` of the embeddings).
        hide: rows of the index, or of the new items after them.
        compact: rebuild the forest from the live rows; None: when :func:`needs_compaction` says so.
        skipped: replaces the manifest's ``skipped`` list (None: kept).

    Returns:
        Whether it compacted, and the index written (opened once, its files vouched for: :func:`vouch_written`).

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
    return compact, vouch_written(index.directory)


def _embed(index: Index, encoder: Any, model: Any, paths: Sequence[Path], batch_size: int, device: str,
           progress: bool):
    """Embeds files as the index's catalog was: its preprocessing (at its catalog sides, with its box view) and its crop."""
    from simclr_watches.retrieval.catalog import embed_catalog

    return embed_catalog(encoder, index.preprocessing, list(paths), index.crop_margin, model, batch_size=batch_size,
                         device=device, progress=progress)


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
              checkpoint: str | None = None, run_model: Callable[..., Any] = run_here) -> UpdateReport:
    """Embeds image files with the index's own model and adds them, without rebuilding the forest.

    A file whose bytes are those of a live item is not added again (``unchanged``); an
    unreadable one is reported (``skipped``) like ``build-index`` does. What
    ``simclr-watches add`` runs; safe while searches read the index.

    The files are hashed and embedded before the writer lock is taken (other writers are not
    held up meanwhile); under the lock, a file whose content another writer added since is
    dropped (``unchanged``).

    Args:
        index_dir: an index folder (format 3).
        paths: image files, or folders searched for images like a catalog.
        batch_size, device, progress: as for ``build-index``.
        model: an already-loaded ``(encoder, ModelInfo)`` (a server keeps one): not loaded again.
        checkpoint: where the index's model is, if not where its manifest says.
        run_model: calls the embedding (``run_model(fn, *args)``): a server runs it on its model thread.

    Raises:
        IndexFormatError: not an index, or the model is not the index's (or no longer: a rebuild
            meanwhile); another writer kept the lock too long.
    """
    directory = Path(index_dir)
    files = _expand(paths)
    index = load_index(directory)
    encoder, info = model or index.load_model(checkpoint)
    index.check_model(info)
    report = UpdateReport(directory)
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
    emb = run_model(_embed, index, encoder, info, todo, batch_size, device, progress)
    report.embedded = len(emb.items)
    report.skipped += [(str(e.path), e.reason) for e in emb.skipped]
    with _locked(directory, index) as now:
        _check_same_embedding(index, now, info)
        # Against the index as it is now: the bytes decoded may differ from those hashed, another writer may have added some.
        live = _live_with_sha256(now, [it.sha256 for it in emb.items])
        keep, next_id = [], now.meta["next_id"]
        for j, item in enumerate(emb.items):
            if item.sha256 in live or any(a["sha256"] == item.sha256 for a in report.added):
                report.unchanged.append((str(item.path), "same content as an item already indexed"))
                continue
            keep.append(j)
            report.added.append(item_record(next_id + len(report.added), item))
        if report.added:
            report.compacted, now = apply_change(now, report.added, now.project(emb.vectors[keep]), ())
    return report._counts(now)


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
            report.compacted, index = apply_change(index, [], np.zeros((0, index.meta["dim"]), np.float32), hide)
    return report._counts(index)


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
            report.compacted, index = apply_change(index, [], np.zeros((0, index.meta["dim"]), np.float32), (),
                                                   compact=True)
    return report._counts(index)


@dataclass
class _CatalogPlan:
    """How the files of a catalog meet an index's live items.

    Attributes:
        keep: rows of live items whose file is still there with the same bytes.
        reuse: ``(file, sha256, row)`` of files whose content some stored row has (its vector is reused).
        todo: files to embed.
    """

    keep: set[int]
    reuse: list[tuple[Path, str, int]]
    todo: list[Path]


def _plan_catalog(index: Index, digests: Sequence[tuple[Path, str]]) -> _CatalogPlan:
    """Matches ``(file, sha256)`` of a catalog to ``index``'s items by path and by content."""
    paths_of, sha_of = index.items.paths(), index.items.sha256s()
    live = [r for r in range(len(index)) if not index.is_hidden(r)]
    by_path = {paths_of[r]: r for r in live}
    by_sha = {sha: r for r, sha in enumerate(sha_of)}  # a removed item's row is still stored
    by_sha.update({sha_of[r]: r for r in live})
    plan = _CatalogPlan(set(), [], [])
    for path, sha in digests:
        row = by_path.get(str(path.resolve()))
        if row is not None and sha_of[row] == sha and row not in plan.keep:
            plan.keep.add(row)
        elif sha in by_sha:
            plan.reuse.append((path, sha, by_sha[sha]))
        else:
            plan.todo.append(path)
    return plan


def update_index(catalog: Path | str, index_dir: Path | str, *, batch_size: int = 32, device: str = "auto",
                 progress: bool = False, model: tuple[Any, Any] | None = None,
                 checkpoint: str | None = None, run_model: Callable[..., Any] = run_here) -> UpdateReport:
    """Brings an index up to date with its catalog folder: what ``build-index --update`` runs.

    Files are matched to items by path and sha256. Only files whose content is in no
    stored row are decoded and embedded; a file moved or copied within the catalog (or
    put back after a removal) reuses its stored vector; items whose file under ``catalog`` is gone,
    changed or now unreadable are removed. Items from outside ``catalog`` (added with ``add`` or
    through ``serve``, whose photos are in ``INDEX/uploads/``) are not the catalog's: they stay.
    The index keeps its model, crop and trees; its ``skipped`` list becomes this run's.

    As in :func:`add_items`, the files are hashed and embedded before the writer lock is
    taken; under the lock they are matched again to the index as it is then (a file whose
    stored row a compaction dropped meanwhile is embedded then).

    Args:
        catalog: the folder the index mirrors (searched like ``build-index`` does).
        index_dir: an index folder (format 3) outside ``catalog``.
        model, checkpoint, run_model: as for :func:`add_items`.

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
    index = load_index(directory)
    encoder, info = model or index.load_model(checkpoint)
    index.check_model(info)
    report = UpdateReport(directory)
    digests, report.skipped = _digests(paths)
    embedded: dict[Path, tuple[Any, np.ndarray]] = {}  # file -> (EmbeddedItem, model embedding)
    failed: dict[Path, str] = {}  # file -> why it could not be embedded

    def embed(now: Index, todo: Sequence[Path]) -> None:
        emb = run_model(_embed, now, encoder, info, todo, batch_size, device, progress)
        report.embedded += len(emb.items)
        embedded.update({Path(it.path): (it, v) for it, v in zip(emb.items, emb.vectors)})
        failed.update({Path(e.path): e.reason for e in emb.skipped})

    embed(index, _plan_catalog(index, digests).todo)
    with _locked(directory, index) as now:
        _check_same_embedding(index, now, info)
        plan = _plan_catalog(now, digests)
        late = [p for p in plan.todo if p not in embedded and p not in failed]
        if late:  # their content's stored row was dropped by a compaction meanwhile: rare, and few
            embed(now, late)
        report.skipped += [(str(p), failed[p]) for p in plan.todo if p in failed]
        new = [embedded[p] for p in plan.todo if p in embedded]
        next_id = now.meta["next_id"]
        for path, sha, row in plan.reuse:
            report.added.append({"id": next_id + len(report.added), "path": str(path.resolve()), "sha256": sha,
                                 "bytes": now.items[row]["bytes"]})
        for item, _ in new:
            report.added.append(item_record(next_id + len(report.added), item))
        root = Path(catalog).resolve()
        live = [r for r in range(len(now)) if not now.is_hidden(r)]
        paths_of = now.items.paths()
        hide = [r for r in live if r not in plan.keep and Path(paths_of[r]).is_relative_to(root)]
        report.removed = [_record(now.items[r]) for r in hide]
        dim = now.meta["dim"]
        fresh = now.project(np.stack([v for _, v in new])) if new else np.zeros((0, dim), np.float32)
        rows = np.concatenate([np.asarray(now.vectors[np.array([r for _, _, r in plan.reuse], dtype=np.int64)],
                                          np.float32).reshape(-1, dim), fresh])
        skipped = sorted(report.skipped)
        if report.added or hide or skipped != [(s["path"], s["reason"]) for s in now.meta["skipped"]]:
            report.compacted, now = apply_change(now, report.added, rows, hide, skipped=skipped)
    return report._counts(now)
