"""A texture-and-colour descriptor block added to an ensemble's embedding, so neighbours share strap and colour.

The final pooled features of a SimCLR-tuned encoder are taught to ignore colour and
texture (its augmentations change both); a mid-level feature map of the ImageNet member
still holds them. :class:`DescribedEnsemble` appends a GeM-pooled descriptor of one
member's intermediate map (Radenović, Tolias & Chum, "Fine-tuning CNN image retrieval with
no human annotation", TPAMI 2018: generalised-mean pooling of a convolutional map) to the
ensemble's embedding, weighted so that the cosine of two embeddings is
``(1 - w) * ensemble cosine + w * descriptor cosine``. The index, Annoy and every scorer
see one unit vector: nothing else changes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from simclr_watches.core.errors import CheckpointError
from simclr_watches.model.encoder import Encoder
from simclr_watches.model.ensemble import EnsembleEncoder


def gem_descriptor(fmap: torch.Tensor, p: float) -> torch.Tensor:
    """Generalised-mean pooled, per-vector centred, unit descriptor of a feature map.

    ``g_c = (mean over positions of max(x, eps)^p)^(1/p)``; the vector's own mean over
    channels is subtracted (the map's channels all respond to a watch on white, which would
    otherwise make every pair of descriptors almost parallel), then it is L2-normalised.

    Args:
        fmap: (B, C, H, W) feature map.
        p: GeM power (1: average pooling; large: max pooling).

    Returns:
        (B, C) float32, unit L2 norm.
    """
    g = fmap.float().clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p)
    return F.normalize(g - g.mean(dim=1, keepdim=True), dim=1)


class DescribedEnsemble(EnsembleEncoder):
    """An output-space ensemble whose embedding carries a weighted mid-level descriptor block.

    Args:
        members: the ensemble's encoders (see :class:`EnsembleEncoder`).
        member: index of the member whose map is described (the ImageNet init).
        stage: that member's stage (:meth:`Encoder.run_stages`) after which the map is taken;
            it must come after the members' shared stages.
        power: GeM power of :func:`gem_descriptor`.
        weight: share ``w`` of the descriptor's cosine in the embedding's cosine, in (0, 1).

    Shapes:
        input: (B, 3, H, W), normalised for the members.
        forward: (B, sum of the members' D + C), unit L2 norm: the ensemble's embedding
            times sqrt(1 - w), then the descriptor (C channels of the map) times sqrt(w).
    """

    def __init__(self, members: list[Encoder], member: int, stage: int, power: float, weight: float):
        super().__init__(members)
        if not 0 <= member < len(members):
            raise CheckpointError(f"descriptor member {member} is not one of the {len(members)} members")
        if not self.shared <= stage < len(members[member].stages()):
            raise CheckpointError(f"descriptor stage {stage} must lie after the shared stages ({self.shared}) "
                                  f"and before the pooling head")
        if not (0.0 < weight < 1.0 and power >= 1.0):
            raise CheckpointError(f"descriptor weight must lie in (0, 1) and power be >= 1, got {weight}, {power}")
        self.member, self.stage, self.power, self.weight = member, stage, power, weight
        self.desc_dim = _channels(members[member], stage)
        self.dim += self.desc_dim

    def tail(self, h: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
        """The embedding from the output of the shared stages.

        Args:
            h: (B, ...) output of the first ``self.shared`` stages.
            first: the first member's unit embedding when the caller already has it, else None.

        Returns:
            (B, self.dim) unit vectors.
        """
        parts, desc = [], None
        for i, m in enumerate(self.members):
            if i == 0 and first is not None:
                parts.append(first)
                continue
            if i == self.member:
                fmap = m.run_stages(h, self.shared, self.stage)
                desc = gem_descriptor(fmap, self.power)
                out = m.run_stages(fmap, self.stage)
            else:
                out = m.run_stages(h, self.shared)
            parts.append(F.normalize(out.float(), dim=1))
        ens = torch.cat(parts, dim=1) / math.sqrt(len(parts))
        return torch.cat([ens * math.sqrt(1.0 - self.weight), desc * math.sqrt(self.weight)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.members[0].run_stages(x, 0, self.shared))


def _channels(encoder: Encoder, stage: int) -> int:
    """Channels of ``encoder``'s map after ``stage`` stages (the last conv's output channels)."""
    convs = [m for mods in encoder.stages()[:stage] for mod in mods for m in mod.modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[-1].out_channels
