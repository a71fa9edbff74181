"""Search: embed query photos with the index's own model and return the nearest catalog items."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from PIL import Image

from simclr_watches.core.errors import ImageReadError, SimclrWatchesError
from simclr_watches.data.images import PILLOW_ERRORS, Photo, try_load_image
from simclr_watches.data.mask import crop_and_backdrop
from simclr_watches.core.device import resolve_device, torch_threads
from simclr_watches.model import EnsembleEncoder, fold_batchnorm
from simclr_watches.retrieval.boxes import BoxScorer, BoxSearchConfig, box_or_windows
from simclr_watches.retrieval.catalog import catalog_box_view, catalog_finder
from simclr_watches.retrieval.embed import PhotoView, as_catalog, embed_paths, embed_tensors, fit_photo
from simclr_watches.retrieval.index import SIDECAR_FILE, Index, load_index
from simclr_watches.retrieval.localize import LocalizeConfig
from simclr_watches.retrieval.projection import unit_rows
from simclr_watches.retrieval.query_descriptor import descriptor_layout, is_packshot, query_vectors
from simclr_watches.retrieval.scoring import AnnoyCandidates, LocalizedQuery, LocalizedScorer

# How search finds the watch in a query photo (`search --locate`): the learnt box or multi-scale windows.
LOCATE_MODES = ("box", "windows")


def locate_config(mode: str, box_head: str | None = None) -> BoxSearchConfig | LocalizeConfig:
    """The localisation of a ``--locate`` mode: ``box`` (with ``box_head``, default the shipped head) or ``windows``.

    Raises:
        SimclrWatchesError: an unknown mode, or a box head given with windows.
    """
    if mode not in LOCATE_MODES:
        raise SimclrWatchesError(f"--locate must be one of {', '.join(LOCATE_MODES)}, got {mode!r}")
    if mode == "windows":
        if box_head is not None:
            raise SimclrWatchesError("--box-head needs --locate box")
        return LocalizeConfig()
    return BoxSearchConfig(head=box_head)


# A query: a photo's path (labelled by itself) or a (label, path) pair.
Query = Union[str, os.PathLike, tuple[str, Path]]


@dataclass(frozen=True)
class Hit:
    """One catalog item found: its 1-based rank, its path as indexed (absolute), its cosine similarity, its item id."""

    rank: int
    path: str
    score: float
    id: int


@dataclass
class QueryResult:
    """The answer to one query; ``error`` says why a query could not be answered.

    Attributes:
        query: the query's label (its path as given, unless labelled otherwise).
        hits: the catalog items found, best first.
        error: why the query could not be answered (then ``hits`` is empty); None when it was.
        box: where the watch was found, ``[x0, y0, x1, y1]`` (pixels of the query as decoded),
            when localisation was on: the learnt box's region, or the window, that matched the
            top result best.
    """

    query: str
    hits: list[Hit] = field(default_factory=list)
    error: str | None = None
    box: list[int] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"query": self.query}
        if self.box is not None:
            out["box"] = self.box
        out["results"] = [{"rank": h.rank, "id": h.id, "path": h.path, "score": round(h.score, 6)} for h in self.hits]
        return out


def _labelled(query: Query) -> tuple[str, Path]:
    """A query as ``(label, path)``: a plain path is labelled by itself."""
    if isinstance(query, (str, os.PathLike)):
        return str(query), Path(query)
    label, path = query
    return label, Path(path)


class Searcher:
    """An index together with the encoder that built it: what ``simclr-watches search`` runs.

    Example::

        searcher = Searcher("my-index")
        result = searcher.search_one("photo.jpg", top_k=5)
        best = result.hits[0].path

    Args:
        index_dir: a folder written by ``build-index`` (or :func:`simclr_watches.build_index`).
        checkpoint: the model to embed queries with; default: the one recorded in the index.
            Either way its weights must be those the index was built with.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        localize: how to find the watch in the query (docs/LOCALISATION.md): the learnt box
            (:class:`BoxSearchConfig`, the default; windows when the index's model is not the one
            the shipped box head reads) or windows (:class:`LocalizeConfig`); None embeds whole images.

    Raises:
        IndexFormatError: the folder is not a valid index, or was built with other weights.
        CheckpointError: the model cannot be loaded.
    """

    def __init__(self, index_dir: Path | str, checkpoint: str | None = None, device: str = "auto",
                 localize: BoxSearchConfig | LocalizeConfig | None = BoxSearchConfig()):
        self.index: Index = load_index(index_dir)
        self.encoder, self.model = self.index.load_model(checkpoint)
        self.device = resolve_device(device)
        self.encoder = fold_batchnorm(self.encoder.to(self.device).eval()).to(memory_format=torch.channels_last)
        # On the CPU an ensemble's members run side by side, each on one torch thread: a query
        # keeps two cores busy without OpenMP teams, whose waits for a descheduled thread make
        # two intra-op threads several times slower than one on a shared machine.
        self.threads: int | None = None
        if isinstance(self.encoder, EnsembleEncoder) and self.device.type == "cpu":
            self.encoder.parallel, self.threads = True, 1
        self.localize, self.finder = localize, None
        if isinstance(localize, BoxSearchConfig):  # windows instead when the shipped head does not fit this model
            self.localize, self.finder = box_or_windows(localize, self.encoder, self.model, self.device)
        # A packshot query is described as the catalog is, around its learnt box too when the model's catalog is.
        self.catalog_box = catalog_box_view(catalog_finder(self.encoder, self.model, self.device, self.finder),
                                            self.model.preprocessing, self.device)
        self._refreshing = threading.Lock()

    def refresh(self, opened: Index | None = None) -> bool:
        """Loads the index again if it changed on disk (an add, remove, compaction or rebuild); returns whether it did.

        Cheap when nothing changed: one ``stat`` of the manifest. Thread-safe: a search
        running meanwhile finishes on the index it started with, and the next one uses
        the new index.

        Args:
            opened: the index as this process has just opened it (a change's
                :attr:`~simclr_watches.retrieval.update.UpdateReport.index`): taken instead of
                opening the folder again while it is still the one on disk.

        Raises:
            IndexFormatError: the index on disk is now invalid, or was rebuilt with another
                model (the index loaded before stays in use).
        """
        with self._refreshing:
            try:
                st = os.stat(self.index.directory / SIDECAR_FILE)
            except OSError:
                st = None  # mid-swap or gone: load_index says which
            if st is not None and (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size) == self.index.stamp:
                return False
            same = opened is not None and st is not None and opened.directory == self.index.directory
            if same and (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size) == opened.stamp:
                fresh = opened
            else:
                fresh = load_index(self.index.directory)
            fresh.check_model(self.model)
            changed = fresh.stamp != self.index.stamp
            self.index = fresh
            return changed

    def item(self, item_id: int) -> dict[str, Any] | None:
        """The live item ``item_id`` (``id``, ``path``, ``sha256``, ``bytes``); None if unknown or removed."""
        return self.index.item(item_id)

    def search(self, queries: Sequence[Query] | Query, top_k: int = 10, batch_size: int = 32,
               progress: bool = False) -> list[QueryResult]:
        """Answers queries in input order; an unreadable file gets an error in its result, not an exception.

        Args:
            queries: photo paths (``str`` or ``Path``, each labelled by itself) or ``(label, path)``
                pairs; a single path is one query.
            top_k: results per query (at most the catalog's size).
            batch_size: images (or a photo's regions) per encoder pass.
            progress: a progress bar on stderr (whole-image search).

        Raises:
            SimclrWatchesError: ``top_k`` < 1.
        """
        if isinstance(queries, (str, os.PathLike)):
            queries = [queries]
        pairs = [_labelled(q) for q in queries]
        return [QueryResult(label, error=str(a)) if isinstance(a, ImageReadError) else a
                for (label, _), a in zip(pairs, self._answer(pairs, top_k, batch_size, progress))]

    def search_one(self, photo: str | os.PathLike, top_k: int = 10) -> QueryResult:
        """The ``top_k`` catalog items nearest to one photo, and where in it the watch was found.

        Args:
            photo: the query image file.

        Returns:
            ``.hits`` (``rank``, ``path``, ``score``, ``id``), best first, and ``.box``.

        Raises:
            ImageReadError: the photo cannot be read or decoded.
            SimclrWatchesError: ``top_k`` < 1.
        """
        [answer] = self._answer([_labelled(photo)], top_k)
        if isinstance(answer, ImageReadError):
            raise answer
        return answer

    def search_photo(self, photo: Photo, label: str, top_k: int = 10) -> QueryResult:
        """As :meth:`search_one`, for a photo already decoded (e.g. an upload, from
        :func:`simclr_watches.data.images.decode_image`; nothing is written to disk).

        Args:
            label: the result's ``query``.

        Raises:
            ImageReadError: the decoded image cannot be prepared (cropped, resized).
            SimclrWatchesError: ``top_k`` < 1.
        """
        _check_top_k(top_k)
        with torch_threads(self.threads):
            return self._search_photo(photo, label, top_k)

    def _search_photo(self, photo: Photo, label: str, top_k: int) -> QueryResult:
        snap = self.index
        if self.localize is None:
            backdrops: dict[Path, float] = {}
            tensor = fit_photo(photo, snap.preprocessing, _view(snap, backdrops))
            if isinstance(tensor, ImageReadError):
                raise tensor
            vector = embed_tensors(self.encoder, snap.preprocessing, tensor[None], self.device)
            vector = self._as_catalog(snap, photo, vector, backdrops[photo.path])
            [vector] = query_vectors(vector, backdrops[photo.path], descriptor_layout(self.encoder), snap.project)
            return self._whole_result(snap, label, vector, top_k)
        return self._localized_result(snap, label, self._scorer(snap).score_photo(photo), top_k)

    def search_item(self, item_id: int, top_k: int = 10, label: str | None = None) -> QueryResult | None:
        """"More like this": the ``top_k`` items nearest to live item ``item_id``, itself first.

        Its stored row (in the index's space) is the query: no file is read or embedded, so
        it answers at once, and also when the item's file is gone. No ``box``: no photo is looked at.

        Args:
            label: the result's ``query``; default ``item:ID``.

        Returns:
            The result, or None when no live item has this id.

        Raises:
            SimclrWatchesError: ``top_k`` < 1.
        """
        _check_top_k(top_k)
        snap = self.index
        row = snap.row_of(item_id)
        if row is None:
            return None
        [vector] = unit_rows(snap.vectors[[row]])
        return self._whole_result(snap, label or f"item:{item_id}", vector, top_k)

    def _answer(self, queries: list[tuple[str, Path]], top_k: int, batch_size: int = 32,
                progress: bool = False) -> list[QueryResult | ImageReadError]:
        """A result per query, in order, or the ImageReadError that kept a query unanswered."""
        _check_top_k(top_k)
        snap = self.index  # one index for the whole call, whatever a refresh does meanwhile
        search = self._search_whole if self.localize is None else self._search_localized
        with torch_threads(self.threads):
            return search(snap, queries, top_k, batch_size, progress)

    def _search_whole(self, snap: Index, queries: list[tuple[str, Path]], top_k: int, batch_size: int,
                      progress: bool) -> list[QueryResult | ImageReadError]:
        backdrops: dict[Path, float] = {}  # each query's backdrop share, noted as it is cropped
        emb = embed_paths(self.encoder, snap.preprocessing, [p for _, p in queries], batch_size=batch_size,
                          device=self.device, progress=progress, label="queries", view=_view(snap, backdrops),
                          hash=False)
        errors = {e.path: e for e in emb.skipped}
        layout = descriptor_layout(self.encoder)
        # One row per readable query, in input order, projected; a photo in a scene without the descriptor block,
        # a packshot described as the catalog was.
        vectors = iter(query_vectors(self._as_catalog(snap, item.path, v[None], backdrops[item.path]),
                                     backdrops[item.path], layout, snap.project)[0]
                       for item, v in zip(emb.items, emb.vectors))
        return [errors[path] if path in errors else self._whole_result(snap, label, next(vectors), top_k)
                for label, path in queries]

    def _as_catalog(self, snap: Index, photo: Photo | Path, vector: np.ndarray, backdrop: float) -> np.ndarray:
        """(1, D): a catalog-style query (white backdrop) described as the index's catalog photos were, at each of
        its catalog sides (``vector``: at the model's size), as the box search does; any other query as it is."""
        pre = snap.preprocessing
        if not is_packshot(backdrop) or (pre.catalog_sides == (pre.size,) and self.catalog_box is None):
            return vector
        if not isinstance(photo, Photo):
            photo = try_load_image(photo, hash=False)
            if isinstance(photo, ImageReadError):  # gone since it was embedded: as it is
                return vector
        try:
            return as_catalog(self.encoder, pre, _view(snap, {})(photo), vector[0], self.device, self.catalog_box)[None]
        except PILLOW_ERRORS:  # the content defeated a resize it passed at the model's size: as it is
            return vector

    @staticmethod
    def _whole_result(snap: Index, label: str, vector: np.ndarray, top_k: int) -> QueryResult:
        """The hits of one query vector already in the index's space (projected, :func:`query_vectors`)."""
        rows, scores = snap.query(vector, top_k)
        return QueryResult(label, [_hit(snap, rank, row, score) for rank, (row, score) in enumerate(zip(rows, scores))])

    def _scorer(self, snap: Index, batch_size: int = 32) -> LocalizedScorer | BoxScorer:
        cfg = self.localize
        candidates = AnnoyCandidates(snap.ann, cfg.candidates, hidden=snap.hidden_in_forest, always=snap.live_added)
        if self.finder is not None:
            return BoxScorer(self.finder, snap.preprocessing, snap.scoring_rows, candidates, cfg, snap.crop_margin,
                             self.device, project=snap.project, catalog_box=self.catalog_box)
        return LocalizedScorer(self.encoder, snap.preprocessing, snap.scoring_rows, candidates, cfg, snap.crop_margin,
                               self.device, batch_size, project=snap.project)

    def _search_localized(self, snap: Index, queries: list[tuple[str, Path]], top_k: int, batch_size: int,
                          progress: bool) -> list[QueryResult | ImageReadError]:
        scorer = self._scorer(snap, batch_size)
        return [scored if isinstance(scored, ImageReadError) else self._localized_result(snap, label, scored, top_k)
                for (label, _), scored in zip(queries, scorer.score_files(p for _, p in queries))]

    @staticmethod
    def _localized_result(snap: Index, label: str, scored: LocalizedQuery, top_k: int) -> QueryResult:
        order = scored.scores.ranking(top_k)
        if not len(order):  # every item removed
            return QueryResult(label)
        hits = [_hit(snap, rank, scored.scores.ids[j], scored.scores.scores[j]) for rank, j in enumerate(order)]
        return QueryResult(label, hits, box=scored.box(order[0]))


def _check_top_k(top_k: int) -> None:
    if top_k < 1:
        raise SimclrWatchesError(f"top-k must be >= 1, got {top_k}")


def _view(snap: Index, backdrops: dict[Path, float]) -> PhotoView:
    """What a query photo is cropped to, as the index's catalog photos were; notes its backdrop share in ``backdrops``."""
    margin = snap.crop_margin

    def view(photo: Photo) -> Image.Image:
        box, backdrops[photo.path] = crop_and_backdrop(photo, 0.0 if margin is None else margin)
        return photo.rgb if margin is None else photo.rgb.crop(box)

    return view


def _hit(snap: Index, rank: int, row: int, score: float) -> Hit:
    item = snap.items[int(row)]
    return Hit(rank + 1, item["path"], float(score), item["id"])
