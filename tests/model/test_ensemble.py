import pytest
import torch

from helpers import lite0_pair

from simclr_watches.model import EnsembleEncoder


@pytest.mark.slow
def test_ensemble_cosine_is_the_mean_of_the_members_cosines():
    a, b = lite0_pair(5, 1.5, 0.01)
    with torch.no_grad():
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


def test_parallel_members_give_the_same_embedding_and_maps(one_thread):
    from simclr_watches.detect.features import embed_with_maps

    a, b = lite0_pair(4, 1.2)
    ens = EnsembleEncoder([a, b]).eval()
    assert ens.shared == 4
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        want, want_maps = ens(x), embed_with_maps(ens, x)
        ens.parallel = True
        got, got_maps = ens(x), embed_with_maps(ens, x)
    assert torch.equal(got, want)
    assert all(torch.equal(g, w) for g, w in zip(got_maps, want_maps))
    with torch.no_grad():  # the worker thread runs in the caller's grad mode: no graph, no inference tensors
        out = ens(x)
    assert not out.requires_grad and not out.is_inference()
