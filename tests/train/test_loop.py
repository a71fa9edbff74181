"""The training loop: the learning-rate schedule."""

from __future__ import annotations

import math

import pytest

from simclr_watches.train.config import TrainConfig
from simclr_watches.train.loop import lr_at


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
