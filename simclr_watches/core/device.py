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


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: CUDA, or a CPU with AVX512-BF16 (oneDNN then runs
    convolutions in it, about 1.4x faster than float32 for EfficientNet-Lite0 on one core of an AMD EPYC
    Zen 4). Elsewhere bfloat16 is emulated, slower than float32.
    """
    if device.type == "cuda":
        return True
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private in torch 2.x: absent means no
    return device.type == "cpu" and probe is not None and bool(probe())


def inference_autocast(device: torch.device) -> torch.autocast:
    """The autocast an encoder's inference runs under: bfloat16 where :func:`native_bf16`, else off.

    Embeddings in bfloat16 differ from float32's by rounding (cosine to the float32 embedding
    about 0.9997): an index built in one precision is searched in the other alike.
    """
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=native_bf16(device))
