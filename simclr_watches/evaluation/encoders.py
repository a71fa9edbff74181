"""The project's own methods: an encoder's whole-image embeddings, and the localised search of its queries.

Encoders load, and torch imports, on first use: listing or parsing methods stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from simclr_watches.evaluation.method import Method

if TYPE_CHECKING:
    from annoy import AnnoyIndex


class EncoderMethod(Method):
    """A CNN encoder's pooled features (see :class:`simclr_watches.model.encoder.Encoder`).

    Args:
        name: how results are labelled.
        spec: ``"random"`` for a seeded random initialisation of EfficientNet-Lite0, or
            a checkpoint path / registered name for :func:`simclr_watches.weights.loading.load_model`.
        seed: initialisation seed for ``"random"``.
        batch_size, device: passed to :func:`simclr_watches.retrieval.embed.embed_paths`.
        crop: crop each photo around the watch before embedding, as ``build-index`` does.
        stored: store the gallery as an index does (:meth:`store_as_index`): None keeps
            the float32 embeddings.

    Attributes:
        gem_p: the exponent of GeM pooling of the final map (1: the encoders' average pooling),
            set before the first :meth:`load`.
        projection: the PCA fitted on the last gallery (with ``stored``), applied to queries.
    """

    def __init__(self, name: str, spec: str, seed: int = 0, batch_size: int = 32, device: str = "cpu",
                 crop: bool = False):
        super().__init__()
        self.name, self.spec, self.seed = name, spec, seed
        self.batch_size, self.device, self.crop = batch_size, device, crop
        self._model = None
        self.gem_p = 1.0
        self.info = None  # the loaded model's ModelInfo (None for "random")
        self.stored: tuple[int, str] | None = None
        self.projection = None
        self._catalog: dict[Path, np.ndarray] = {}  # embeddings at the model's catalog sides, when they differ

    def store_as_index(self, width: int, kind: str = "pca") -> None:
        """Scores as an index of ``build-index --pca WIDTH [--whiten]`` would (``width`` 0: no PCA).

        The PCA (``kind``: ``pca``, ``cpca`` centred, ``white`` whitened) is fitted on each
        gallery alone (never on queries), the gallery rows are rounded to float16 as index
        files store them, and queries (and regions) are projected. A gallery of ``width`` items
        or fewer keeps every dimension, as ``build-index`` does.
        """
        self.stored = (width, kind)

    def project(self, x: np.ndarray, unit: bool = True) -> np.ndarray:
        """Query vectors in the gallery's space: projected by the last gallery's PCA, if any (as :meth:`Index.project`)."""
        return x if self.projection is None else self.projection.apply(x, unit)

    def embed_catalog(self, paths: Sequence[Path]) -> np.ndarray:
        """(N, D) unit vectors of ``paths`` as ``build-index`` embeds a catalog: at the model's catalog sides.

        Queries (:meth:`embed`) are seen at the model's own size; a model whose catalog is seen
        at that size alone embeds each file once for both.
        """
        _, pre = self.load()
        if pre.catalog_sides == (pre.size,):
            return self.embed(paths)
        paths = [Path(p) for p in paths]
        todo = list(dict.fromkeys(p for p in paths if p not in self._catalog))
        if todo:
            self._catalog.update(zip(todo, self._embed_at(todo, catalog=True)))
        return np.stack([self._catalog[p] for p in paths]) if paths else np.zeros((0, 0), np.float32)

    def embed_gallery(self, paths: Sequence[Path]) -> np.ndarray:
        vectors = self.embed_catalog(paths)
        if self.stored is None:
            return vectors
        from simclr_watches.retrieval.projection import fit_pca, stored_rows

        width, kind = self.stored
        fits = 0 < width < len(vectors)  # build-index: a catalog of `width` images or fewer is not projected
        self.projection = fit_pca(vectors, width, whiten=kind == "white", center=kind == "cpca") if fits else None
        return stored_rows(self.project(vectors)).astype(np.float32)

    def score_queries(self, paths: Sequence[Path], gallery: np.ndarray) -> np.ndarray:
        return self.project(self.embed(paths)) @ gallery.T

    def load(self) -> tuple[Any, Any]:
        """The encoder (loaded on first call) and its :class:`~simclr_watches.model.encoder.Preprocessing`."""
        if self._model is None:
            from simclr_watches.model import fold_batchnorm

            if self.spec == "random":
                import torch

                from simclr_watches.model import default_preprocessing
                from simclr_watches.weights import init_encoder

                # fork_rng: seed the initialisation without changing the caller's global RNG.
                with torch.random.fork_rng():
                    torch.manual_seed(self.seed)
                    enc = init_encoder("efficientnet_lite0", "random").eval()
                pre = default_preprocessing("efficientnet_lite0")
            else:
                from simclr_watches.weights import load_model

                enc, self.info = load_model(self.spec)
                pre = self.info.preprocessing
            for member in getattr(enc, "members", [enc]):
                member.gem_p = self.gem_p
            self._model = (fold_batchnorm(enc), pre)  # as search runs it
        return self._model

    @property
    def crop_margin(self) -> float | None:
        """Margin of the foreground crop applied to every photo; None without ``crop``."""
        from simclr_watches.data.mask import CROP_MARGIN

        return CROP_MARGIN if self.crop else None

    def _embed_uncached(self, paths: Sequence[Path]) -> np.ndarray:
        return self._embed_at(paths, catalog=False)

    def _embed_at(self, paths: Sequence[Path], catalog: bool) -> np.ndarray:
        """(N, D) unit vectors of ``paths``: as queries, at the model's size, or as the catalog (:func:`embed_catalog`)."""
        from simclr_watches.data.mask import catalog_view
        from simclr_watches.retrieval.catalog import embed_catalog
        from simclr_watches.retrieval.embed import embed_paths

        enc, pre = self.load()
        kwargs = dict(batch_size=self.batch_size, device=self.device, progress=False, label=self.name, hash=False)
        result = (embed_catalog(enc, pre, list(paths), self.crop_margin, self.info, **kwargs) if catalog
                  else embed_paths(enc, pre, list(paths), view=catalog_view(self.crop_margin), **kwargs))
        if result.skipped:
            raise result.skipped[0]
        return result.vectors


@dataclass(frozen=True)
class LocalizedGallery:
    """The gallery side of a localised method, as ``build-index`` would make it.

    Attributes:
        vectors: (G, D) float16 unit embeddings of the gallery's whole (cropped) images, as an index stores them.
        forest: an Annoy forest over ``vectors`` with build-index's trees.
    """

    vectors: np.ndarray
    forest: AnnoyIndex


class LocalizedMethod(Method):
    """An encoder whose queries are searched window by window, exactly as ``search`` does.

    The gallery is embedded whole, as by the wrapped encoder, rounded to float16 and put in
    an in-memory Annoy forest, as ``build-index`` stores them; each query then runs
    :class:`simclr_watches.retrieval.scoring.LocalizedScorer`, the code behind ``search``:
    Annoy candidates per window, exact fusion on the gallery vectors. Gallery items that
    were no candidate score ``-inf`` and rank last.

    Args:
        inner: the encoder method (its ``crop`` is applied to the query's whole view too).
        cfg: window layout and fusion; default ``search``'s.
    """

    def __init__(self, inner: EncoderMethod, cfg=None):
        super().__init__()
        from simclr_watches.retrieval.localize import LocalizeConfig

        self.inner, self.cfg = inner, cfg or LocalizeConfig()
        self.name = f"{inner.name}+loc"

    def _embed_uncached(self, paths: Sequence[Path]) -> np.ndarray:
        return self.inner.embed(paths)

    def embed_gallery(self, paths: Sequence[Path]) -> LocalizedGallery:
        """The gallery's embeddings and their Annoy forest (:func:`simclr_watches.retrieval.index.build_forest`)."""
        from simclr_watches.retrieval.index import build_forest, forest_width
        from simclr_watches.retrieval.projection import stored_rows

        vectors = stored_rows(self.inner.embed_gallery(paths))  # float16, as build-index stores them
        width = forest_width(vectors.shape[1], projected=self.inner.projection is not None)
        return LocalizedGallery(vectors, build_forest(vectors, width=width))

    def scorer(self, gallery: LocalizedGallery):
        """The query-side scorer ``search`` runs: :class:`simclr_watches.retrieval.scoring.LocalizedScorer`."""
        from simclr_watches.core.device import resolve_device
        from simclr_watches.retrieval.scoring import AnnoyCandidates, LocalizedScorer

        enc, pre = self.inner.load()
        return LocalizedScorer(enc, pre, gallery.vectors, AnnoyCandidates(gallery.forest, self.cfg.candidates),
                               self.cfg, self.inner.crop_margin, resolve_device(self.inner.device),
                               self.inner.batch_size, project=self.inner.project)

    def score_queries(self, paths: Sequence[Path], gallery: LocalizedGallery) -> np.ndarray:
        """(Q, G) fused scores, ``-inf`` where a gallery item was no candidate for the query.

        Raises:
            ImageReadError: a query file is not a usable image.
        """
        from simclr_watches.core.errors import ImageReadError

        rows = []
        for scored in self.scorer(gallery).score_files(paths):
            if isinstance(scored, ImageReadError):
                raise scored
            rows.append(scored.scores.dense(len(gallery.vectors)))
        return np.stack(rows) if rows else np.zeros((0, len(gallery.vectors)), np.float32)


class BoxMethod(LocalizedMethod):
    """An encoder whose queries are searched by their learnt box, exactly as ``search`` does with a box head.

    The gallery side is :class:`LocalizedMethod`'s; each query runs
    :class:`simclr_watches.retrieval.boxes.BoxScorer`.

    Args:
        inner: the encoder method (its ``crop`` is applied to the query's whole view too).
        cfg: a :class:`simclr_watches.retrieval.boxes.BoxSearchConfig`; default ``search``'s.
        suffix: the method name's suffix (``+box``, ``+box-flip``...).
    """

    def __init__(self, inner: EncoderMethod, cfg=None, suffix: str = "+box"):
        from simclr_watches.retrieval.boxes import BoxSearchConfig

        super().__init__(inner)
        self.cfg = cfg or BoxSearchConfig()
        self.name = f"{inner.name}{suffix}"

    def scorer(self, gallery: LocalizedGallery):
        """:class:`simclr_watches.retrieval.boxes.BoxScorer` with the box head of ``cfg``.

        Raises:
            CheckpointError: the box head cannot be loaded or does not fit the encoder.
        """
        from simclr_watches.core.device import resolve_device
        from simclr_watches.retrieval.boxes import BoxScorer, load_finder
        from simclr_watches.retrieval.catalog import catalog_box_view, catalog_finder
        from simclr_watches.retrieval.scoring import AnnoyCandidates

        enc, pre = self.inner.load()
        device = resolve_device(self.inner.device)
        return BoxScorer(load_finder(self.cfg, enc, self.inner.info, device), pre, gallery.vectors,
                         AnnoyCandidates(gallery.forest, self.cfg.candidates), self.cfg, self.inner.crop_margin, device,
                         project=self.inner.project,
                         catalog_box=catalog_box_view(catalog_finder(enc, self.inner.info, device), pre, device))
