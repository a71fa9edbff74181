"""One encoder pass that gives both the embedding and the feature maps the box head reads.

The box head reads an EfficientNet-Lite0's blocks[4] (stride 16) and blocks[6] (stride 32)
outputs. For an :class:`~simclr_watches.model.Encoder` that is the encoder itself; for an
:class:`~simclr_watches.model.EnsembleEncoder`, its first member (the default model's
``watches-lite0-v1``; for a :class:`~simclr_watches.model.descriptor.DescribedEnsemble` too, whose
later member adds its descriptor block in :meth:`~simclr_watches.model.EnsembleEncoder.run_members`).
:func:`embed_with_maps` runs the same stages as the encoder's own ``forward`` (shared ensemble
stages once, the members side by side when ``parallel``), keeping the two maps on the way: finding the
watch in a photo costs the head alone, not a second backbone pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from simclr_watches.core.errors import CheckpointError
from simclr_watches.model import Encoder, EnsembleEncoder

# Stages of Encoder.run_stages: 0 the stem, 1-7 blocks[0-6], 8 the pooling head.
AFTER_BLOCK4, AFTER_BLOCK6 = 6, 8


def box_backbone(encoder: Encoder | EnsembleEncoder) -> Encoder:
    """The encoder whose maps the box head reads: the encoder, or an ensemble's first member.

    Raises:
        CheckpointError: not an EfficientNet-Lite0 (the head's channel counts are Lite0's).
    """
    first = encoder.members[0] if isinstance(encoder, EnsembleEncoder) else encoder
    if first.arch != "efficientnet_lite0":
        raise CheckpointError(f"the box head reads EfficientNet-Lite0 feature maps, not {first.arch}'s")
    return first


def maps(backbone: Encoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two maps of a normalised batch (B, 3, S, S): (B, 112, S/16, S/16) and (B, 320, S/32, S/32)."""
    f16 = backbone.run_stages(x, 0, AFTER_BLOCK4)
    return f16, backbone.run_stages(f16, AFTER_BLOCK4, AFTER_BLOCK6)


def embed_with_maps(encoder: Encoder | EnsembleEncoder,
                    x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``encoder(x)`` and the box head's two maps, in one pass.

    Args:
        x: (B, 3, S, S) normalised input.

    Returns:
        embedding (B, D) unit vectors, equal to ``encoder(x)``; f16 (B, 112, S/16, S/16); f32 (B, 320, S/32, S/32).
    """
    first = box_backbone(encoder)
    shared = encoder.shared if isinstance(encoder, EnsembleEncoder) else 0
    shared = min(shared, AFTER_BLOCK4)
    kept: list[torch.Tensor] = []

    def first_with_maps(h: torch.Tensor) -> torch.Tensor:
        kept.append(first.run_stages(h, shared, AFTER_BLOCK4))
        kept.append(first.run_stages(kept[0], AFTER_BLOCK4, AFTER_BLOCK6))
        return first.run_stages(kept[1], AFTER_BLOCK6)

    h = first.run_stages(x, 0, shared)
    if not isinstance(encoder, EnsembleEncoder):
        return F.normalize(first_with_maps(h).float(), dim=1), kept[0], kept[1]
    return encoder.combine(encoder.run_members(h, first_with_maps, shared)), kept[0], kept[1]
