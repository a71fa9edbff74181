"""Localised scoring of query photos against a gallery: the one path ``search`` and ``evaluate`` both run.

For each query photo, :class:`LocalizedScorer`:

1. decodes it and cuts its regions (the whole view, then the windows of
   :func:`simclr_watches.retrieval.localize.window_boxes`), the next query decoding in a
   worker thread while this one is embedded;
2. embeds the R regions, (R, D) unit vectors
   (:func:`simclr_watches.retrieval.localize.embed_regions`);
   (a model with a descriptor block keeps it only for a catalog-style query,
   :mod:`simclr_watches.retrieval.query_descriptor`);
3. asks the candidate source for the gallery items worth scoring: by default each
   region's ``candidates`` nearest items in an Annoy forest, united (:class:`AnnoyCandidates`;
   every item of a forest of at most ``EXACT_ITEMS``, :func:`~simclr_watches.retrieval.index.forest_candidates`);
4. scores the candidates exactly on the gallery vectors and fuses each one's R
   similarities into one score (:func:`score_regions`, :func:`fuse_scores`).

Items that are not candidates get no score: they rank below every candidate
(``-inf`` in :meth:`RegionScores.dense`, the form evaluation's metrics read).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from annoy import AnnoyIndex

from simclr_watches.core.errors import ImageReadError
from simclr_watches.data.images import Photo, try_load_image
from simclr_watches.data.mask import crop_and_backdrop
from simclr_watches.model import Preprocessing
from simclr_watches.retrieval.embed import prefetched, ready_encoder
from simclr_watches.retrieval.index import forest_candidates
from simclr_watches.retrieval.localize import LocalizeConfig, embed_regions, window_crops
from simclr_watches.retrieval.projection import candidate_rows
from simclr_watches.retrieval.query_descriptor import Project, descriptor_layout, query_vectors

# Given a query's (R, D) region vectors, the gallery rows worth scoring exactly: (C,) ascending int64 ids.
Candidates = Callable[[np.ndarray], np.ndarray]

# Queries decoded ahead of the one being embedded: enough to hide a slow file, little memory.
DECODE_AHEAD = 2


class AnnoyCandidates:
    """Each region's ``per_region`` nearest gallery items in an Annoy forest, united, plus rows outside it
    (a forest of at most :data:`~simclr_watches.retrieval.index.EXACT_ITEMS` items: all of them).

    Annoy searches with its default ``search_k`` (``n_trees * n`` nodes for ``n`` items),
    the same for an index folder's forest (``search``) and an in-memory one (``evaluate``).

    Args:
        forest: an angular forest over the first gallery rows, item i = gallery row i, or over
            their leading coordinates (:func:`simclr_watches.retrieval.index.build_forest`).
        per_region: items fetched per region (``LocalizeConfig.candidates``).
        hidden: forest rows never returned (removed items): each region asks the forest
            for that many more items, then drops them.
        always: rows returned for every query (items added after the forest was built,
            then scored exactly like the others).
    """

    def __init__(self, forest: AnnoyIndex, per_region: int, hidden: frozenset[int] = frozenset(),
                 always: np.ndarray | None = None):
        self.forest, self.per_region, self.hidden = forest, per_region, hidden
        self.always = () if always is None else always

    def __call__(self, regions: np.ndarray) -> np.ndarray:
        return forest_candidates(self.forest, regions, self.per_region, self.hidden, self.always)


def fuse_scores(scores: np.ndarray, top_m: int) -> tuple[np.ndarray, np.ndarray]:
    """Fuses region-vs-item similarities into one score per item.

    Args:
        scores: (R, G) cosine similarity of R regions to G items; row 0 is the whole
            image, rows 1.. the windows.
        top_m: number of best window scores averaged per item (clipped to R - 1).

    Returns:
        fused: (G,) ``max(scores[0], mean of the top_m of scores[1:])``.
        best: (G,) index of the region with the highest score for each item.
    """
    fused = scores[0]
    if scores.shape[0] > 1:
        m = min(top_m, scores.shape[0] - 1)
        fused = np.maximum(fused, np.sort(scores[1:], axis=0)[-m:].mean(axis=0))
    return fused, scores.argmax(axis=0)


@dataclass(frozen=True)
class RegionScores:
    """One query's fused scores for its candidate gallery items.

    Attributes:
        ids: (C,) ascending gallery rows that were candidates.
        scores: (C,) fused score of each candidate.
        best: (C,) region (row of the query's regions) that scored each candidate highest.
    """

    ids: np.ndarray
    scores: np.ndarray
    best: np.ndarray

    def ranking(self, k: int | None = None) -> np.ndarray:
        """Positions into ``ids`` of the ``k`` best candidates (all: None), best first; ties keep gallery order."""
        return np.argsort(-self.scores, kind="stable")[:k]

    def dense(self, n: int) -> np.ndarray:
        """(n,) float32 scores of the whole gallery of ``n`` items: ``-inf`` for those that were no candidate."""
        out = np.full(n, -np.inf, np.float32)
        out[self.ids] = self.scores
        return out


def score_regions(regions: np.ndarray, gallery: np.ndarray, candidates: Candidates, top_m: int) -> RegionScores:
    """Scores a query's regions against a gallery: candidates first, then exact fusion.

    Args:
        regions: (R, D) unit vectors of the query's regions, whole image first.
        gallery: (G, D) unit vectors (may be a memory map: only candidate rows are read); float16
            rows (an index's, unit to float16 precision) are renormalised, float32 rows taken as they are.
        candidates: which gallery rows to score (e.g. :class:`AnnoyCandidates`).
        top_m: window scores averaged per item (:func:`fuse_scores`).
    """
    ids = candidates(regions)
    fused, best = fuse_scores(regions @ candidate_rows(gallery, ids).T, top_m)
    return RegionScores(ids, fused, best)


@dataclass(frozen=True)
class LocalizedQuery:
    """A query photo scored region by region.

    Attributes:
        boxes: (R, 4) ``[x0, y0, x1, y1]`` of its regions, pixels of the photo as decoded.
        scores: the fused scores of its candidates.
    """

    boxes: np.ndarray
    scores: RegionScores

    def box(self, position: int) -> list[int]:
        """The box of the region that scored candidate ``position`` (a position into ``scores.ids``) best."""
        return [int(v) for v in self.boxes[self.scores.best[position]]]


@dataclass(frozen=True)
class _Prepared:
    boxes: np.ndarray
    whole: torch.Tensor
    crops: torch.Tensor
    backdrop: float  # share of the photo's border that is white backdrop


class LocalizedScorer:
    """Query photos scored window by window against a gallery: what ``search`` and ``evaluate``'s ``+loc`` run.

    Args:
        encoder: the model the gallery was embedded with.
        pre: its preprocessing.
        gallery: (G, D) unit vectors of the gallery, row i = item i.
        candidates: which rows to score for a query (:class:`AnnoyCandidates` over the gallery).
        cfg: window layout and fusion.
        margin: the gallery's foreground-crop margin, applied to the query's whole view; None: no crop.
        device: where the encoder runs.
        batch_size: regions per encoder pass at most.
        project: maps region embeddings into the gallery's space (an index's PCA,
            :data:`~simclr_watches.retrieval.query_descriptor.Project`); None: as they are.
    """

    def __init__(self, encoder: torch.nn.Module, pre: Preprocessing, gallery: np.ndarray, candidates: Candidates,
                 cfg: LocalizeConfig, margin: float | None, device: torch.device, batch_size: int = 32,
                 project: Project | None = None):
        self.encoder = ready_encoder(encoder, device)
        self.pre, self.gallery, self.candidates, self.project = pre, gallery, candidates, project
        self.cfg, self.margin, self.device, self.batch_size = cfg, margin, device, batch_size
        self.layout = descriptor_layout(encoder)

    def _prepare(self, path: Path) -> _Prepared | ImageReadError:
        """The photo decoded (not hashed: a query's digest is never used) and cut into encoder-ready regions."""
        photo = try_load_image(path, hash=False)
        return photo if isinstance(photo, ImageReadError) else self._cut(photo)

    def _cut(self, photo: Photo) -> _Prepared:
        box, backdrop = crop_and_backdrop(photo, 0.0 if self.margin is None else self.margin)
        whole_box = None if self.margin is None else box
        return _Prepared(*window_crops(photo.rgb, self.pre, self.cfg, whole_box), backdrop)

    def score_photo(self, photo: Photo) -> LocalizedQuery:
        """Scores one photo already decoded (e.g. an upload, never written to disk)."""
        return self._score(self._cut(photo))

    def _score(self, prepared: _Prepared) -> LocalizedQuery:
        regions = embed_regions(self.encoder, self.pre, prepared.whole, prepared.crops, self.device, self.batch_size)
        regions = query_vectors(regions, prepared.backdrop, self.layout, self.project)
        return LocalizedQuery(prepared.boxes, score_regions(regions, self.gallery, self.candidates, self.cfg.top_m))

    def score_files(self, paths: Iterable[Path]) -> Iterator[LocalizedQuery | ImageReadError]:
        """Scores each file in order; an unusable file yields the ImageReadError saying why.

        The next files decode in a worker thread while the current one is embedded.
        """
        for prepared in prefetched(self._prepare, paths, workers=1, ahead=DECODE_AHEAD):
            yield prepared if isinstance(prepared, ImageReadError) else self._score(prepared)
