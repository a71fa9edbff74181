"""SimCLR pretraining: schedule, loss wiring, checkpoints, resume, DDP, and the CLI end to end (CPU)."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from simclr_watches.cli import app
from simclr_watches.core.errors import ConfigError, SimclrWatchesError
from simclr_watches.train.pretrain import (
    ENCODER_FILE,
    METRICS_FILE,
    TRAIN_CHECKPOINT,
    TrainConfig,
    build_model,
    load_pretrain_config,
    lr_at,
    run_pretraining,
)
from simclr_watches.weights.loading import read_header

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "pretrain-cpu-tiny.toml"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny CPU steps: with several threads on a busy machine, OpenMP waits cost 100x the work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(*overrides: str):
    return load_pretrain_config(TINY, overrides)


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent written out from Chen et al. 2020, eq. 1, averaged over all 2B anchors."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z)
    b = n // 2
    total = torch.zeros(())
    for i in range(n):
        positive = (i + b) % n
        sims = torch.stack([z[i] @ z[k] / temperature for k in range(n) if k != i])
        pos = z[i] @ z[positive] / temperature
        total = total - (pos - torch.logsumexp(sims, dim=0))
    return total / n


def test_lightly_nt_xent_matches_the_paper():
    from lightly.loss import NTXentLoss

    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    for t in (0.1, 0.5):
        assert torch.allclose(NTXentLoss(temperature=t)(z1, z2), naive_nt_xent(z1, z2, t), atol=1e-5)


def test_views_of_the_same_photo_are_the_positive_pairs():
    from lightly.loss import NTXentLoss

    torch.manual_seed(1)
    z1 = torch.randn(8, 16)
    z2 = z1 + 0.05 * torch.randn(8, 16)  # row i of each view batch comes from photo i
    loss = NTXentLoss(temperature=0.2)
    assert loss(z1, z2) < loss(z1, z2.roll(1, dims=0)) - 1.0


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(epochs=10, lr=1e-3, warmup_epochs=2, min_lr_ratio=0.1)
    spe = 5
    lrs = [lr_at(s, cfg, spe) for s in range(50)]
    assert lrs[0] == pytest.approx(1e-4)  # 1/10 of the way up
    assert lrs[9] == pytest.approx(1e-3)  # end of warmup: the peak
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(50, cfg, spe) == pytest.approx(1e-4)  # the floor
    mid = 10 + 20
    assert lrs[mid] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(7, cfg, spe) == lrs[7]  # pure


def test_resume_equals_an_uninterrupted_run(make_catalog, tmp_path):
    catalog = make_catalog(6)
    cfg = tiny("train.epochs=2")
    whole = run_pretraining(catalog, tmp_path / "whole", cfg, progress=False)
    first = run_pretraining(catalog, tmp_path / "split", cfg, progress=False, stop_after=1)
    assert first.epochs_done == 1
    rest = run_pretraining(catalog, tmp_path / "split", cfg, resume=True, progress=False)
    assert rest.epochs_done == 2
    for (k, a), (_, b) in zip(whole.model.state_dict().items(), rest.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert [r["loss"] for r in whole.metrics] == [r["loss"] for r in rest.metrics]
    logged = [json.loads(line) for line in (tmp_path / "split" / METRICS_FILE).read_text().splitlines()]
    assert [r["epoch"] for r in logged] == [1, 2]


def test_bad_inputs_are_clear_errors(tmp_path, make_catalog):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SimclrWatchesError, match="empty: no image files"):
        run_pretraining(tmp_path / "empty", tmp_path / "run", tiny(), progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"nope")
    with pytest.raises(SimclrWatchesError, match="none of the 1 image files could be read"):
        run_pretraining(tmp_path / "bad", tmp_path / "run", tiny(), progress=False)
    with pytest.raises(ConfigError, match="batch_size=64 is more than the 3"):
        run_pretraining(make_catalog(3), tmp_path / "run", tiny("train.batch_size=64"), progress=False)
    with pytest.raises(ConfigError, match="pretrain-cpu-tiny.toml: unknown config key.*train.epoch\\b"):
        tiny("train.epoch=3")


def test_frozen_stages_keep_their_weights_and_statistics():
    from simclr_watches.train.pretrain import build_training, simclr_step

    cfg = tiny("model.frozen_stages=3")
    torch.manual_seed(0)
    model, optimizer, criterion, _ = build_training(cfg, torch.device("cpu"))
    stages = model.encoder.stages()
    assert len(stages) == 8  # EfficientNet-Lite0: stem + 7 block groups
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    for _ in range(2):
        simclr_step(model, criterion, optimizer, torch.randn(8, 3, 32, 32), torch.device("cpu"))
    after = model.state_dict()
    frozen = {id(m) for stage in stages[:3] for m in stage}
    frozen_keys = {f"encoder.backbone.{name}.{k}" for name, m in model.encoder.backbone.named_modules()
                   if id(m) in frozen for k in m.state_dict()}
    assert frozen_keys and all(k in before for k in frozen_keys)
    for k in before:
        changed = not torch.equal(before[k], after[k])
        if k in frozen_keys:
            assert not changed, k  # weights and batch-norm running statistics
        elif k.startswith("encoder.backbone.blocks.3.") and k.endswith("running_mean"):
            assert changed, k  # the first trained stage learns and updates its statistics
    trainable = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert all(id(p) not in trainable for stage in stages[:3] for m in stage for p in m.parameters())
    with pytest.raises(ConfigError, match="frozen_stages=9, but efficientnet_lite0 has 8 stages"):
        build_training(tiny("model.frozen_stages=9"), torch.device("cpu"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, catalog: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = load_pretrain_config(TINY, ["train.epochs=1", "train.batch_size=2", "train.checkpoint_every=1"])
    result = run_pretraining(catalog, Path(out) / "run", cfg, device="cpu", progress=False)
    params = {k: v.detach().clone() for k, v in result.model.named_parameters()}
    torch.save({"params": params, "loss": result.metrics[-1]["loss"]}, Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_process_ddp_ranks_end_identical(make_catalog, tmp_path):
    catalog = make_catalog(8)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(catalog), str(tmp_path)), nprocs=2, join=True)
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


def test_cli_pretrain_then_build_index(make_catalog, tmp_path):
    catalog = make_catalog(6)
    run = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(app, ["pretrain", str(catalog), "--config", str(TINY), "--out", str(run),
                              "--set", "train.epochs=2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(0.0 <= r["proxy_top1"] <= 1.0 and math.isfinite(r["loss"]) for r in rows)
    header = read_header(run / ENCODER_FILE)
    assert header["meta"]["epochs"] == 2 and header["preprocessing"]["size"] == 32
    assert torch.load(run / TRAIN_CHECKPOINT, weights_only=True)["epoch"] == 2

    again = runner.invoke(app, ["pretrain", str(catalog), "--config", str(TINY), "--out", str(run)])
    assert again.exit_code == 2 and "already holds a run" in again.output

    index = tmp_path / "index"
    res = runner.invoke(app, ["build-index", str(catalog), "--out", str(index), "--checkpoint",
                              str(run / ENCODER_FILE), "--device", "cpu", "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    meta = json.loads(runner.invoke(app, ["info", str(index)]).output)
    assert meta["count"] == 6
    assert meta["model"]["arch"] == "efficientnet_lite0" and meta["model"]["id"] == str((run / ENCODER_FILE).resolve())


def test_cli_augment_preview(make_catalog, tmp_path):
    from PIL import Image

    res = CliRunner().invoke(app, ["augment-preview", str(make_catalog(4)), "--out", str(tmp_path / "g.png"),
                                   "--config", str(TINY), "-n", "3"])
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "g.png").size == (3 * 36 + 4, 3 * 36 + 4)


@pytest.mark.gpu
def test_loss_falls_on_gpu(make_catalog, tmp_path):
    cfg = load_pretrain_config(REPO / "configs" / "pretrain.toml",
                               ["augment.size=96", "data.cache_size=112", "train.batch_size=32", "train.epochs=8",
                                "train.warmup_epochs=1", "eval.proxy_views=32"])
    result = run_pretraining(make_catalog(64), tmp_path / "run", cfg, device="cuda", progress=False)
    losses = [r["loss"] for r in result.metrics]
    assert losses[-1] < losses[0]


def test_shipped_config_is_the_documented_defaults():
    from simclr_watches.train.pretrain import PretrainConfig

    assert load_pretrain_config(REPO / "configs" / "pretrain.toml") == PretrainConfig()
