import re
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from simclr_watches.core.config import load_config, parse_override, to_dict
from simclr_watches.core.errors import ConfigError


@dataclass(frozen=True)
class Train:
    epochs: int = 10
    lr: float = 1e-3
    compile: bool = False
    optimizer: Literal["adamw", "lars"] = "adamw"
    sizes: tuple[int, int] = (224, 224)
    resume_from: Optional[str] = None


@dataclass(frozen=True)
class Cfg:
    name: str = "run"
    train: Train = field(default_factory=Train)


def test_defaults_without_file():
    assert load_config(Cfg) == Cfg()


def test_toml_and_dotted_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('name = "x"\n[train]\nepochs = 3\nlr = 1\n')
    cfg = load_config(Cfg, p, ["train.epochs=50", "train.optimizer=lars", "train.sizes=[64, 32]"])
    assert cfg == Cfg(name="x", train=Train(epochs=50, lr=1.0, optimizer="lars", sizes=(64, 32)))
    assert isinstance(cfg.train.lr, float)
    assert to_dict(cfg)["train"]["sizes"] == [64, 32]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=5", "unknown config key(s) train.epoch"),
        ("train.epochs=5.5", "train.epochs: expected an integer"),
        ("train.epochs=true", "train.epochs: expected an integer"),
        ("train.compile=1", "train.compile: expected bool"),
        ("train.optimizer=sgd", "expected one of ['adamw', 'lars']"),
        ("train.sizes=[1]", "expected 2 values"),
        ("nokey", "expected KEY=VALUE"),
    ],
)
def test_bad_overrides_are_errors(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(Cfg, None, [override])


def test_bad_file_is_named(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[train\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(Cfg, p)
    with pytest.raises(ConfigError, match="missing.toml: config file not found"):
        load_config(Cfg, tmp_path / "missing.toml")
    p.write_text("[train]\nwarmup = 1\n")
    with pytest.raises(ConfigError, match="bad.toml: unknown config key"):
        load_config(Cfg, p)


def test_override_values_parse_as_toml_else_string():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=hello world") == (["a"], "hello world")
    assert parse_override('a="q"') == (["a"], "q")


# Issue 12: every pretraining config value is range-checked; config files are bounded.


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", "train.lr: must be in (0, 1], got -1.0"),
    ("train.lr=nan", "train.lr: must be in (0, 1], got nan"),
    ("train.weight_decay=inf", "train.weight_decay: must be in [0, 1], got inf"),
    ("train.warmup_epochs=500", "train.warmup_epochs: must be <= epochs (100), got 500.0"),
    ("train.seed=-1", "train.seed: must be in [0, 4294967295], got -1"),
    ("train.batch_size=1", "train.batch_size: must be in [2, 1000000], got 1"),
    ("loss.temperature=0", "loss.temperature: must be in [1e-08, 10], got 0.0"),
    ("loss.temperature=1e-9", "loss.temperature: must be in [1e-08, 10], got 1e-09"),
    ("eval.proxy_views=0", "eval.proxy_views: must be in [1, 1000000], got 0"),
    ("data.cache_size=100000", "data.cache_size: must be in [16, 2048], got 100000"),
    ("data.gpu_fraction=0", "data.gpu_fraction: must be in (0, 1], got 0.0"),
    ("model.head_out=0", "model.head_out: must be in [1, 65536], got 0"),
    ("model.frozen_stages=-2", "model.frozen_stages: must be >= 0, got -2"),
    ('model.arch="vit"', "model.arch: unknown architecture 'vit'"),
    ("augment.crop_scale=[0.9, 0.1]", "augment.crop_scale: must be [lowest, highest], got [0.9, 0.1]"),
    ("augment.gamma=[0, 1]", "augment.gamma: must be in (0, 10] each, got [0.0, 1.0]"),
    ("augment.hue=0.6", "augment.hue: must be in [0, 0.5], got 0.6"),
    ("augment.size=5000", "augment.size: must be in [8, 1024], got 5000"),
    ("augment.flip_p=2", "augment.flip_p: must be in [0, 1], got 2.0"),
    ("augment.background_weights=[0, 0, 0, 0]", "augment.background_weights: must have a positive sum"),
])
def test_every_pretraining_value_is_range_checked(override, message):
    from simclr_watches.train.config import load_pretrain_config

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_pretrain_config(None, [override])


def test_shipped_pretraining_configs_are_in_range():
    from pathlib import Path

    from simclr_watches.train.config import load_pretrain_config

    for path in sorted((Path(__file__).resolve().parents[2] / "configs").glob("pretrain*.toml")):
        load_pretrain_config(path)


@pytest.mark.slow
def test_cli_pretrain_with_an_out_of_range_value_is_a_one_line_error(make_catalog, tmp_path):
    from helpers import assert_user_error, run_cli

    proc = run_cli("pretrain", make_catalog(2), "--out", tmp_path / "run", "--set", "train.lr=-1")
    assert_user_error(proc, "train.lr: must be in (0, 1], got -1.0")
    assert not (tmp_path / "run").exists()


def test_config_files_are_bounded_and_regular(tmp_path):
    from simclr_watches.core.files import MAX_TEXT_BYTES

    big = tmp_path / "big.toml"
    with open(big, "wb") as f:  # sparse: nothing may read it
        f.truncate(MAX_TEXT_BYTES + 1)
    with pytest.raises(ConfigError, match=f"big.toml: too large: {MAX_TEXT_BYTES + 1} bytes exceeds the limit"):
        load_config(Cfg, big)
    with pytest.raises(ConfigError, match="a folder, not a file"):
        load_config(Cfg, tmp_path)
    (tmp_path / "latin1.toml").write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="latin1.toml: not UTF-8 text"):
        load_config(Cfg, tmp_path / "latin1.toml")


