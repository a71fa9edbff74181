import re
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from simclr_watches.config import load_config, parse_override, to_dict
from simclr_watches.errors import ConfigError


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
