"""Which queries use the descriptor block of a :class:`~simclr_watches.model.descriptor.DescribedEnsemble`.

The default model's embedding ends with a texture-and-colour block (the ImageNet member's
mid-level map, GeM-pooled) that weighs ``w`` of every cosine: catalog watches then rank
next to watches of the same strap type and colours. Colour and texture compare only
under the catalog's conditions, though: on a photo of a watch in a scene (another
background, its light and colour cast) the block costs more than it brings (docs/MODEL_CARD.md).
So a query's block is used only when the query looks like a catalog photo, a watch on a
white backdrop (:func:`simclr_watches.data.mask.crop_and_backdrop`); any other query is
scored by the ensemble block alone, which gives the plain ensemble's cosines: with
``v = [sqrt(1 - w) e, sqrt(w) d]`` stored per item, the query ``q = [e_q / sqrt(1 - w), 0]``
has the dot product ``e_q . e`` with every item.

An index stores its rows projected (``r = unit(P v)``, a PCA of the catalog, docs/INDEX_FORMAT.md).
A packshot query is projected like a row; a photo query is projected *without* renormalising:
``P q . unit(P v) = q . P^T P v / |P v|``, which is ``e_q . e`` wherever the PCA keeps the
catalog's vectors (``P^T P v = v``, ``|P v| = 1``) and its closest value in the kept subspace
otherwise. The ranking is the plain ensemble's (its scale leaves the forest's angular
neighbours unchanged), and so are the scores. A query-side rule: the stored rows, the index
format and Annoy are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

# A query is a catalog-style packshot when at least this share of its border is white backdrop
# (a packshot's is nearly all backdrop but where the strap leaves the frame; a scene's is none).
BACKDROP_BORDER_SHARE = 0.5


class Project(Protocol):
    """An index's projection of model embeddings (R, D) to its rows' space (R, W) (:meth:`Index.project`)."""

    def __call__(self, vectors: np.ndarray, unit: bool = True) -> np.ndarray: ...


@dataclass(frozen=True)
class DescriptorLayout:
    """Where the descriptor block lies in an embedding: its last ``dim`` values, weighing ``weight`` of the cosine."""

    dim: int
    weight: float


def descriptor_layout(encoder: torch.nn.Module) -> DescriptorLayout | None:
    """The layout of ``encoder``'s descriptor block; None for an encoder without one."""
    from simclr_watches.model.descriptor import DescribedEnsemble

    if isinstance(encoder, DescribedEnsemble):
        return DescriptorLayout(encoder.desc_dim, encoder.weight)
    return None


def ensemble_only(vectors: np.ndarray, layout: DescriptorLayout) -> np.ndarray:
    """Query vectors (R, D) whose dot product with a stored item is the plain ensemble's cosine.

    The ensemble block is rescaled by ``1 / (1 - w)`` (it was stored times ``sqrt(1 - w)``) and
    the descriptor block zeroed.
    """
    out = np.array(vectors, dtype=np.float32, copy=True)
    out[:, : -layout.dim] /= 1.0 - layout.weight
    out[:, -layout.dim:] = 0.0
    return out


def is_packshot(backdrop_share: float) -> bool:
    """Whether a query photo is catalog-style: at least ``BACKDROP_BORDER_SHARE`` of its border is white backdrop.

    Such a query keeps the descriptor block (:func:`query_vectors`) and is described as the
    catalog is (:func:`simclr_watches.retrieval.embed.as_catalog`).
    """
    return backdrop_share >= BACKDROP_BORDER_SHARE


def query_vectors(vectors: np.ndarray, backdrop_share: float, layout: DescriptorLayout | None,
                  project: Project | None = None) -> np.ndarray:
    """A query's region vectors as scored, in the index's space: the descriptor block only for a catalog-style photo.

    Args:
        vectors: (R, D) the query's region embeddings (unit rows).
        backdrop_share: share of the query photo's border that is white backdrop (0..1).
        layout: the encoder's descriptor layout; None: the vectors as they are.
        project: the index's projection; None: the model's space.

    Returns:
        (R, W) float32: unit rows (packshot, or a model without a block), or a photo's rows
        whose dot product with a stored row is the plain ensemble's cosine.
    """
    if layout is None or is_packshot(backdrop_share):
        return vectors if project is None else project(vectors)
    plain = ensemble_only(vectors, layout)
    return plain if project is None else project(plain, unit=False)
