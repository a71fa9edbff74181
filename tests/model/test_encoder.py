import pytest
import torch

from simclr_watches.model import ARCH_DIMS, Encoder, shared_stages


@pytest.mark.slow
def test_encoder_outputs_unit_vectors_of_arch_dim():
    for arch in ("efficientnet_lite0", "resnet18"):
        enc = Encoder(arch).eval()
        with torch.no_grad():
            out = enc(torch.randn(2, 3, 64, 64))
            feats = enc.features(torch.randn(2, 3, 64, 64))
        assert out.shape == (2, ARCH_DIMS[arch]) and feats.shape == (2, ARCH_DIMS[arch])
        assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


@pytest.mark.slow
def test_run_stages_is_the_forward_pass_in_pieces():
    for arch in ("efficientnet_lite0", "resnet18"):
        enc = Encoder(arch).eval()
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            full = enc.features(x)
            assert torch.allclose(enc.run_stages(x), full, atol=1e-5)
            k = len(enc.stages()) // 2
            assert torch.allclose(enc.run_stages(enc.run_stages(x, 0, k), k), full, atol=1e-5)


def _copy(enc: Encoder) -> Encoder:
    twin = Encoder(enc.arch)
    twin.load_state_dict(enc.state_dict())
    return twin.eval()


def test_shared_stages_are_the_leading_stages_equal_at_half_precision():
    torch.manual_seed(0)
    a = Encoder("efficientnet_lite0").eval()
    b = _copy(a)
    assert shared_stages([a, b]) == len(a.stages())
    with torch.no_grad():
        trained = next(b.stages()[3][0].parameters())
        trained.add_(0.1)
        stored = next(b.stages()[1][0].parameters())
        stored.copy_(stored.half().float())  # what a float16 checkpoint gives back
        assert not torch.equal(stored, next(a.stages()[1][0].parameters()))
    assert shared_stages([a, b]) == 3
    assert shared_stages([a, Encoder("resnet18")]) == 0
    # ResNet's stem is two modules (conv1, bn1): freshly initialised batch norms agree, the convolutions do not.
    assert shared_stages([Encoder("resnet18"), Encoder("resnet18")]) == 0


def test_from_state_dict_takes_the_tensors_as_float32_and_refuses_a_misfit():
    from simclr_watches.core.errors import CheckpointError

    torch.manual_seed(0)
    state = Encoder("efficientnet_lite0").backbone.state_dict()
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    loaded = Encoder.from_state_dict("efficientnet_lite0", half, "h.safetensors")
    stem = loaded.backbone.conv_stem.weight
    assert stem.dtype == torch.float32 and torch.equal(stem, state["conv_stem.weight"].half().float())
    assert not any(t.is_meta for t in (*loaded.parameters(), *loaded.buffers()))
    # float32 tensors are taken as they are; with copy=True the encoder's are its own.
    shared = Encoder.from_state_dict("efficientnet_lite0", state, "f.safetensors")
    own = Encoder.from_state_dict("efficientnet_lite0", state, "f.safetensors", copy=True)
    assert shared.backbone.conv_stem.weight.data_ptr() == state["conv_stem.weight"].data_ptr()
    assert own.backbone.conv_stem.weight.data_ptr() != state["conv_stem.weight"].data_ptr()
    assert torch.equal(own.backbone.conv_stem.weight, state["conv_stem.weight"])
    for bad in ({k: v for k, v in state.items() if k != "conv_head.weight"}, {**state, "conv_stem.weight": torch.zeros(1)}):
        with pytest.raises(CheckpointError, match=r"^bad\.pt: weights do not fit the architecture"):
            Encoder.from_state_dict("efficientnet_lite0", bad, "bad.pt")