def test_deeply_nested_values_are_an_error_not_a_crash(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(Cfg, None, [f"name={deep}"])
    (tmp_path / "deep.toml").write_text(f"name = {deep}\n")
    with pytest.raises(ConfigError, match="deep.toml: nested too deeply"):
        load_config(Cfg, tmp_path / "deep.toml")


def test_metrics_json_is_bounded(small_checkpoint, tmp_path):
    from typer.testing import CliRunner

    from simclr_watches.cli import app
    from simclr_watches.core.files import MAX_TEXT_BYTES

    big = tmp_path / "eval.json"
    with open(big, "wb") as f:
        f.truncate(MAX_TEXT_BYTES + 1)
    res = CliRunner().invoke(app, ["export", str(small_checkpoint), "--out", str(tmp_path / "m.safetensors"), "--metrics", str(big)])
    assert res.exit_code == 2 and f"{big}: not a readable JSON file: too large: {MAX_TEXT_BYTES + 1} bytes" in res.stderr
    assert not (tmp_path / "m.safetensors").exists()


@dataclass(frozen=True)
class Ranged:
    rate: float = 0.5

    def __post_init__(self) -> None:
        from simclr_watches.core.config import check_range

        check_range(self, "rate", 0.0, 1.0)


def test_range_checks_raise_the_one_field_error_and_name_the_full_key():
    """Config range checks and untrusted-file checks share one FieldError (core.validate)."""
    from simclr_watches.core.validate import FieldError

    with pytest.raises(FieldError) as err:
        Ranged(rate=2.0)
    assert (err.value.field, err.value.problem) == ("rate", "must be in [0, 1], got 2.0")

    @dataclass(frozen=True)
    class Outer:
        inner: Ranged = field(default_factory=Ranged)

    with pytest.raises(ConfigError, match=re.escape("inner.rate: must be in [0, 1], got 2.0")):
        load_config(Outer, None, ["inner.rate=2"])
