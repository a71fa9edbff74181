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
from typing import Callable

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
        member: index of the member whose map is described (the ImageNet init): a later
            member, 1..n-1 (the first member's maps feed the box head, ``embed_with_maps``).
        stage: that member's stage (:meth:`Encoder.run_stages`) after which the map is taken;
            it must come after the members' shared stages.
        power: GeM power of :func:`gem_descriptor`.
        weight: share ``w`` of the descriptor's cosine in the embedding's cosine, in (0, 1).

    Shapes:
        input: (B, 3, H, W), normalised for the members.
        forward: (B, sum of the members' D + C), unit L2 norm: the ensemble's embedding
            times sqrt(1 - w), then the descriptor (C channels of the map) times sqrt(w).
        run_members: the members' features, then the descriptor (B, C): what :meth:`combine` takes,
            so that ``parallel`` (the later members in a worker thread) and the box search's
            one pass (``embed_with_maps``) give the same vector.
    """

    def __init__(self, members: list[Encoder], member: int, stage: int, power: float, weight: float):
        super().__init__(members)
        if not 1 <= member < len(members):  # the first member's stages are the box head's (embed_with_maps)
            raise CheckpointError(f"descriptor member {member} is not one of the later members 1..{len(members) - 1}")
        if not self.shared <= stage < len(members[member].stages()):
            raise CheckpointError(f"descriptor stage {stage} must lie after the shared stages ({self.shared}) "
                                  f"and before the pooling head")
        if not (0.0 < weight < 1.0 and power >= 1.0):
            raise CheckpointError(f"descriptor weight must lie in (0, 1) and power be >= 1, got {weight}, {power}")
        self.member, self.stage, self.power, self.weight = member, stage, power, weight
        self.desc_dim = _channels(members[member], stage)
        self.dim += self.desc_dim

    def run_members(self, h: torch.Tensor, first: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    start: int | None = None) -> list[torch.Tensor]:
        """Every member's features (in member order), then the descriptor (B, C): see :meth:`EnsembleEncoder.run_members`."""
        feats = super().run_members(h, first, start)
        both = feats[self.member]  # run_member's (B, D_m + C): the member's features, then the descriptor
        d = self.members[self.member].dim
        feats[self.member] = both[:, :d]
        return [*feats, both[:, d:]]

    def run_member(self, i: int, h: torch.Tensor, start: int) -> torch.Tensor:
        """Member ``i``'s features; the described member's followed by its descriptor (B, D_i + C)."""
        if i != self.member:
            return super().run_member(i, h, start)
        m = self.members[i]
        fmap = m.run_stages(h, start, self.stage)
        return torch.cat([m.run_stages(fmap, self.stage).float(), gem_descriptor(fmap, self.power)], dim=1)

    def combine(self, features: list[torch.Tensor]) -> torch.Tensor:
        """``[sqrt(1 - w) * ensemble embedding, sqrt(w) * descriptor]`` (B, dim) from :meth:`run_members`' list."""
        ens = super().combine(features[:-1])
        return torch.cat([ens * math.sqrt(1.0 - self.weight), features[-1] * math.sqrt(self.weight)], dim=1)


def _channels(encoder: Encoder, stage: int) -> int:
    """Channels of ``encoder``'s map after ``stage`` stages (the last conv's output channels)."""
    convs = [m for mods in encoder.stages()[:stage] for mod in mods for m in mod.modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[-1].out_channels
