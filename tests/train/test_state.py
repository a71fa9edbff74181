"""Training checkpoints: a round trip, and clear errors for files that are not one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from simclr_watches.core.config import to_dict
from simclr_watches.core.errors import CheckpointError
from simclr_watches.train.config import load_pretrain_config
from simclr_watches.train.simclr import build_model, build_optimizer
from simclr_watches.train.state import load_training_checkpoint, save_training_checkpoint

TINY = Path(__file__).resolve().parents[2] / "configs" / "pretrain-cpu-tiny.toml"


@pytest.mark.slow
def test_training_checkpoint_round_trip(tmp_path):
    cfg = load_pretrain_config(TINY)
    model = build_model(cfg.model)
    opt = build_optimizer(model, cfg.train)
    for p in model.parameters():  # gradients without a forward pass: only the optimiser state matters here
        p.grad = torch.randn_like(p)
    opt.step()
    rng = [{"cpu": torch.get_rng_state()}]
    path = tmp_path / "ck.pt"
    save_training_checkpoint(path, model, opt, config=to_dict(cfg), epoch=3, step=17, rng=rng, metrics=[{"epoch": 3, "loss": 1.5}])

    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 3 and raw["step"] == 17 and raw["config"]["train"]["batch_size"] == 4
    ck = load_training_checkpoint(path)
    again = build_model(cfg.model)
    again.load_state_dict(ck["model"], strict=True)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    opt2 = build_optimizer(again, cfg.train)
    opt2.load_state_dict(ck["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert torch.equal(ck["rng"][0]["cpu"], rng[0]["cpu"])

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_training_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no training checkpoint"):
        load_training_checkpoint(tmp_path / "missing.pt")


@pytest.mark.slow
def test_a_pickle_or_a_torn_checkpoint_is_one_line(tmp_path, make_catalog):
    from helpers import assert_user_error, pickle_file, run_cli

    run = tmp_path / "run"
    run.mkdir()
    pickle_file(run / "checkpoint.pt")
    line = assert_user_error(run_cli("pretrain", make_catalog(2), "--out", run, "--resume"),
                             f"{run / 'checkpoint.pt'}: refused as a training checkpoint")
    assert "only safetensors files and torch files saved with weights only are read" in line
    assert not (run / "ran").exists()


@pytest.mark.parametrize("change, message", [
    ({"config": None}, "field 'config' must be dict, got NoneType"),
    ({"epoch": "3"}, "field 'epoch' must be int, got str"),
    ({"format_version": 2}, "format v2 is newer"),
    ({"format_version": None}, "field 'format_version' must be a positive integer"),
])
def test_fields_a_resume_needs_are_checked(tmp_path, change, message):
    state = {"format": "simclr-watches-pretrain", "format_version": 1, "config": {}, "epoch": 1, "step": 1,
             "model": {}, "optimizer": {}, "rng": [], "metrics": []}
    torch.save({**state, **change}, tmp_path / "ck.pt")
    with pytest.raises(CheckpointError, match=message):
        load_training_checkpoint(tmp_path / "ck.pt")
