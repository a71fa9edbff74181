"""Training checkpoints of pretraining: everything a resume needs, in one torch file.

The file holds only tensors and plain data, so it is read with
``torch.load(weights_only=True)``: loading a checkpoint never runs code from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from simclr_watches.core.atomic import atomic_path
from simclr_watches.core.errors import CheckpointError
from simclr_watches.weights import load_weights_only

CHECKPOINT_FORMAT = "simclr-watches-pretrain"
CHECKPOINT_VERSION = 1
# What a resume reads from the file, and the type each must have.
_FIELDS = {"config": dict, "epoch": int, "step": int, "model": dict, "optimizer": dict, "rng": list, "metrics": list}


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The RNG states the augmentations draw from (Kornia uses torch's generators)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_training_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, *, config: dict[str, Any],
                             epoch: int, step: int, rng: list[dict[str, torch.Tensor]], metrics: list[dict]) -> None:
    """Writes everything a resume needs, atomically; readable with ``torch.load(weights_only=True)``.

    Args:
        epoch: epochs completed.
        rng: RNG states of every process, by rank.
    """
    state = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "config": config,
        "epoch": epoch,
        "step": step,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "rng": rng,
        "metrics": metrics,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """Reads a training checkpoint (tensors and plain data only).

    Raises:
        CheckpointError: missing, unreadable, a pickle of other objects, not a pretraining
            checkpoint of a known version, or a field a resume needs missing or of a wrong type.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: no training checkpoint to resume from")
    ckpt = load_weights_only(path, "a training checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a simclr-watches pretraining checkpoint")
    version = ckpt.get("format_version")
    if type(version) is not int or version < 1:
        raise CheckpointError(f"{path}: field 'format_version' must be a positive integer, got {version!r}")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format v{version} is newer than this program")
    for key, kind in _FIELDS.items():
        if not isinstance(ckpt.get(key), kind) or isinstance(ckpt.get(key), bool):
            raise CheckpointError(f"{path}: field {key!r} must be {kind.__name__}, got {type(ckpt.get(key)).__name__}")
    return ckpt
