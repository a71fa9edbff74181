import copy

import torch
import torch.nn.functional as F

from simclr_watches.model import Encoder, EnsembleEncoder
from simclr_watches.model.pooling import gem


def test_gem_is_the_average_at_p1_and_tends_to_the_max():
    x = torch.rand(2, 5, 4, 3)
    assert torch.allclose(gem(x, 1.0), x.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(gem(x, 3.0), x.pow(3).mean(dim=(2, 3)).pow(1 / 3), atol=1e-6)
    big = gem(x, 16.0)
    assert (big <= x.amax(dim=(2, 3)) + 1e-6).all() and (big > gem(x, 3.0)).all()


def test_encoder_gem_pools_the_head_map(one_thread):
    torch.manual_seed(0)
    enc = Encoder("efficientnet_lite0").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        avg = enc(x)
        b = enc.backbone
        head_map = b.forward_head_map(b.blocks(b.forward_stem(x)))
        enc.gem_p = 3.0
        want = F.normalize(gem(head_map, 3.0), dim=1)
        assert torch.allclose(enc(x), want, atol=1e-5) and not torch.allclose(enc(x), avg, atol=1e-3)
        assert torch.allclose(enc.run_stages(enc.run_stages(x, 0, 4), 4), enc.features(x), atol=1e-5)
        other = copy.deepcopy(enc)
        ens = EnsembleEncoder([enc, other]).eval()
        assert torch.allclose(ens(x), torch.cat([want, want], 1) / 2**0.5, atol=1e-5)
