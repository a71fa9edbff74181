"""The training loop: the learning-rate schedule, stopping on a non-finite loss, gradient clipping."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from simclr_watches.train.augment import SimCLRAugment
from simclr_watches.train.catalog_cache import CatalogCache, build_cache
from simclr_watches.train.config import PretrainConfig, TrainConfig
from simclr_watches.train.divergence import TrainingDivergedError
from simclr_watches.train.loop import lr_at, simclr_step, train_one_epoch
from simclr_watches.train.run import build_training

from helpers import tiny

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(epochs=10, lr=1e-3, warmup_epochs=2, min_lr_ratio=0.1)
    spe = 5
    lrs = [lr_at(s, cfg, spe) for s in range(50)]
    assert lrs[0] == pytest.approx(1e-4)  # 1/10 of the way up
    assert lrs[9] == pytest.approx(1e-3)  # end of warmup: the peak
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(50, cfg, spe) == pytest.approx(1e-4)  # the floor
    mid = 10 + 20
    assert lrs[mid] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(7, cfg, spe) == lrs[7]  # pure


@dataclass
class Epoch:
    """The collaborators of ``train_one_epoch`` as a run builds them: 8 photos, 2 per step, so 4 steps."""

    cfg: PretrainConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    augment: SimCLRAugment
    cache: CatalogCache

    def run(self, *, epoch: int = 1, step: int = 4) -> tuple[int, float]:
        """The second epoch by default: global steps 5 to 8."""
        return train_one_epoch(self.model, self.criterion, self.optimizer, self.augment, self.cfg.preprocessing,
                               self.cache, epoch=epoch, step=step, cfg=self.cfg, device=CPU)


@pytest.fixture
def parts(make_catalog) -> Epoch:
    """An :class:`Epoch` of the tiny config; a test may replace any collaborator before ``run``."""
    cfg = tiny("train.batch_size=2")
    torch.manual_seed(0)
    model, optimizer, criterion, augment = build_training(cfg, CPU)
    return Epoch(cfg, model, optimizer, criterion, augment, build_cache(make_catalog(8), cfg.data.cache_size, progress=False))


class PoisonedLoss(nn.Module):
    """The real criterion, times ``poison`` (nan or inf) from call ``bad_from`` on (1-based); counts its calls."""

    def __init__(self, criterion: nn.Module, bad_from: int, poison: float):
        super().__init__()
        self.criterion, self.bad_from, self.poison, self.calls = criterion, bad_from, poison, 0

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = self.criterion(z1, z2)
        return loss * self.poison if self.calls >= self.bad_from else loss


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_a_non_finite_loss_stops_the_epoch_naming_its_step(parts, poison):
    parts.criterion = PoisonedLoss(parts.criterion, bad_from=2, poison=poison)
    with pytest.raises(TrainingDivergedError, match=rf"the loss became {poison} at epoch 2, step 6\b.*train\.lr"):
        parts.run()
    # Found when the loss was read at the end of the epoch, not by a read (a device sync) after every step.
    assert parts.criterion.calls == 4


def test_a_non_finite_loss_is_found_at_the_periodic_read(parts):
    """The loss is read for the progress bar at global steps 1, 21, 41, ...: a bad step 1 stops the epoch there."""
    parts.criterion = PoisonedLoss(parts.criterion, bad_from=1, poison=float("nan"))
    with pytest.raises(TrainingDivergedError, match=r"the loss became nan at epoch 1, step 1\b"):
        parts.run(epoch=0, step=0)
    assert parts.criterion.calls == 1


def test_weights_that_turn_non_finite_with_a_finite_loss_stop_the_epoch(parts):
    """The last step's loss is finite but its update is not: the epoch must not end with those weights."""
    real_step, steps = parts.optimizer.step, []

    def step(*args, **kwargs):
        real_step(*args, **kwargs)
        steps.append(1)
        if len(steps) == 4:
            with torch.no_grad():
                parts.optimizer.param_groups[0]["params"][0].view(-1)[0] = float("inf")

    parts.optimizer.step = step
    with pytest.raises(TrainingDivergedError, match=r"the weights became non-finite at epoch 2, by step 8\b"):
        parts.run()


def _sgd_step(grad_clip: float) -> tuple[float, float]:
    """One ``simclr_step`` of the tiny model with plain SGD (update = lr x gradient); (gradient norm, update norm)."""
    torch.manual_seed(0)
    model, _, criterion, _ = build_training(tiny(), CPU)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    simclr_step(model, criterion, torch.optim.SGD(params, lr=0.1), x, CPU, grad_clip=grad_clip)
    grad = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    update = torch.linalg.vector_norm(torch.stack([(p.detach() - b).norm() for p, b in zip(params, before)]))
    return float(grad), float(update)


def test_grad_clip_bounds_the_gradient_norm_and_shrinks_the_update():
    grad, update = _sgd_step(0.0)
    bound = grad / 100  # a tiny clip
    clipped_grad, clipped_update = _sgd_step(bound)
    assert clipped_grad <= bound * (1 + 1e-5)
    assert clipped_update < update / 50
    assert clipped_update == pytest.approx(0.1 * clipped_grad, rel=1e-3)  # SGD moved by the clipped gradient
    assert _sgd_step(grad * 10) == pytest.approx((grad, update), rel=1e-6)  # a bound above the norm changes nothing


def test_the_epoch_clips_with_train_grad_clip(parts, monkeypatch):
    bounds, clip = [], torch.nn.utils.clip_grad_norm_

    def recorded(params, max_norm, **kwargs):
        bounds.append(max_norm)
        return clip(params, max_norm, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recorded)
    parts.run()
    assert bounds == []  # the default, 0: off, as before
    parts.cfg = tiny("train.batch_size=2", "train.grad_clip=0.5")
    parts.run(epoch=2, step=8)
    assert bounds == [0.5] * 4
