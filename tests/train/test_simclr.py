"""The SimCLR model and loss: NT-Xent as in the paper, positive pairs, frozen stages."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from simclr_watches.core.errors import ConfigError
from simclr_watches.train.loop import simclr_step
from simclr_watches.train.run import build_training

from helpers import tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent written out from Chen et al. 2020, eq. 1, averaged over all 2B anchors."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z)
    b = n // 2
    total = torch.zeros(())
    for i in range(n):
        positive = (i + b) % n
        sims = torch.stack([z[i] @ z[k] / temperature for k in range(n) if k != i])
        pos = z[i] @ z[positive] / temperature
        total = total - (pos - torch.logsumexp(sims, dim=0))
    return total / n


def test_lightly_nt_xent_matches_the_paper():
    from lightly.loss import NTXentLoss

    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    for t in (0.1, 0.5):
        assert torch.allclose(NTXentLoss(temperature=t)(z1, z2), naive_nt_xent(z1, z2, t), atol=1e-5)


def test_views_of_the_same_photo_are_the_positive_pairs():
    from lightly.loss import NTXentLoss

    torch.manual_seed(1)
    z1 = torch.randn(8, 16)
    z2 = z1 + 0.05 * torch.randn(8, 16)  # row i of each view batch comes from photo i
    loss = NTXentLoss(temperature=0.2)
    assert loss(z1, z2) < loss(z1, z2.roll(1, dims=0)) - 1.0


def test_frozen_stages_keep_their_weights_and_statistics():
    cfg = tiny("model.frozen_stages=3")
    torch.manual_seed(0)
    model, optimizer, criterion, _ = build_training(cfg, torch.device("cpu"))
    stages = model.encoder.stages()
    assert len(stages) == 8  # EfficientNet-Lite0: stem + 7 block groups
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    for _ in range(2):
        simclr_step(model, criterion, optimizer, torch.randn(8, 3, 32, 32), torch.device("cpu"))
    after = model.state_dict()
    frozen = {id(m) for stage in stages[:3] for m in stage}
    frozen_keys = {f"encoder.backbone.{name}.{k}" for name, m in model.encoder.backbone.named_modules()
                   if id(m) in frozen for k in m.state_dict()}
    assert frozen_keys and all(k in before for k in frozen_keys)
    for k in before:
        changed = not torch.equal(before[k], after[k])
        if k in frozen_keys:
            assert not changed, k  # weights and batch-norm running statistics
        elif k.startswith("encoder.backbone.blocks.3.") and k.endswith("running_mean"):
            assert changed, k  # the first trained stage learns and updates its statistics
    trainable = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert all(id(p) not in trainable for stage in stages[:3] for m in stage for p in m.parameters())
    with pytest.raises(ConfigError, match="frozen_stages=9, but efficientnet_lite0 has 8 stages"):
        build_training(tiny("model.frozen_stages=9"), torch.device("cpu"))
