"""The tests' seconds-long CPU pretraining config, and one CPU thread for its tiny steps.

A helper module, not a conftest.py: a second conftest would shadow ``from conftest import``
of tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from simclr_watches.train.config import PretrainConfig, load_pretrain_config

TINY = Path(__file__).resolve().parents[2] / "configs" / "pretrain-cpu-tiny.toml"


def tiny(*overrides: str) -> PretrainConfig:
    """configs/pretrain-cpu-tiny.toml (EfficientNet-Lite0, random init, 32 px views) with dotted overrides."""
    return load_pretrain_config(TINY, overrides)


@pytest.fixture
def one_thread():
    """Tiny CPU steps: with several threads on a busy machine, OpenMP waits cost 100x the work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
