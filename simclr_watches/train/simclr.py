"""The SimCLR training model, encoder + projection head, and its AdamW optimiser.

SimCLR (Chen et al. 2020, arXiv:2002.05709, sec. 2.1): a base encoder f(.) gives the
representation h, a small MLP head g(.) maps it to the projection z that the NT-Xent
loss compares. Only the encoder is kept after training (sec. 4.2: h is the better
representation).
"""

from __future__ import annotations

import torch
from torch import nn

from simclr_watches.core.errors import ConfigError
from simclr_watches.model import Encoder
from simclr_watches.train.config import ModelConfig, TrainConfig
from simclr_watches.weights import init_encoder


class SimCLRModel(nn.Module):
    """Encoder + projection head g(.) of SimCLR (Chen et al. 2020, sec. 2.1).

    Shapes:
        input: (B, 3, S, S) normalised.
        output: (B, head_out) projections (unnormalised; NT-Xent normalises them).
    """

    def __init__(self, encoder: Encoder, head: nn.Module, frozen_stages: int = 0):
        super().__init__()
        self.encoder = encoder
        self.head = head
        stages = encoder.stages()
        if frozen_stages > len(stages):
            raise ConfigError(f"model.frozen_stages={frozen_stages}, but {encoder.arch} has {len(stages)} stages")
        self.frozen_stages = frozen_stages
        for m in self.frozen:
            m.requires_grad_(False)

    @property
    def frozen(self) -> list[nn.Module]:
        """The modules of the frozen stages, looked up each time: SyncBatchNorm conversion replaces batch norms."""
        return [m for stage in self.encoder.stages()[:self.frozen_stages] for m in stage]

    def train(self, mode: bool = True) -> "SimCLRModel":
        super().train(mode)
        # Frozen stages keep their batch-norm statistics too, so they stay in eval mode.
        for m in self.frozen:
            m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.features(x))


def build_model(cfg: ModelConfig) -> SimCLRModel:
    """The encoder of ``cfg.arch`` from ``cfg.init`` with lightly's SimCLR projection head (hidden width 0: the encoder's)."""
    from lightly.models.modules import SimCLRProjectionHead

    encoder = init_encoder(cfg.arch, cfg.init)
    head = SimCLRProjectionHead(encoder.dim, cfg.head_hidden or encoder.dim, cfg.head_out)
    return SimCLRModel(encoder, head, cfg.frozen_stages)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; biases and normalisation parameters (1-d tensors) are not weight-decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


def memory_format(cfg: ModelConfig, device: torch.device) -> torch.memory_format:
    """NHWC (channels_last) on CUDA when ``cfg.channels_last``, where bf16 convolutions run faster; else NCHW."""
    return torch.channels_last if cfg.channels_last and device.type == "cuda" else torch.contiguous_format
