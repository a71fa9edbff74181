"""DDP on CPU: two gloo processes train in step and rank 0 writes the files."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from simclr_watches.train.config import PretrainConfig
from simclr_watches.train.run import ENCODER_FILE, run_pretraining
from simclr_watches.train.simclr import build_model

from helpers import tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, catalog: str, out: str, cfg: PretrainConfig) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    result = run_pretraining(catalog, Path(out) / "run", cfg, device="cpu", progress=False)
    params = {k: v.detach().clone() for k, v in result.model.named_parameters()}
    torch.save({"params": params, "loss": result.metrics[-1]["loss"]}, Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_process_ddp_ranks_end_identical(make_catalog, tmp_path):
    catalog = make_catalog(8)
    cfg = tiny("train.epochs=1", "train.batch_size=2", "train.checkpoint_every=1")
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(catalog), str(tmp_path), cfg), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    start = build_model(tiny().model)
    moved = 0
    for k, p0 in r0["params"].items():
        assert torch.equal(p0, r1["params"][k]), k
        moved += not torch.equal(p0, dict(start.named_parameters())[k].detach())
    assert moved > 0  # they trained, and stayed in step
    assert r0["loss"] == r1["loss"]  # averaged over ranks
    assert (tmp_path / "run" / ENCODER_FILE).is_file()  # written once, by rank 0
