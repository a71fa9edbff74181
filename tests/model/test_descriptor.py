import pytest
import torch

from helpers import lite0_pair

from simclr_watches.core.errors import CheckpointError
from simclr_watches.model import Encoder, EnsembleEncoder
from simclr_watches.model.descriptor import DescribedEnsemble, gem_descriptor


def test_gem_descriptor_matches_a_naive_loop():
    torch.manual_seed(0)
    fmap = torch.randn(2, 5, 3, 4)
    p = 3.0
    want = torch.zeros(2, 5)
    for b in range(2):
        for c in range(5):
            vals = [max(float(fmap[b, c, i, j]), 1e-6) ** p for i in range(3) for j in range(4)]
            want[b, c] = (sum(vals) / len(vals)) ** (1 / p)
        want[b] -= want[b].mean()
        want[b] /= want[b].norm()
    assert torch.allclose(gem_descriptor(fmap, p), want, atol=1e-5)
    # Average pooling at p = 1 (of the positive part), max pooling as p grows.
    pos = torch.rand(1, 4, 2, 2) + 0.1
    g1 = pos.mean((2, 3))
    assert torch.allclose(gem_descriptor(pos, 1.0), torch.nn.functional.normalize(g1 - g1.mean(), dim=1), atol=1e-5)


def _pair() -> tuple[Encoder, Encoder]:
    return lite0_pair(4, 1.5, 0.01)


@pytest.mark.slow
def test_described_ensemble_cosine_is_the_weighted_sum_of_ensemble_and_descriptor_cosines():
    from simclr_watches.detect.features import embed_with_maps

    a, b = _pair()
    w = 0.7
    enc = DescribedEnsemble([a, b], member=1, stage=6, power=3.0, weight=w).eval()
    plain = EnsembleEncoder([a, b]).eval()
    assert enc.shared == plain.shared == 4 and enc.dim == 2 * 1280 + 112  # blocks[4] outputs 112 channels
    x, y = torch.randn(3, 3, 64, 64), torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ex, ey = enc(x), enc(y)
        dx, dy = (gem_descriptor(b.run_stages(v, 0, 6), 3.0) for v in (x, y))  # no shared trunk: the naive way
        want = (1 - w) * (plain(x) * plain(y)).sum(1) + w * (dx * dy).sum(1)
        with_maps = embed_with_maps(enc, x)[0]
    assert torch.allclose(ex.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose((ex * ey).sum(1), want, atol=1e-4)
    assert torch.allclose(ex, torch.cat([plain(x) * (1 - w) ** 0.5, dx * w**0.5], 1), atol=1e-5)
    assert torch.allclose(with_maps, ex, atol=1e-5)  # the box search's one pass gives the same vector


def test_described_ensemble_gives_the_same_embedding_in_parallel_and_folded(one_thread):
    """Search runs it folded (fold_batchnorm) with its members side by side (parallel): the same vectors."""
    from simclr_watches.detect.features import embed_with_maps
    from simclr_watches.model import fold_batchnorm

    a, b = _pair()
    enc = DescribedEnsemble([a, b], member=1, stage=6, power=3.0, weight=0.9).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        want, (want_maps, want_f16, want_f32) = enc(x), embed_with_maps(enc, x)
        enc.parallel = True
        got, (got_maps, got_f16, got_f32) = enc(x), embed_with_maps(enc, x)
        assert torch.equal(got, want) and torch.equal(got_maps, want_maps)
        assert torch.equal(got_f16, want_f16) and torch.equal(got_f32, want_f32)
        assert torch.allclose(want_maps, want, atol=1e-5)
        folded = fold_batchnorm(enc)
        assert folded is enc and not any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules())
        assert torch.allclose(folded(x), want, atol=1e-4) and torch.allclose(embed_with_maps(folded, x)[0], want, atol=1e-4)
    assert want.shape == (2, 2 * 1280 + 112) and torch.allclose(want.norm(dim=1), torch.ones(2), atol=1e-5)


@pytest.mark.slow
def test_described_ensemble_refuses_settings_it_cannot_honour():
    a, b = _pair()
    for kwargs, message in [({"member": 2}, "member 2"), ({"member": 0}, "later members 1..1"), ({"stage": 2}, "after the shared stages"),
                            ({"weight": 1.0}, "weight must lie"), ({"power": 0.5}, "power be >= 1")]:
        with pytest.raises(CheckpointError, match=message):
            DescribedEnsemble([a, b], **{"member": 1, "stage": 6, "power": 3.0, "weight": 0.5, **kwargs})
