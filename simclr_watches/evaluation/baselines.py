"""Classic retrieval baselines an encoder must beat: colour histogram, perceptual hash, thumbnail."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from simclr_watches.data.images import load_image
from simclr_watches.evaluation.method import Method, unit_rows


def _load_rgb(path: Path) -> Image.Image:
    return load_image(path).rgb


class HsvHistogram(Method):
    """Joint HSV colour histogram, 16 x 4 x 4 bins (Swain & Ballard, "Color Indexing", IJCV 1991).

    The embedding is the square root of the normalised histogram, so the
    cosine of two embeddings is their Bhattacharyya coefficient.
    """

    name = "hist"
    bins = (16, 4, 4)

    def _embed_uncached(self, paths: Sequence[Path]) -> np.ndarray:
        out = []
        for p in paths:
            hsv = np.asarray(_load_rgb(p).convert("HSV")).reshape(-1, 3)
            hist, _ = np.histogramdd(hsv, bins=self.bins, range=((0, 256),) * 3)
            out.append(np.sqrt(hist.ravel() / max(hist.sum(), 1)))
        return unit_rows(np.array(out))


class PerceptualHash(Method):
    """DCT perceptual hash (``imagehash.phash``, 8 x 8 = 64 bits); similarity = 1 - Hamming / bits.

    The embedding is the bit vector as +-1 / sqrt(bits) (cosine = 1 - 2 Hamming / bits,
    the same ranking); :meth:`score_queries` returns the Hamming similarity itself.
    """

    name = "phash"
    hash_size = 8

    def _bits(self, paths: Sequence[Path]) -> np.ndarray:
        import imagehash

        return np.array([imagehash.phash(_load_rgb(p), hash_size=self.hash_size).hash.ravel() for p in paths], bool)

    def _embed_uncached(self, paths: Sequence[Path]) -> np.ndarray:
        bits = self._bits(paths)
        return (np.where(bits, 1.0, -1.0) / np.sqrt(bits.shape[1])).astype(np.float32)

    def score_queries(self, paths: Sequence[Path], gallery: np.ndarray) -> np.ndarray:
        cos = self.embed(paths) @ gallery.T
        # cos = 1 - 2 h / bits  =>  1 - h / bits = (1 + cos) / 2; rounding removes float noise so equal distances tie.
        return np.round((1.0 + cos) / 2.0, 6)


class Thumbnail(Method):
    """The image padded to a white square and shrunk to 32 x 32 RGB; cosine of the mean-centred pixels.

    Centring each vector makes the cosine a correlation, insensitive to overall brightness.
    """

    name = "thumb"
    size = 32

    def _embed_uncached(self, paths: Sequence[Path]) -> np.ndarray:
        out = []
        for p in paths:
            img = ImageOps.pad(_load_rgb(p), (self.size, self.size), Image.Resampling.BOX, color=(255, 255, 255))
            v = np.asarray(img, np.float32).ravel()
            out.append(v - v.mean())
        return unit_rows(np.array(out))
