"""The box head's file: round trip, validation of what a user hands in, registry verification, the shipped head."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from simclr_watches.core.errors import CheckpointError
from simclr_watches.core.files import sha256_file
from simclr_watches.core.outputs import OutputError
from simclr_watches.detect.head import BoxHead
from simclr_watches.weights import ARTIFACTS_DIR, DEFAULT_MODEL, load_model, load_registry
from simclr_watches.weights.box import DEFAULT_BOX, check_box_output, load_box_file, load_box_head, save_box_head

BACKBONE = {"id": "enc", "sha256": "ab" * 32}


@pytest.fixture
def head_file(tmp_path):
    torch.manual_seed(0)
    head = BoxHead(width=8)
    desc = save_box_head(tmp_path / "h.safetensors", head, BACKBONE, 160, {"note": "test"})
    return tmp_path / "h.safetensors", head, desc


def test_round_trip_gives_the_same_head_and_a_true_description(head_file):
    path, head, desc = head_file
    loaded, info = load_box_file(path)
    f16, f32 = torch.randn(1, 112, 4, 4), torch.randn(1, 320, 2, 2)
    assert torch.equal(loaded(f16, f32), head.eval()(f16, f32))
    assert (info.backbone_id, info.backbone_sha256, info.input_size) == ("enc", BACKBONE["sha256"], 160)
    on_disk = json.loads(path.with_suffix(".json").read_text())
    assert on_disk == desc and desc["sha256"] == sha256_file(path) == info.sha256 and desc["size"] == path.stat().st_size


@pytest.mark.parametrize("header,fragment", [
    (None, "without a simclr-watches description"),
    ("not json", "not valid JSON"),
    (json.dumps({"format": "simclr-watches-encoder"}), "not a box head"),
    (json.dumps({"format": "simclr-watches-box-head", "format_version": 9}), "format_version 9"),
    (json.dumps({"format": "simclr-watches-box-head", "format_version": 1, "width": 10**9}), "'width'"),
    (json.dumps({"format": "simclr-watches-box-head", "format_version": 1, "width": 8, "input_size": 160,
                 "backbone": "x"}), "'backbone'"),
])
def test_bad_descriptions_are_refused_naming_the_file(tmp_path, header, fragment):
    path = tmp_path / "bad.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata=None if header is None else {"simclr_watches": header})
    with pytest.raises(CheckpointError, match=fragment) as e:
        load_box_file(path)
    assert str(path) in str(e.value)


def test_wrong_tensors_and_nan_are_refused(head_file, tmp_path):
    path, head, _ = head_file
    header = {"format": "simclr-watches-box-head", "format_version": 1, "width": 8, "input_size": 160, "backbone": BACKBONE}
    state = {k: v.clone() for k, v in head.state_dict().items()}
    state["out.bias"][0] = float("nan")
    nan = tmp_path / "nan.safetensors"
    save_file(state, str(nan), metadata={"simclr_watches": json.dumps(header)})
    with pytest.raises(CheckpointError, match="NaN"):
        load_box_file(nan)
    header["width"] = 16
    wide = tmp_path / "wide.safetensors"
    save_file(head.state_dict(), str(wide), metadata={"simclr_watches": json.dumps(header)})
    with pytest.raises(CheckpointError, match="do not fit a box head of width 16"):
        load_box_file(wide)


def test_a_registered_head_is_verified_against_its_sha256(head_file, tmp_path, use_registry, monkeypatch):
    path, _, desc = head_file
    monkeypatch.setenv("SIMCLR_WATCHES_HOME", str(tmp_path / "home"))
    entry = {"kind": "box", "arch": "box-head", "artifact": path.name, "size": desc["size"]}
    use_registry({"h": {**entry, "sha256": desc["sha256"]}}, artifacts=tmp_path)
    _, info = load_box_head("h")
    assert (info.id, info.sha256) == ("h", desc["sha256"])
    with pytest.raises(CheckpointError, match="a registered box head, not an encoder"):
        load_model("h")
    use_registry({"h": {**entry, "sha256": "0" * 64}}, artifacts=tmp_path)
    with pytest.raises(CheckpointError, match="does not match the registry.*delete it and run `simclr-watches download h`"):
        load_box_head("h")  # the same check and advice as for an encoder (weights.loading.verified_file)
    with pytest.raises(CheckpointError, match="neither a box head file nor a registered box head"):
        load_box_head("nope")


def test_output_check_replaces_only_an_earlier_box_head(head_file, tmp_path):
    path, _, _ = head_file
    with pytest.raises(OutputError, match="--force"):
        check_box_output(path)
    check_box_output(path, force=True)
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"not ours")
    with pytest.raises(OutputError, match="not a box head file"):
        check_box_output(other, force=True)


def test_the_shipped_head_matches_the_registry_and_reads_the_default_models_first_member(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMCLR_WATCHES_HOME", str(tmp_path))
    registry = load_registry()
    entry = registry[DEFAULT_BOX]
    path = ARTIFACTS_DIR / entry.artifact
    desc = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert sha256_file(path) == entry.sha256 == desc["sha256"] and path.stat().st_size == entry.size == desc["size"]
    _, info = load_box_head()
    first = registry[DEFAULT_MODEL].members[0]
    assert info.backbone_id == first and info.backbone_sha256 == registry[first].sha256
    assert desc["meta"]["test"]["mean_iou"] > 0.5  # box quality on held-aside composites, as trained
