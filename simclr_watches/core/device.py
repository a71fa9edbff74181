"""Which torch device a command runs on (``--device auto|cpu|cuda|cuda:N``), and with how many threads."""

from __future__ import annotations

import contextlib
from typing import Iterator

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


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Torch ops of the calling thread use ``n`` intra-op threads inside the block (None: unchanged).

    With OpenMP the setting is the calling thread's own: other threads (a server's other
    requests) keep theirs, and the previous value comes back on exit.
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
