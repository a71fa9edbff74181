"""Output-space ensembles: several encoders as one, every member's cosine weighing the same."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from simclr_watches.core.errors import CheckpointError
from simclr_watches.model.encoder import Encoder, shared_stages


class EnsembleEncoder(nn.Module):
    """Output-space ensemble of encoders: their unit embeddings, concatenated, over sqrt(n).

    The cosine of two ensemble embeddings is then the mean of the members' cosines: every
    member votes equally. Ensembling a fine-tuned model with its initialisation this way
    keeps what the initial model knew about shifts the fine-tuning data never showed
    (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022, output-space
    ensembles): here, SimCLR on clean packshots with ImageNet, which has seen real scenes.

    All members see the same input. Leading stages the members share (see
    :func:`shared_stages`; a SimCLR run with ``frozen_stages`` keeps its init's) are
    computed once, by the first member.

    Shapes:
        input: (B, 3, H, W), normalised for the members (they must agree on normalisation).
        forward: (B, sum of the members' D), unit L2 norm.
    """

    def __init__(self, members: Sequence[Encoder]):
        super().__init__()
        if len(members) < 2:
            raise CheckpointError("an ensemble needs at least two encoders")
        self.members = nn.ModuleList(members)
        self.arch = "+".join(m.arch for m in members)
        self.dim = sum(m.dim for m in members)
        self.shared = shared_stages(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.members[0].run_stages(x, 0, self.shared)
        parts = [F.normalize(m.run_stages(h, self.shared).float(), dim=1) for m in self.members]
        return torch.cat(parts, dim=1) / math.sqrt(len(parts))
