"""The box head's training config: frozen dataclasses read from TOML (``configs/box-lite0.toml``), dotted overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from simclr_watches.core.config import check_range, load_config
from simclr_watches.detect.composites import CompositeConfig

MAX_COUNT = 1_000_000


@dataclass(frozen=True)
class BoxDataConfig:
    """Where the composites' pictures come from.

    Attributes:
        catalog: a manifest CSV with a ``kind`` column (only its ``packshot`` rows are used:
            on-wrist ``lifestyle`` photos are evaluation queries and never enter training), or
            a folder of packshots.
        objects: a folder of photos of other objects on black (COIL-100) for backgrounds and
            distractors; empty: procedural backgrounds only.
        objects_every: use every n-th photo of ``objects`` (sorted by path).
        synthetic: synthetic watches (:mod:`simclr_watches.data.synth`) added to the packshots.
        synth_seed: their seed.
        held_aside: share of the catalog's groups (by a hash of the group id) kept out of
            training, their composites measuring the box's quality on watches never seen.
        train: composites to train on.
        test: held-aside composites to measure on.
        seed: seed of the composites.
    """

    catalog: str = ""
    objects: str = ""
    objects_every: int = 3
    synthetic: int = 200
    synth_seed: int = 17
    held_aside: float = 0.1
    train: int = 6000
    test: int = 600
    seed: int = 0

    def __post_init__(self) -> None:
        check_range(self, "objects_every", 1, MAX_COUNT)
        check_range(self, "synthetic", 0, MAX_COUNT)
        check_range(self, "synth_seed", 0, 2**32 - 1)
        check_range(self, "held_aside", 0.0, 0.9)
        check_range(self, "train", 1, MAX_COUNT)
        check_range(self, "test", 1, MAX_COUNT)
        check_range(self, "seed", 0, 2**32 - 1)


@dataclass(frozen=True)
class BoxModelConfig:
    """The frozen encoder whose maps the head reads, and the head.

    Attributes:
        encoder: a checkpoint path or registered name; an ensemble's first member is read.
        width: hidden channels of the head.
    """

    encoder: str = "watches-lite0-v1-ens"
    width: int = 96

    def __post_init__(self) -> None:
        check_range(self, "width", 4, 4096)


@dataclass(frozen=True)
class BoxTrainConfig:
    """Optimisation of the head on cached feature maps."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        check_range(self, "epochs", 1, MAX_COUNT)
        check_range(self, "batch_size", 1, MAX_COUNT)
        check_range(self, "lr", 0.0, 10.0, low_open=True)
        check_range(self, "weight_decay", 0.0, 10.0)
        check_range(self, "seed", 0, 2**32 - 1)


@dataclass(frozen=True)
class BoxConfig:
    """Everything a box-head training run depends on (stored in the head's file)."""

    data: BoxDataConfig = field(default_factory=BoxDataConfig)
    composites: CompositeConfig = field(default_factory=CompositeConfig)
    model: BoxModelConfig = field(default_factory=BoxModelConfig)
    train: BoxTrainConfig = field(default_factory=BoxTrainConfig)


def load_box_config(path: Path | str | None, overrides: Sequence[str] = ()) -> BoxConfig:
    """Reads a box config TOML with dotted overrides (see :func:`simclr_watches.core.config.load_config`)."""
    return load_config(BoxConfig, Path(path) if path is not None else None, overrides)
