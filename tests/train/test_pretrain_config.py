"""The pretraining config: the shipped file is the documented defaults; unknown keys and out-of-range values are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

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
