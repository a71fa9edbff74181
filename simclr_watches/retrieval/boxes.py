"""Query-side localisation with the learnt box: one encoder pass finds the watch, one more embeds it.

The region source :class:`BoxScorer` offers next to the windows of
:class:`simclr_watches.retrieval.scoring.LocalizedScorer` (docs/LOCALISATION.md). For each
query photo:

1. its whole view (cropped as the catalog was) goes through the encoder once, which gives
   its embedding and, through the box head on the encoder's own maps, the watch's box
   (:class:`simclr_watches.detect.infer.BoxFinder`);
2. squares centred on the box (1 and 1.3 times its longer side; or the box grown by
   ``margin``) are cut from the photo at full resolution and embedded, the i-th square at the
   model's i-th region size (``Preprocessing.region_side``; one batch per size; with their
   mirror images, when ``flip``; around the ``boxes`` best heatmap peaks, when more than one);
3. with a descriptor block in the model, a query that is no catalog-style packshot drops it
   (:mod:`simclr_watches.retrieval.query_descriptor`);
4. the regions (whole view first when ``whole``, then the box regions) are scored exactly like
   windows (:func:`simclr_watches.retrieval.scoring.score_regions`):
   ``max(s_whole, mean of the top_m box-region scores)``, or that mean alone without ``whole``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from simclr_watches.core.errors import ImageReadError
from simclr_watches.data.images import Photo, try_load_image
from simclr_watches.data.mask import crop_and_backdrop
from simclr_watches.detect.composites import box_from_square, square
from simclr_watches.detect.infer import BoxFinder, backbone_record
from simclr_watches.model import Preprocessing
from simclr_watches.retrieval.embed import ExtraView, as_catalog, embed_tensors, prefetched, ready_encoder
from simclr_watches.retrieval.localize import LocalizeConfig
from simclr_watches.retrieval.projection import candidate_rows
from simclr_watches.retrieval.query_descriptor import Project, descriptor_layout, is_packshot, query_vectors
from simclr_watches.retrieval.scoring import DECODE_AHEAD, Candidates, LocalizedQuery, RegionScores, score_regions


@dataclass(frozen=True)
class BoxSearchConfig:
    """How the learnt box is used at query time.

    Attributes:
        head: the box head, a file or registered name; None: the shipped one
            (:data:`simclr_watches.weights.box.DEFAULT_BOX`).
        whole: fuse the box's score with the whole view's (their max); False: the box alone.
        boxes: heatmap peaks embedded per photo (1: the best box; 2: a second box too).
        flip: average each box's embedding with its mirror image's.
        margin: with no ``squares``, the box is grown by this share of its longer side on every side.
        squares: squares centred on the box, of these sides times the box's longer side
            (clipped to the photo): several views of the watch at its own scale, as the windows
            are several views at a fixed scale; empty: the grown box alone.
        top_m: box regions (per photo) whose scores are averaged per catalog item.
        candidates: catalog items fetched from the index per region before exact fusion.
    """

    head: str | None = None
    whole: bool = True
    boxes: int = 1
    flip: bool = False
    margin: float = 0.1
    squares: tuple[float, ...] = (1.0, 1.3)
    top_m: int = 3
    candidates: int = 50

    def __post_init__(self) -> None:
        if not 1 <= self.boxes <= 8:
            raise ValueError(f"boxes must lie in [1, 8], got {self.boxes}")
        if not 0.0 <= self.margin <= 1.0:
            raise ValueError(f"margin must lie in [0, 1], got {self.margin}")
        if not all(0.1 <= v <= 4.0 for v in self.squares):
            raise ValueError(f"squares must lie in [0.1, 4], got {self.squares}")
        if self.candidates < 1 or self.top_m < 1:
            raise ValueError("candidates and top_m must be >= 1")


def load_finder(cfg: BoxSearchConfig, encoder: torch.nn.Module, model_info, device: torch.device) -> BoxFinder:
    """The box head of ``cfg`` (verified), checked against the encoder it will read.

    Raises:
        CheckpointError: the head cannot be loaded or was trained on another encoder's maps.
    """
    from simclr_watches.weights.box import load_box_head

    head, info = load_box_head(cfg.head)
    return BoxFinder(encoder, model_info, head, info).to(device)


def box_or_windows(cfg: BoxSearchConfig, encoder: torch.nn.Module, model_info,
                   device: torch.device) -> tuple[BoxSearchConfig | LocalizeConfig, BoxFinder | None]:
    """The learnt box when the head fits the model; with the shipped head (``cfg.head`` None), windows otherwise.

    The shipped head reads ``watches-lite0-v1``'s maps: an index built with another model
    (ImageNet, a user's own checkpoint) is then searched with windows, as before the head
    existed. A head the user named must fit.

    Returns:
        ``(cfg, finder)``, or ``(LocalizeConfig(), None)`` for windows.

    Raises:
        CheckpointError: a named head cannot be loaded or does not fit; the shipped head is
            missing or fails its sha256 check.
    """
    from simclr_watches.weights.box import load_box_head

    head, info = load_box_head(cfg.head)
    if cfg.head is None and backbone_record(model_info)["sha256"] != info.backbone_sha256:
        return LocalizeConfig(), None
    return cfg, BoxFinder(encoder, model_info, head, info).to(device)


def grow(box: tuple[int, int, int, int], margin: float, w: int, h: int) -> tuple[int, int, int, int]:
    """``box`` grown by ``margin`` times its longer side on every side, clipped to a (w, h) picture."""
    x0, y0, x1, y1 = box
    pad = int(round(margin * max(x1 - x0, y1 - y0)))
    return max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)


def box_regions(box: tuple[int, int, int, int], cfg: BoxSearchConfig, w: int, h: int) -> list[tuple[int, int, int, int]]:
    """The regions embedded for one learnt box: the grown box, or the squares of ``cfg.squares``."""
    if cfg.squares:
        return [square(box, side, w, h) for side in cfg.squares]
    return [grow(box, cfg.margin, w, h)]


@dataclass(frozen=True)
class BoxQuery(LocalizedQuery):
    """A query scored by its learnt box(es): :meth:`box` is always a learnt box, never the whole view.

    Attributes:
        first_box: row of ``boxes`` holding the best box (1 after the whole view, else 0).
    """

    first_box: int = 0

    def box(self, position: int) -> list[int]:
        """The learnt box that scored candidate ``position`` best (the best-heat box when the whole view did)."""
        row = max(int(self.scores.best[position]), self.first_box)
        return [int(v) for v in self.boxes[row]]


@dataclass(frozen=True)
class _Prepared:
    photo: Image.Image
    whole_box: tuple[int, int, int, int]
    whole: torch.Tensor
    backdrop: float  # share of the photo's border that is white backdrop


class BoxScorer:
    """Query photos scored by their learnt box(es) and whole view: the ``+box`` of search and evaluate.

    Same interface as :class:`simclr_watches.retrieval.scoring.LocalizedScorer`.

    Args:
        finder: the encoder with its box head (:func:`load_finder`).
        pre: the encoder's preprocessing.
        gallery: (G, D) unit vectors of the gallery, row i = item i.
        candidates: which rows to score for a query.
        cfg: how the box is used.
        margin: the gallery's foreground-crop margin, applied to the query's whole view; None: no crop.
        device: where the encoder runs.
        project: maps embeddings into the gallery's space (an index's PCA,
            :data:`~simclr_watches.retrieval.query_descriptor.Project`); None: as they are.
        catalog_box: the catalog's view around the learnt box (:func:`~simclr_watches.retrieval.catalog.catalog_box_view`), for a packshot
            query described as the catalog is; None: the model has none.
    """

    def __init__(self, finder: BoxFinder, pre: Preprocessing, gallery: np.ndarray, candidates: Candidates,
                 cfg: BoxSearchConfig, margin: float | None, device: torch.device,
                 project: Project | None = None, catalog_box: ExtraView | None = None):
        self.finder, self.pre, self.gallery, self.candidates = finder, pre, gallery, candidates
        self.project, self.catalog_box = project, catalog_box
        self.cfg, self.margin, self.device = cfg, margin, device
        self.encoder = ready_encoder(finder.encoder, device)
        self.layout = descriptor_layout(self.encoder)

    def _prepare(self, path: Path) -> _Prepared | ImageReadError:
        photo = try_load_image(path, hash=False)
        return photo if isinstance(photo, ImageReadError) else self._cut(photo)

    def score_photo(self, photo: Photo) -> BoxQuery:
        """Scores one photo already decoded (e.g. an upload, never written to disk)."""
        return self._score(self._cut(photo))

    def _cut(self, photo: Photo) -> _Prepared:
        w, h = photo.rgb.size
        box, backdrop = crop_and_backdrop(photo, 0.0 if self.margin is None else self.margin)
        whole_box = (0, 0, w, h) if self.margin is None else box
        return _Prepared(photo.rgb, whole_box, self.pre.to_uint8(photo.rgb.crop(whole_box)), backdrop)

    def locate(self, prepared: _Prepared) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The whole view's embedding and the watch's boxes in the photo.

        Returns:
            whole (D,) unit vector; boxes (k, 4) int ``[x0, y0, x1, y1]`` pixels of the photo
            (not grown); heat (k,) each box's heatmap peak.
        """
        x = self.pre.normalize(prepared.whole[None]).to(self.device).contiguous(memory_format=torch.channels_last)
        emb, boxes, heat = self.finder(x, self.cfg.boxes)
        x0, y0, x1, y1 = prepared.whole_box
        pixels = [box_from_square(b, x1 - x0, y1 - y0) for b in boxes[0].cpu().numpy()]
        pixels = np.array([[bx0 + x0, by0 + y0, bx1 + x0, by1 + y0] for bx0, by0, bx1, by1 in pixels], dtype=int)
        return emb[0].cpu().numpy(), pixels, heat[0].cpu().numpy()

    def _score(self, prepared: _Prepared) -> BoxQuery:
        whole, boxes, _ = self.locate(prepared)
        if is_packshot(prepared.backdrop):  # a packshot: compared with the catalog as the catalog is
            whole = as_catalog(self.encoder, self.pre, prepared.photo.crop(prepared.whole_box), whole, self.device,
                               self.catalog_box)
        w, h = prepared.photo.size
        per_box = [box_regions(tuple(b), self.cfg, w, h) for b in boxes]
        grown = [r for regions in per_box for r in regions]
        sides = [self.pre.region_side(i) for regions in per_box for i in range(len(regions))]
        views = [prepared.photo.crop(b) for b in grown]
        if self.cfg.flip:
            views, sides = views + [ImageOps.mirror(v) for v in views], sides + sides
        vectors = self._embed(views, sides)
        if self.cfg.flip:
            vectors = vectors[: len(grown)] + vectors[len(grown):]
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        whole = query_vectors(whole[None], prepared.backdrop, self.layout, self.project)[0]
        vectors = query_vectors(vectors, prepared.backdrop, self.layout, self.project)
        if self.cfg.whole:
            rows = np.array([list(prepared.whole_box)] + [list(b) for b in grown], dtype=int)
            scores = score_regions(np.concatenate([whole[None], vectors]), self.gallery, self.candidates, self.cfg.top_m)
            return BoxQuery(rows, scores, first_box=1)
        # The box regions alone: the mean of each item's top_m region scores.
        ids = self.candidates(vectors)
        sims = vectors @ candidate_rows(self.gallery, ids).T
        fused = np.sort(sims, axis=0)[-min(self.cfg.top_m, len(sims)):].mean(axis=0)
        return BoxQuery(np.array(grown, dtype=int), RegionScores(ids, fused, sims.argmax(axis=0)))

    def _embed(self, views: list[Image.Image], sides: list[int]) -> np.ndarray:
        """(len(views), D) unit vectors of each view at its side: one encoder batch per side."""
        out = np.zeros((len(views), self.encoder.dim), np.float32)
        for side in sorted(set(sides)):
            rows = [i for i, s in enumerate(sides) if s == side]
            batch = torch.stack([self.pre.to_uint8(views[i], side) for i in rows])
            out[rows] = embed_tensors(self.encoder, self.pre, batch, self.device)
        return out

    def score_files(self, paths: Iterable[Path]) -> Iterator[BoxQuery | ImageReadError]:
        """Scores each file in order; an unusable file yields the ImageReadError saying why.

        The next files decode in a worker thread while the current one is embedded.
        """
        for prepared in prefetched(self._prepare, paths, workers=1, ahead=DECODE_AHEAD):
            yield prepared if isinstance(prepared, ImageReadError) else self._score(prepared)
