"""Batch normalisation folded into the convolution before it: the same function, fewer passes over memory.

In eval mode a BatchNorm2d is a per-channel affine map, ``y = (x - mean) / sqrt(var + eps) * gamma
+ beta``, so a convolution followed by it is one convolution with rescaled weights and a bias
(:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`). EfficientNet-Lite0 has a BatchNorm after each of
its 49 convolutions; on the CPU each is a full read and write of its feature map, about a fifth
of the encoder's time at the query's 160 px. Folding changes the embeddings by rounding alone
(about 1e-6), so an index built with the unfolded encoder is searched by the folded one alike.

Only for inference: a folded encoder has no BatchNorm left to train. Architectures other than
EfficientNet-Lite0 are left as they are.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from simclr_watches.model.lite0 import DepthwiseSeparable, EfficientNetLite0, InvertedResidual

# Each Lite0 module's (convolution, its BatchNorm) attribute pairs.
_PAIRS = {
    EfficientNetLite0: (("conv_stem", "bn1"), ("conv_head", "bn2")),
    DepthwiseSeparable: (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    InvertedResidual: (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
}


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Folds every EfficientNet-Lite0 BatchNorm of ``module`` into its convolution, in place; returns ``module``.

    Each BatchNorm becomes an ``nn.Identity`` and its convolution gains a bias. Idempotent (a
    folded network has nothing left to fold). Works on an Encoder, an EnsembleEncoder or a bare
    backbone: every EfficientNet-Lite0 module inside is folded, anything else is left alone.

    Raises:
        ValueError: ``module`` is in training mode (its BatchNorms still normalise by batch statistics).
    """
    if module.training:
        raise ValueError("fold_batchnorm needs a module in eval mode (call .eval() first)")
    for m in module.modules():
        for conv_name, bn_name in _PAIRS.get(type(m), ()):
            bn = getattr(m, bn_name)
            if isinstance(bn, nn.BatchNorm2d):
                setattr(m, conv_name, fuse_conv_bn_eval(getattr(m, conv_name), bn))
                setattr(m, bn_name, nn.Identity())
    return module
