"""A pretraining run end to end (CPU): resume, bad inputs, divergence, and the CLI from catalog to index."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from simclr_watches.cli import app
from simclr_watches.core.errors import ConfigError, SimclrWatchesError
from simclr_watches.train.config import load_pretrain_config
from simclr_watches.train.divergence import TrainingDivergedError
from simclr_watches.train.run import ENCODER_FILE, METRICS_FILE, TRAIN_CHECKPOINT, run_pretraining
from simclr_watches.weights import read_header

from helpers import assert_user_error
from helpers import TINY, tiny

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_time_limit_stops_with_a_checkpoint_and_a_resume_needs_no_init_weights(make_catalog, tmp_path, monkeypatch):
    catalog, run = make_catalog(6), tmp_path / "run"
    cfg = tiny("model.init=imagenet", "train.epochs=3", "train.checkpoint_every=5")
    first = run_pretraining(catalog, run, cfg, progress=False, time_limit=0)  # out of time after the first epoch
    assert first.epochs_done == 1
    assert torch.load(run / TRAIN_CHECKPOINT, weights_only=True)["epoch"] == 1  # saved though not a checkpoint epoch

    def no_package(name):
        raise AssertionError(f"a resume read the init weights of {name}")

    monkeypatch.setattr("simclr_watches.weights._pretrained.package_file", no_package)
    rest = run_pretraining(catalog, run, cfg, resume=True, progress=False)
    assert rest.epochs_done == 3
    assert read_header(run / ENCODER_FILE)["meta"]["config"]["model"]["init"] == "imagenet"


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


def _poison_nt_xent(monkeypatch) -> None:
    """From now on lightly's NT-Xent returns NaN (through the graph, so the update is NaN too)."""
    from lightly.loss import NTXentLoss

    forward = NTXentLoss.forward
    monkeypatch.setattr(NTXentLoss, "forward", lambda self, z1, z2: forward(self, z1, z2) * float("nan"))


def test_a_diverged_run_stops_and_keeps_its_last_checkpoint(make_catalog, tmp_path, monkeypatch):
    catalog, run = make_catalog(8), tmp_path / "run"
    cfg = tiny("train.epochs=3")  # 8 photos, 4 per step: 2 steps an epoch, a checkpoint after each
    run_pretraining(catalog, run, cfg, progress=False, stop_after=1)
    files = {name: (run / name).read_bytes() for name in (TRAIN_CHECKPOINT, ENCODER_FILE, METRICS_FILE)}
    _poison_nt_xent(monkeypatch)
    with pytest.raises(TrainingDivergedError, match=r"the loss became nan at epoch 2, step 3\b.*train\.grad_clip"):
        run_pretraining(catalog, run, cfg, resume=True, progress=False)
    assert {name: (run / name).read_bytes() for name in files} == files


def test_cli_a_diverged_run_is_a_one_line_error(make_catalog, tmp_path):
    """The CLI as a process, with NT-Xent patched to NaN before the app starts: exit 2, one line, nothing saved."""
    code = ("import lightly.loss as L; f = L.NTXentLoss.forward; "
            "L.NTXentLoss.forward = lambda s, a, b: f(s, a, b) * float('nan'); "
            "from simclr_watches.cli import app; app()")
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", code, "pretrain", str(make_catalog(4)), "--config", str(TINY),
                           "--out", str(run), "--device", "cpu"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"})
    assert_user_error(proc, "error: the loss became nan at epoch 1, step 1:", "Lower train.lr or set train.grad_clip")
    assert list(run.iterdir()) == []


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


@pytest.mark.gpu
def test_loss_falls_on_gpu(make_catalog, tmp_path):
    cfg = load_pretrain_config(REPO / "configs" / "pretrain.toml",
                               ["augment.size=96", "data.cache_size=112", "train.batch_size=32", "train.epochs=8",
                                "train.warmup_epochs=1", "eval.proxy_views=32"])
    result = run_pretraining(make_catalog(64), tmp_path / "run", cfg, device="cuda", progress=False)
    losses = [r["loss"] for r in result.metrics]
    assert losses[-1] < losses[0]
