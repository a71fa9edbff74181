"""Which queries use the descriptor block of a :class:`~simclr_watches.model.descriptor.DescribedEnsemble`.

The default model's embedding ends with a texture-and-colour block (the ImageNet member's
mid-level map, GeM-pooled) that weighs ``w`` of every cosine: catalog watches then rank
next to watches of the same strap type and colours. Colour and texture compare only
under the catalog's conditions, though: on a photo of a watch in a scene (another
background, its light and colour cast) the block costs more than it brings (watches-dev
on-wrist photos, right watch first: 0.323 without it, 0.228 with it; docs/MODEL_CARD.md).
So a query's block is used only when the query looks like a catalog photo, a watch on a
white backdrop (:func:`simclr_watches.data.mask.crop_and_backdrop`); any other query is
scored by the ensemble block alone, which gives exactly the plain ensemble's cosines:
with ``v = [sqrt(1 - w) e, sqrt(w) d]`` stored per item, the query ``[e_q / sqrt(1 - w), 0]``
has the dot product ``e_q . e`` with every item (and its Annoy neighbours are the same).
This is a query-side rule: the stored vectors, the index format and Annoy are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# A query is a catalog-style packshot when at least this share of its border is white backdrop
# (a packshot's is nearly all backdrop but where the strap leaves the frame; a scene's is none).
BACKDROP_BORDER_SHARE = 0.5


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


def query_vectors(vectors: np.ndarray, backdrop_share: float, layout: DescriptorLayout | None) -> np.ndarray:
    """A query's region vectors (R, D) as scored: with their descriptor block only for a catalog-style photo.

    Args:
        vectors: the query's region embeddings.
        backdrop_share: share of the query photo's border that is white backdrop (0..1).
        layout: the encoder's descriptor layout; None: the vectors as they are.
    """
    if layout is None or backdrop_share >= BACKDROP_BORDER_SHARE:
        return vectors
    return ensemble_only(vectors, layout)
