from __future__ import annotations

import json
import shutil

import pytest
import torch

from simclr_watches.core.errors import CheckpointError
from simclr_watches.train.run import METRICS_FILE, TRAIN_CHECKPOINT, run_pretraining
from simclr_watches.train.transport import STATE_FILE, pack_run_state, unpack_run_state

from helpers import tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_run_packed_into_parts_resumes_from_its_unpacked_checkpoint(make_catalog, tmp_path):
    catalog, run = make_catalog(6), tmp_path / "run"
    cfg = tiny("train.epochs=2")
    run_pretraining(catalog, run, cfg, progress=False, stop_after=1)
    desc = pack_run_state(run / TRAIN_CHECKPOINT, tmp_path / "parts", part_bytes=4 << 20)
    assert len(desc["parts"]) > 1 and all(p["bytes"] <= 4 << 20 for p in desc["parts"])
    assert sum(p["bytes"] for p in desc["parts"]) == desc["packed_bytes"] < desc["bytes"] and desc["epoch"] == 1

    moved = tmp_path / "moved"  # a fresh machine: the parts and the metrics log, no checkpoint
    moved.mkdir()
    shutil.copy(run / METRICS_FILE, moved / METRICS_FILE)
    back = unpack_run_state(tmp_path / "parts", moved / TRAIN_CHECKPOINT)
    orig = torch.load(run / TRAIN_CHECKPOINT, weights_only=True)
    for k, v in orig["model"].items():
        assert torch.equal(back["model"][k], v), k
    assert (back["step"], back["epoch"], back["config"]) == (orig["step"], orig["epoch"], orig["config"])
    for i, state in orig["optimizer"]["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            got = back["optimizer"]["state"][i][key]
            assert got.dtype == torch.float32
            assert torch.allclose(got, state[key], rtol=2 ** -7, atol=0), (i, key)  # rounded once to bfloat16

    rest = run_pretraining(catalog, moved, cfg, resume=True, progress=False)
    assert rest.epochs_done == 2
    assert [json.loads(line)["epoch"] for line in (moved / METRICS_FILE).read_text().splitlines()] == [1, 2]


def test_an_altered_or_missing_part_is_refused_and_nothing_is_written(make_catalog, tmp_path):
    run = tmp_path / "run"
    run_pretraining(make_catalog(6), run, tiny("train.epochs=1"), progress=False)
    desc = pack_run_state(run / TRAIN_CHECKPOINT, tmp_path / "parts", part_bytes=4 << 20)
    state = tmp_path / "parts" / STATE_FILE
    target = tmp_path / "new" / TRAIN_CHECKPOINT
    state.write_text(json.dumps({**desc, "bytes": 1000}))  # a description that understates the whole: bounded
    with pytest.raises(CheckpointError, match="decompress to more than the 1000 bytes"):
        unpack_run_state(tmp_path / "parts", target)
    state.write_text(json.dumps(desc))
    part = tmp_path / "parts" / desc["parts"][-1]["name"]
    data = bytearray(part.read_bytes())
    data[-1] ^= 1
    part.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{part.name}: its size or sha256 differs"):
        unpack_run_state(tmp_path / "parts", target)
    part.unlink()
    with pytest.raises(Exception, match=part.name):
        unpack_run_state(tmp_path / "parts", target)
    state.write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="not a run state"):
        unpack_run_state(tmp_path / "parts", target)
    assert not target.exists() and list(target.parent.iterdir()) == []
