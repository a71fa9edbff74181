"""The pretraining config: the shipped file is the documented defaults; unknown keys and out-of-range values are errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from simclr_watches.core.errors import ConfigError
from simclr_watches.train.config import PretrainConfig, load_pretrain_config

from helpers import tiny

REPO = Path(__file__).resolve().parents[2]


def test_shipped_config_is_the_documented_defaults():
    assert load_pretrain_config(REPO / "configs" / "pretrain.toml") == PretrainConfig()


def test_an_unknown_key_is_an_error_naming_the_file_and_key():
    with pytest.raises(ConfigError, match="pretrain-cpu-tiny.toml: unknown config key.*train.epoch\\b"):
        tiny("train.epoch=3")


@pytest.mark.parametrize("value, got", [("-1", "-1.0"), ("nan", "nan"), ("inf", "inf")])
def test_grad_clip_is_range_checked(value, got):
    with pytest.raises(ConfigError, match=rf"train\.grad_clip: must be >= 0, got {got}$"):
        tiny(f"train.grad_clip={value}")
    assert tiny().train.grad_clip == 0.0 and tiny("train.grad_clip=1").train.grad_clip == 1.0


def test_the_gpu_recipe_loads_and_its_run_state_fits_the_device_transfer():
    """configs/pretrain-watches-lite0-v2-gpu.toml (scripts/gpu/run-on-gpu.sh): valid, and its head small enough
    that the run's packed state (weights 4 B + bfloat16 moments 2 x 2 B a parameter) stays within the 32 MiB a
    resuming device call has for it: 64 MiB less the repository (9), wheels (8), packed data (12) and a margin."""
    from simclr_watches.train.simclr import build_model

    cfg = load_pretrain_config(REPO / "configs" / "pretrain-watches-lite0-v2-gpu.toml")
    assert cfg.model.compile and cfg.model.channels_last and cfg.model.frozen_stages == 0
    assert cfg.augment.size == 224 and cfg.data.cache_size >= cfg.augment.size
    with torch.device("meta"):
        params = sum(p.numel() for p in build_model(replace(cfg.model, init="random")).parameters())
    assert params * 8 <= 32 << 20  # the encoder's 1280-wide head would need 39.5 MiB
