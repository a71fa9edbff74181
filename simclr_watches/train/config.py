"""The pretraining config: one frozen dataclass per TOML section, every value range-checked.

``configs/pretrain.toml`` holds the defaults written out; ``--set section.key=value``
overrides any key (see :mod:`simclr_watches.core.config`). A run stores its config in
its checkpoints, so ``--resume`` needs no config file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from simclr_watches.core.config import check_range, load_config
from simclr_watches.core.validate import FieldError
from simclr_watches.model import ARCH_DIMS, Preprocessing, default_preprocessing
from simclr_watches.train.augment import AugmentConfig

# Config bounds beyond which a value is a typo, not an experiment (and memory would run out first).
MAX_WIDTH = 65536  # projection head widths
MAX_CACHE_SIDE = 2048  # a catalog cache of 1000 photos at 2048 px is already 16 GB
MAX_SEED = 2**32 - 1  # torch generators take 64 bits; batch_order multiplies the seed by ~1e6
MAX_COUNT = 1_000_000  # epochs, batch sizes, proxy views


@dataclass(frozen=True)
class ModelConfig:
    """Encoder and projection head.

    Attributes:
        arch: encoder architecture, one of ``model.ARCH_DIMS``.
        init: ``imagenet``, ``random`` or the path of a backbone state dict.
        head_hidden: hidden width of the projection head (0: the encoder's width, as in SimCLR).
        head_out: projection width the loss compares (SimCLR: 128).
        channels_last: NHWC memory format on CUDA (faster convolutions with bf16).
        compile: wrap the training model in ``torch.compile``.
        sync_bn: batch-norm statistics over all processes under DDP on CUDA (SimCLR's global BN).
        frozen_stages: leading backbone stages (``Encoder.stages``: the stem counts as one)
            kept at their initial weights and batch-norm statistics. Their backward pass is
            skipped, which makes CPU training several times faster, and a small catalog
            cannot wear away the generic low-level filters of the ImageNet init.
    """

    arch: str = "efficientnet_lite0"
    init: str = "imagenet"
    head_hidden: int = 0
    head_out: int = 128
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = True
    frozen_stages: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ARCH_DIMS:
            raise FieldError("arch", f"unknown architecture {self.arch!r}; known: {', '.join(ARCH_DIMS)}")
        check_range(self, "head_hidden", 0, MAX_WIDTH)
        check_range(self, "head_out", 1, MAX_WIDTH)
        check_range(self, "frozen_stages", 0)


@dataclass(frozen=True)
class DataConfig:
    """The decoded catalog cache.

    Attributes:
        cache_size: side of the cached padded squares; crops are taken from it, so keep it a
            little above ``augment.size``.
        cache_device: ``auto`` (see ``catalog_cache.cache_placement``), ``gpu`` or ``cpu``.
        gpu_fraction: largest share of free GPU memory the cache may take under ``auto``.
    """

    cache_size: int = 256
    cache_device: Literal["auto", "gpu", "cpu"] = "auto"
    gpu_fraction: float = 0.25

    def __post_init__(self) -> None:
        check_range(self, "cache_size", 16, MAX_CACHE_SIDE)
        check_range(self, "gpu_fraction", 0.0, 1.0, low_open=True)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation.

    Attributes:
        epochs: passes over the catalog (each process over its shard).
        batch_size: photos per step per process (each gives two views).
        lr: peak learning rate of AdamW, reached after the warmup.
        min_lr_ratio: the cosine ends at ``lr * min_lr_ratio``.
        warmup_epochs: linear warmup from 0, in epochs (may be fractional).
        weight_decay: AdamW decay of weights; biases and norm parameters are not decayed.
        seed: seeds model init, data order and augmentations.
        checkpoint_every: epochs between checkpoints (one is always written at the end).
        grad_clip: largest global L2 norm of the gradients before each optimiser step; larger
            ones are scaled down to it (Pascanu et al. 2013, arXiv:1211.5063). 0: off.
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 3e-4
    min_lr_ratio: float = 0.01
    warmup_epochs: float = 5.0
    weight_decay: float = 0.05
    seed: int = 0
    checkpoint_every: int = 10
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        check_range(self, "epochs", 1, MAX_COUNT)
        check_range(self, "batch_size", 2, MAX_COUNT)
        check_range(self, "lr", 0.0, 1.0, low_open=True)
        check_range(self, "min_lr_ratio", 0.0, 1.0)
        check_range(self, "warmup_epochs", 0.0)
        if self.warmup_epochs > self.epochs:
            raise FieldError("warmup_epochs", f"must be <= epochs ({self.epochs}), got {self.warmup_epochs}")
        check_range(self, "weight_decay", 0.0, 1.0)
        check_range(self, "seed", 0, MAX_SEED)
        check_range(self, "checkpoint_every", 1, MAX_COUNT)
        check_range(self, "grad_clip", 0.0)


@dataclass(frozen=True)
class LossConfig:
    """NT-Xent (Chen et al. 2020, eq. 1).

    Attributes:
        temperature: softmax temperature of the cosine similarities (lightly's NTXentLoss
            refuses values below 1e-8).
    """

    temperature: float = 0.2

    def __post_init__(self) -> None:
        check_range(self, "temperature", 1e-8, 10.0)


@dataclass(frozen=True)
class EvalConfig:
    """The label-free retrieval proxy logged after every epoch.

    Attributes:
        proxy_views: how many catalog photos get one fixed augmented view, held aside
            (made once, from ``proxy_seed``); the proxy is the fraction of those views whose
            nearest catalog embedding is their own source photo.
        proxy_seed: seed of those views, independent of training randomness.
        batch_size: photos per forward pass when embedding.
    """

    proxy_views: int = 256
    proxy_seed: int = 1234
    batch_size: int = 256

    def __post_init__(self) -> None:
        check_range(self, "proxy_views", 1, MAX_COUNT)
        check_range(self, "proxy_seed", 0, MAX_SEED)
        check_range(self, "batch_size", 1, MAX_COUNT)


@dataclass(frozen=True)
class PretrainConfig:
    """Everything a pretraining run depends on (stored in its checkpoints)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def preprocessing(self) -> Preprocessing:
        """The encoder's input: views of side ``augment.size``, normalised for ``model.arch``."""
        return default_preprocessing(self.model.arch, self.augment.size)


def load_pretrain_config(path: Path | str | None, overrides: Sequence[str] = ()) -> PretrainConfig:
    """Reads a pretraining config TOML with dotted overrides (see :func:`config.load_config`)."""
    return load_config(PretrainConfig, Path(path) if path is not None else None, overrides)
