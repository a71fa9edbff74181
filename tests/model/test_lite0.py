"""EfficientNet-Lite0 in plain torch against its reference implementation, timm's.

timm is a test-only dependency (the ``test`` extra): the package must build, load and
run the encoder without it, and these tests prove that nothing changed by dropping it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file
from torch import nn

from simclr_watches.model.lite0 import EfficientNetLite0
from simclr_watches.model import Encoder, create_backbone
from simclr_watches.weights import ARTIFACTS_DIR, imagenet_lite0_state_dict

SHIPPED = ARTIFACTS_DIR / "watches-lite0-v1.safetensors"


def reference(num_classes: int = 0, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """timm's efficientnet_lite0, randomly initialised (seed 0) or with ``state``."""
    torch.manual_seed(0)
    net = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=num_classes)
    if state is not None:
        net.load_state_dict(state, strict=True)
    return net


def twin(ref: nn.Module, num_classes: int = 0) -> EfficientNetLite0:
    """Ours, with ``ref``'s weights and statistics, loaded strictly."""
    ours = EfficientNetLite0(num_classes)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours


def keys_and_shapes(net: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in net.state_dict().items()]


@pytest.mark.parametrize("num_classes", [0, 1000])
def test_state_dict_keys_shapes_and_order_are_timms(num_classes):
    ours = keys_and_shapes(EfficientNetLite0(num_classes))
    assert ours == keys_and_shapes(reference(num_classes))
    assert len(ours) == 294 + 2 * bool(num_classes)
    assert ("classifier.weight", (num_classes, 1280)) in ours if num_classes else not any("classifier" in k for k, _ in ours)


@pytest.mark.parametrize("size", [64, 160])
def test_eval_outputs_equal_timms(size):
    ref = reference(1000).eval()
    ours = twin(ref, 1000).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert got.shape == (2, 1000)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_train_mode_batch_statistics_equal_timms():
    """Batch norm in train mode: the same outputs, running statistics and gradients."""
    ref = reference().train()
    ours = twin(ref).train()
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    expected, got = ref(x), ours(x)
    assert got.shape == (4, 1280)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    expected.square().sum().backward()
    got.square().sum().backward()
    for (k, a), b in zip(ref.state_dict().items(), ours.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5, rtol=0), k  # running_mean/var, num_batches_tracked
    assert torch.allclose(ours.conv_stem.weight.grad, ref.conv_stem.weight.grad, atol=1e-4, rtol=1e-4)


def test_encoder_stages_split_the_forward_pass_where_timms_layers_end():
    """Stage k of the Encoder ends where timm's stem (k = 0) or block group k - 1 ends; then the pooled head."""
    ref = reference().eval()
    enc = Encoder("efficientnet_lite0").eval()
    enc.backbone.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        h = ref.bn1(ref.conv_stem(x))
        assert torch.allclose(enc.run_stages(x, 0, 1), h, atol=1e-5)
        for k, group in enumerate(ref.blocks, start=1):
            h = group(h)
            assert torch.allclose(enc.run_stages(x, 0, k + 1), h, atol=1e-5), k
        assert torch.allclose(enc.run_stages(x), ref.forward_head(ref.bn2(ref.conv_head(h))), atol=1e-5)
    assert len(enc.stages()) == 8


@pytest.mark.slow
def test_torch_sync_batchnorm_conversion_keeps_keys_and_outputs():
    """Plain BatchNorm2d with the activation in forward: torch's converter loses no ReLU6 (timm's BatchNormAct2d would)."""
    ours = EfficientNetLite0().eval()
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(twin(ours)).eval()
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in synced.modules()) == 49
    assert keys_and_shapes(synced) == keys_and_shapes(ours)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(synced(x), ours(x), atol=1e-6)


def test_random_init_follows_timms_distribution():
    """TensorFlow's initialisation: the same spread per layer as timm's, and fresh batch norms."""
    ours, ref = EfficientNetLite0(1000), reference(1000)
    for (k, a), b in zip(ref.state_dict().items(), ours.state_dict().values()):
        if k.endswith("weight") and a.ndim > 1:
            assert 0.8 < float(b.std() / a.std()) < 1.25, k
        else:
            assert torch.equal(a, b), k  # batch-norm weights 1, biases 0, statistics fresh; classifier bias 0


@pytest.mark.slow
@pytest.mark.parametrize("source", ["imagenet", "shipped"])
def test_imagenet_and_shipped_weights_load_strictly_and_match_timm(source):
    if source == "imagenet":
        state, num_classes = imagenet_lite0_state_dict(with_classifier=True), 1000
    else:
        state, num_classes = {k: v.float() for k, v in load_file(str(SHIPPED)).items()}, 0
    ref = reference(num_classes, state).eval()
    ours = create_backbone("efficientnet_lite0", num_classes)
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), ref(x), atol=1e-4, rtol=1e-5)


@pytest.mark.slow
def test_loading_the_default_model_imports_neither_timm_nor_torchvision(tmp_path):
    """Nor torch._dynamo, which a meta-device ``normal_`` would import (seconds of a cold start)."""
    code = ("import json, sys; from simclr_watches.weights import load_model; enc, info = load_model(); "
            "print(json.dumps({'id': info.id, 'loaded': sorted(m for m in ('timm', 'torchvision', 'torch._dynamo') "
            "if m in sys.modules)}))")
    env = {**os.environ, "SIMCLR_WATCHES_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"id": "watches-lite0-v1-ens-attr-ms2", "loaded": []}


def test_frozen_stages_stay_in_eval_mode_after_sync_batchnorm_conversion():
    """Multi-GPU pretraining converts batch norms to SyncBatchNorm; the frozen stem's must not train after that."""
    from simclr_watches.train.config import ModelConfig
    from simclr_watches.train.simclr import build_model

    model = nn.SyncBatchNorm.convert_sync_batchnorm(build_model(ModelConfig(init="random", frozen_stages=2))).train()
    frozen = [m for stage in model.encoder.stages()[:2] for m in stage]
    norms = [m for f in frozen for m in f.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert len(norms) == 3 and not any(m.training for m in norms)  # stem bn1, block 0's bn1 and bn2
    assert not any(p.requires_grad for f in frozen for p in f.parameters())
    assert model.encoder.backbone.blocks[1][0].bn1.training
