"""The retrieval method interface that evaluation protocols score: a gallery side and a query side.

A method scores queries against a gallery. The default is cosine similarity of
unit embeddings, but the interface separates the two sides
(:meth:`Method.embed_gallery` and :meth:`Method.score_queries`) so that a method
may treat queries differently from catalog images, e.g. embed several regions
of a query photo and keep the best score per gallery item.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np

from simclr_watches.retrieval.projection import unit_rows  # noqa: F401  (re-exported: methods normalise with it)


class Method(ABC):
    """A retrieval method: ``name`` plus embeddings (N, D) float32, unit L2 norm.

    Embeddings are cached per file path, so a protocol in which the gallery
    also provides the queries embeds every image once.
    """

    name: str = ""

    def __init__(self) -> None:
        self._cache: dict[Path, np.ndarray] = {}

    @abstractmethod
    def _embed_uncached(self, paths: Sequence[Path]) -> np.ndarray:
        """(N, D) float32 unit vectors for ``paths``, in order, none of them cached yet."""

    def embed(self, paths: Sequence[Path]) -> np.ndarray:
        """(N, D) float32 unit vectors for ``paths``, in order.

        Raises:
            ImageReadError: a file is not a usable image.
        """
        paths = [Path(p) for p in paths]
        todo = list(dict.fromkeys(p for p in paths if p not in self._cache))
        if todo:
            self._cache.update(zip(todo, self._embed_uncached(todo)))
        if not paths:
            return np.zeros((0, 0), np.float32)
        return np.stack([self._cache[p] for p in paths])

    def embed_gallery(self, paths: Sequence[Path]) -> np.ndarray:
        """The gallery's representation, passed back to :meth:`score_queries`: here (G, D) embeddings."""
        return self.embed(paths)

    def score_queries(self, paths: Sequence[Path], gallery: np.ndarray) -> np.ndarray:
        """(Q, G) similarities of query files to the gallery, higher is more similar.

        Args:
            paths: the query image files.
            gallery: what :meth:`embed_gallery` returned.
        """
        return self.embed(paths) @ gallery.T
