"""Compact vectors: a PCA (optionally centred or whitened) fitted on a catalog's embeddings, applied to its queries.

An index stores its items' embeddings projected to ``width`` dimensions (docs/INDEX_FORMAT.md,
``projection-G.npy``); every query vector (and every region vector of a localised search) goes
through the same projection before it meets them. Fitted at build time on the catalog itself
(a rebuild refits it, a compaction keeps it). By default the axes are the top eigenvectors of
the rows' second moment, not centred: a query then keeps its cosines to the catalog items
inside their principal subspace, while centring on the catalog's mean (and whitening, which
Jégou & Chum, ECCV 2012, learn on the target collection) cost real photos much of their R@1
on watches-dev (docs/BENCHMARKS.md, "Compact vectors").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simclr_watches.core.errors import SimclrWatchesError

PCA_SAMPLE = 65_536  # rows a fit reads at most (seeded sample): the covariance of more changes little
PCA_SEED = 0
WHITEN_EPS = 1e-3  # whitening divides by sqrt(variance + WHITEN_EPS * top variance): no blow-up of null axes
STORED_DTYPE = np.float16  # how index files keep unit rows (docs/BENCHMARKS.md: no R@1 change)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """(N, D) float32 rows scaled to unit L2 norm; an all-zero row stays zero."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def stored_rows(x: np.ndarray) -> np.ndarray:
    """Unit rows as an index stores them: (N, D) float16, the rounding every query meets."""
    return np.asarray(x, np.float32).astype(STORED_DTYPE)


def candidate_rows(gallery: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(C, D) float32 unit rows ``ids`` (ascending, unique) of a gallery, to score queries against.

    Float16 rows (an index's, unit to float16 precision) are read and renormalised; float32 rows
    (an index's copy made once, ``Index.scoring_rows``) are taken as they are, not copied when
    ``ids`` holds every row.
    """
    rows = gallery if len(ids) == len(gallery) else gallery[ids]
    return rows if rows.dtype == np.float32 else unit_rows(rows)


@dataclass(frozen=True)
class Projection:
    """``y = unit((x - mean) @ matrix.T)``: D-d embeddings to W-d unit vectors.

    Attributes:
        mean: (D,) float32 mean of the fitted embeddings when centred, else zeros.
        matrix: (W, D) float32 principal axes, by decreasing variance; divided by their
            standard deviation when ``whiten``.
        whiten: whether the axes were scaled to unit variance.
    """

    mean: np.ndarray
    matrix: np.ndarray
    whiten: bool = False

    @property
    def width(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.matrix.shape[1])

    def apply(self, x: np.ndarray, unit: bool = True) -> np.ndarray:
        """(N, D) embeddings (or one (D,) vector) -> (N, W) (or (W,)) float32 unit vectors.

        Without ``unit``, the rows keep the projection's length (what a query scored by dot
        products on another scale needs, :mod:`simclr_watches.retrieval.query_descriptor`).
        """
        x = np.asarray(x, np.float32)
        y = (x.reshape(-1, self.input_dim) - self.mean) @ self.matrix.T
        y = unit_rows(y) if unit else y.astype(np.float32)
        return y.reshape(-1) if x.ndim == 1 else y

    def to_array(self) -> np.ndarray:
        """(W + 1, D) float32: the mean, then the axes (what ``projection-G.npy`` holds)."""
        return np.vstack([self.mean[None], self.matrix]).astype(np.float32)

    @classmethod
    def from_array(cls, array: np.ndarray, whiten: bool) -> "Projection":
        array = np.asarray(array, np.float32)
        return cls(array[0].copy(), array[1:].copy(), whiten)


def fit_pca(vectors: np.ndarray, width: int, whiten: bool = False, center: bool = False) -> Projection:
    """Fits a PCA of ``width`` axes on the rows of ``vectors`` (a seeded sample of PCA_SAMPLE at most).

    Args:
        vectors: (N, D) embeddings (e.g. a memory map; only the sample is read), N > width.
        width: output dimensions, 1..min(D, N - 1).
        whiten: scale each axis to unit variance (regularised by WHITEN_EPS).
        center: subtract the rows' mean first (classic PCA); default: axes of the second moment.

    Raises:
        SimclrWatchesError: ``width`` out of range for these vectors.
    """
    n, d = vectors.shape
    if not 1 <= width <= min(d, n - 1):
        raise SimclrWatchesError(f"cannot fit a {width}-d PCA on {n} vectors of {d} dimensions "
                                 f"(width must be in 1..{min(d, n - 1)})")
    rows = np.sort(np.random.default_rng(PCA_SEED).choice(n, PCA_SAMPLE, replace=False)) if n > PCA_SAMPLE else None
    x = np.asarray(vectors if rows is None else vectors[rows], np.float64)
    mean = x.mean(axis=0) if center else np.zeros(d)
    x -= mean
    cov = (x.T @ x) / max(len(x) - 1, 1)
    values, axes = np.linalg.eigh(cov)  # ascending
    order = np.argsort(-values, kind="stable")[:width]
    values, axes = np.maximum(values[order], 0.0), axes[:, order].T
    axes *= np.where(axes[np.arange(width), np.abs(axes).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]  # sign fixed
    if whiten:
        axes /= np.sqrt(values + WHITEN_EPS * values[0])[:, None]
    return Projection(mean.astype(np.float32), axes.astype(np.float32), whiten)
