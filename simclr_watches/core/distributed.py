"""Several processes under ``torchrun`` (DDP): who this process is, its device, and the collectives a run needs.

A plain launch is rank 0 of a world of 1, and every helper here is then a no-op.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run's files and prints."""
        return self.rank == 0


def dist_from_env() -> DistInfo:
    """Reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK; a plain launch is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """Under DDP on CUDA, this process's GPU ``cuda:LOCAL_RANK`` (made current); else ``device`` itself."""
    if info.world > 1 and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return device


@contextmanager
def process_group(info: DistInfo, device: torch.device) -> Iterator[None]:
    """Joins the process group for the block (NCCL on CUDA, gloo on CPU) unless alone or already in one."""
    start = info.world > 1 and not dist.is_initialized()
    if start:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
        if start:  # no rank tears the group down while a peer still talks to it (gloo then aborts the process)
            dist.barrier()
    finally:
        if start:
            dist.destroy_process_group()


def all_ranks(obj: Any, info: DistInfo) -> list[Any]:
    """``obj`` of every process, by rank (a picklable object; every process must call this)."""
    if info.world == 1:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(value: float, device: torch.device, info: DistInfo) -> float:
    """The mean of ``value`` over all processes (every process must call this)."""
    if info.world == 1:
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t)
    return float(t) / info.world
