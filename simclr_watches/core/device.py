"""Which torch device a command runs on: ``--device auto|cpu|cuda|cuda:N``."""

from __future__ import annotations

import torch

from simclr_watches.core.errors import SimclrWatchesError


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU.

    Raises:
        SimclrWatchesError: unknown device, or CUDA asked for but absent.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SimclrWatchesError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SimclrWatchesError(f"device {device!r} asked for, but CUDA is not available")
    return dev
