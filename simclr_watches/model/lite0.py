"""EfficientNet-Lite0 in plain torch, with timm's parameter names.

Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
ICML 2019 (arXiv:1905.11946), in its Lite variant (TensorFlow TPU repository,
``efficientnet/lite``): ReLU6, no squeeze-excitation, stem (32) and head (1280) fixed.
The state dict's keys, shapes and order are those of timm's
``timm.create_model("efficientnet_lite0")``, which the shipped checkpoints and the
ImageNet weights use, so the encoder needs neither timm nor torchvision (a second of
imports at every cold start). ``tests/model/test_lite0.py`` checks it against timm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

STEM, HEAD = 32, 1280
# Stages as (repeats, kernel, first stride, expansion, out channels): timm's ds_r1_k3_s1_e1_c16,
# ir_r2_k3_s2_e6_c24, ...; expansion 1 is the depthwise-separable block, 6 the inverted residual.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


def _conv(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free convolution with symmetric padding ``k // 2`` (timm's non-"tf_" padding)."""
    return nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False)


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.relu6(x, inplace=True)


class _Block(nn.Module):
    """Base of both block kinds: adds the input back when stride 1 keeps the channel count."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.has_skip = stride == 1 and cin == cout

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """The block without its skip connection."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, cin, H, W) to (B, cout, H / stride, W / stride)."""
        y = self.body(x)
        return x + y if self.has_skip else y


class DepthwiseSeparable(_Block):
    """Depthwise k x k conv, BN, ReLU6, then pointwise 1 x 1 conv, BN (stage 0)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int):
        super().__init__(cin, cout, stride)
        self.conv_dw, self.bn1 = _conv(cin, cin, k, stride, groups=cin), nn.BatchNorm2d(cin)
        self.conv_pw, self.bn2 = _conv(cin, cout), nn.BatchNorm2d(cout)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_pw(_act(self.bn1(self.conv_dw(x)))))


class InvertedResidual(_Block):
    """MBConv without squeeze-excitation: 1 x 1 expansion, depthwise k x k, 1 x 1 linear projection."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__(cin, cout, stride)
        mid = cin * expand
        self.conv_pw, self.bn1 = _conv(cin, mid), nn.BatchNorm2d(mid)
        self.conv_dw, self.bn2 = _conv(mid, mid, k, stride, groups=mid), nn.BatchNorm2d(mid)
        self.conv_pwl, self.bn3 = _conv(mid, cout), nn.BatchNorm2d(cout)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        x = _act(self.bn2(self.conv_dw(_act(self.bn1(self.conv_pw(x))))))
        return self.bn3(self.conv_pwl(x))


def _stage(cin: int, repeats: int, k: int, stride: int, expand: int, cout: int) -> nn.Sequential:
    blocks = []
    for i in range(repeats):
        s, c = (stride, cin) if i == 0 else (1, cout)
        blocks.append(DepthwiseSeparable(c, cout, k, s) if expand == 1 else InvertedResidual(c, cout, k, s, expand))
    return nn.Sequential(*blocks)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: stem, 7 stages of blocks, 1 x 1 head conv, global average pooling.

    Args:
        num_classes: 0 outputs the pooled features; otherwise a ``classifier`` Linear on them.

    Shapes:
        input: (B, 3, H, W); stem output (B, 32, H/2, W/2); ``blocks[6]`` output (B, 320, H/32, W/32).
        output: (B, 1280) features, or (B, num_classes) logits.
    """

    def __init__(self, num_classes: int = 0):
        super().__init__()
        self.conv_stem, self.bn1 = _conv(3, STEM, 3, 2), nn.BatchNorm2d(STEM)
        chans = [STEM] + [s[-1] for s in STAGES]
        self.blocks = nn.Sequential(*(_stage(cin, *s) for cin, s in zip(chans, STAGES)))
        self.conv_head, self.bn2 = _conv(chans[-1], HEAD), nn.BatchNorm2d(HEAD)
        self.classifier = nn.Linear(HEAD, num_classes) if num_classes else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        """TensorFlow's EfficientNet initialisation, as timm's: normal convs by fan-out, uniform classifier.

        Skipped on the meta device (a network built for its shapes, or for weights loaded next:
        :meth:`simclr_watches.model.encoder.Encoder.from_state_dict`): there are no values to
        draw, and torch's meta ``normal_`` would import ``torch._dynamo`` (seconds).
        """
        if self.conv_stem.weight.is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) to (B, 32, H/2, W/2)."""
        return _act(self.bn1(self.conv_stem(x)))

    def forward_head_map(self, x: torch.Tensor) -> torch.Tensor:
        """The output of ``blocks`` (B, 320, h, w) to the head's map (B, 1280, h, w), before pooling."""
        return _act(self.bn2(self.conv_head(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """The output of ``blocks`` (B, 320, h, w) to (B, 1280) features or (B, num_classes) logits."""
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.forward_head_map(x), 1), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) to (B, 1280) or (B, num_classes)."""
        return self.forward_head(self.blocks(self.forward_stem(x)))
