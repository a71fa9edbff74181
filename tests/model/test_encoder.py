import pytest
import torch
from PIL import Image

from simclr_watches.model.encoder import ARCH_DIMS, Encoder, EnsembleEncoder, Preprocessing, default_preprocessing, shared_stages


def test_preprocessing_pads_to_square_on_white():
    pre = Preprocessing(size=32)
    img = Image.new("RGB", (100, 50), (0, 0, 0))
    x = pre.to_uint8(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8
    assert (x[:, 0, :] == 255).all() and (x[:, 16, :] == 0).all()  # top band is padding, middle is image
    norm = pre(img)
    assert norm.shape == (3, 32, 32)
    assert torch.allclose(norm[:, 16, 16], (0 - torch.tensor(pre.mean)) / torch.tensor(pre.std))


def test_preprocessing_round_trips_through_dict():
    pre = default_preprocessing("resnet18", size=128)
    assert Preprocessing.from_dict(pre.to_dict()) == pre


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


@pytest.mark.slow
def test_ensemble_cosine_is_the_mean_of_the_members_cosines():
    torch.manual_seed(0)
    a = Encoder("efficientnet_lite0").eval()
    b = _copy(a)
    with torch.no_grad():
        for stage in b.stages()[5:]:
            for p in stage[0].parameters():
                p.mul_(1.5).add_(0.01)
        b.backbone.conv_head.weight.mul_(-1.0)
    ens = EnsembleEncoder([a, b]).eval()
    assert ens.shared == 5 and ens.dim == 2 * a.dim
    x, y = torch.randn(3, 3, 64, 64), torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ex, ey = ens(x), ens(y)
        want = ((a(x) * a(y)).sum(1) + (b(x) * b(y)).sum(1)) / 2
    assert torch.allclose(ex.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose((ex * ey).sum(1), want, atol=1e-4)
    # Sharing the trunk changes nothing: the unshared concatenation is the same vector.
    assert torch.allclose(ex, torch.cat([a(x), b(x)], 1) / 2**0.5, atol=1e-5)
