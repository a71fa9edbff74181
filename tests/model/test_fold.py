import copy

import pytest
import torch
from torch import nn

from simclr_watches.model import Encoder, EnsembleEncoder, fold_batchnorm


def _lite0_with_batch_statistics(seed: int) -> Encoder:
    """A random EfficientNet-Lite0 whose BatchNorms hold non-trivial statistics and affine weights."""
    torch.manual_seed(seed)
    enc = Encoder("efficientnet_lite0")
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return enc.eval()


def test_folded_lite0_computes_the_same_embedding_without_batchnorm(one_thread):
    enc = _lite0_with_batch_statistics(0)
    folded = fold_batchnorm(copy.deepcopy(enc))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in enc.modules()) == 49  # every conv had one
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(folded(x), enc(x), atol=1e-5)
        assert torch.allclose(folded.run_stages(x, 0, 6), enc.run_stages(x, 0, 6), atol=1e-4)
    state = {k: v.clone() for k, v in folded.state_dict().items()}
    assert fold_batchnorm(folded) is folded  # idempotent: nothing left to fold
    assert all(torch.equal(v, folded.state_dict()[k]) for k, v in state.items())


def test_folded_ensemble_keeps_its_shared_trunk_and_output(one_thread):
    a = _lite0_with_batch_statistics(1)
    b = copy.deepcopy(a)
    with torch.no_grad():
        b.backbone.conv_head.weight.mul_(-1.0)
    ens = EnsembleEncoder([a, b]).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = ens(x)
        folded = fold_batchnorm(ens)
        assert folded.shared == 8 and torch.allclose(folded(x), want, atol=1e-5)


def test_fold_refuses_a_training_module_and_leaves_other_architectures_alone(one_thread):
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(Encoder("efficientnet_lite0").train())
    torch.manual_seed(0)
    resnet = Encoder("resnet18").eval()
    before = sum(isinstance(m, nn.BatchNorm2d) for m in resnet.modules())
    assert before > 0 and fold_batchnorm(resnet) is resnet
    assert sum(isinstance(m, nn.BatchNorm2d) for m in resnet.modules()) == before
