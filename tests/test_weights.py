import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from simclr_watches.errors import CheckpointError
from simclr_watches.model import Preprocessing, default_preprocessing
from simclr_watches.weights import (
    IMAGENET_LITE0,
    export_encoder,
    imagenet_classifier,
    imagenet_lite0_state_dict,
    init_encoder,
    load_encoder_file,
    load_model,
    read_header,
    save_encoder,
    sha256_file,
)

ASSETS = Path(__file__).parent / "assets"


def test_imagenet_weights_are_real_a_cat_is_a_cat():
    """ImageNet classes 281-285 are the domestic cats; a wrong mapping gives noise."""
    net = imagenet_classifier()
    pre = default_preprocessing("efficientnet_lite0")
    with torch.no_grad():
        probs = net(pre(Image.open(ASSETS / "chelsea.jpg").convert("RGB"))[None]).softmax(1)[0]
    assert 281 <= int(probs.argmax()) <= 285
    assert float(probs[281:286].sum()) > 0.6


def test_imagenet_mapping_pairs_every_tensor_by_shape():
    state = imagenet_lite0_state_dict()
    enc = init_encoder("efficientnet_lite0", "imagenet")
    assert set(state) == set(enc.backbone.state_dict())
    assert torch.equal(enc.backbone.conv_stem.weight, state["conv_stem.weight"])


def test_imagenet_only_for_lite0():
    with pytest.raises(CheckpointError, match="no offline ImageNet weights for resnet18"):
        init_encoder("resnet18", "imagenet")


def test_checkpoint_round_trip_carries_its_description(tmp_path):
    enc = init_encoder("resnet18", "random")
    pre = Preprocessing(size=96)
    path = save_encoder(tmp_path / "enc.safetensors", enc, pre, meta={"epochs": 3})
    header = read_header(path)
    assert header["arch"] == "resnet18" and header["embedding_dim"] == 512 and header["meta"] == {"epochs": 3}
    loaded, info = load_encoder_file(path)
    assert info.preprocessing == pre and info.arch == "resnet18" and len(info.sha256) == 64
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), enc.eval()(x), atol=1e-6)
    assert not list(tmp_path.glob(".*tmp*"))


def test_fp16_checkpoint_loads_as_float32(tmp_path):
    enc = init_encoder("resnet18", "random")
    path = save_encoder(tmp_path / "h.safetensors", enc, Preprocessing(), dtype=torch.float16)
    loaded, _ = load_encoder_file(path)
    assert loaded.backbone.conv1.weight.dtype == torch.float32


def test_export_writes_half_precision_and_a_registry_ready_description(small_checkpoint, tmp_path):
    out = tmp_path / "ship" / "m.safetensors"
    out.parent.mkdir()
    desc = export_encoder(small_checkpoint, out, metrics={"catalog_photo": {"R@1": 0.5}})
    assert desc["sha256"] == sha256_file(out) and desc["size"] == out.stat().st_size
    assert json.loads(out.with_suffix(".json").read_text()) == desc
    assert out.stat().st_size < 0.6 * small_checkpoint.stat().st_size
    assert desc["evaluation"] == {"catalog_photo": {"R@1": 0.5}}
    again = export_encoder(small_checkpoint, out)  # re-described without metrics: same bytes
    assert again["sha256"] == desc["sha256"] and again["evaluation"] == {}
    assert read_header(out)["meta"]["exported_from"]["sha256"] == sha256_file(small_checkpoint)
    full, info_full = load_encoder_file(small_checkpoint)
    half, info_half = load_encoder_file(out)
    assert info_half.preprocessing == info_full.preprocessing and info_half.arch == "resnet18"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(full(x), half(x), atol=2e-2)
    with pytest.raises(CheckpointError, match="must end in .safetensors"):
        export_encoder(small_checkpoint, tmp_path / "m.pt")


def test_user_state_dict_init_is_strict(tmp_path):
    good = init_encoder("resnet18", "random").backbone.state_dict()
    save_file({k: v.contiguous() for k, v in good.items()}, str(tmp_path / "good.safetensors"))
    enc = init_encoder("resnet18", str(tmp_path / "good.safetensors"))
    assert torch.equal(enc.backbone.conv1.weight, good["conv1.weight"])
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt: weights do not fit"):
        init_encoder("resnet18", str(tmp_path / "bad.pt"))


def test_bad_checkpoint_files(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="junk.safetensors: not a readable safetensors"):
        load_encoder_file(tmp_path / "junk.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="without a simclr-watches description"):
        load_encoder_file(tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="neither a checkpoint file nor a registered model name"):
        load_model(str(tmp_path / "missing.safetensors"))


def test_registered_imagenet_model(imagenet_model):
    enc, info = imagenet_model
    assert info.id == IMAGENET_LITE0 and info.dim == 1280 and info.preprocessing.size == 224


def test_default_model_is_the_shipped_checkpoint(tmp_path, monkeypatch):
    """The registry, the file in artifacts/ and its JSON description agree, and load_model() loads it."""
    from simclr_watches.weights import ARTIFACTS_DIR, DEFAULT_MODEL, load_registry

    monkeypatch.setenv("SIMCLR_WATCHES_HOME", str(tmp_path))  # no stray cached copy may shadow the artifact
    entry = load_registry()[DEFAULT_MODEL]
    path = ARTIFACTS_DIR / entry.artifact
    desc = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert path.stat().st_size == entry.size == desc["size"] < 20_000_000
    assert sha256_file(path) == entry.sha256 == desc["sha256"]
    enc, info = load_model()
    assert (info.id, info.arch, info.dim) == (DEFAULT_MODEL, desc["arch"], desc["embedding_dim"])
    assert info.preprocessing.to_dict() == desc["preprocessing"]
    assert next(enc.parameters()).dtype == torch.float32  # fp16 on disk, float32 in memory
