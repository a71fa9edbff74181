"""The encoder: a CNN backbone whose global-average-pooled features are the embedding.

How images become its input is :mod:`simclr_watches.model.preprocessing`; several
encoders as one is :mod:`simclr_watches.model.ensemble`.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from simclr_watches.core.errors import CheckpointError
from simclr_watches.model.lite0 import EfficientNetLite0
from simclr_watches.model.pooling import gem

# Embedding width of each supported architecture.
ARCH_DIMS = {"efficientnet_lite0": 1280, "resnet18": 512, "resnet50": 2048}


def create_backbone(arch: str, num_classes: int = 0) -> nn.Module:
    """Builds an architecture, randomly initialised; with ``num_classes=0`` it outputs pooled features.

    Raises:
        CheckpointError: unknown architecture.
    """
    if arch == "efficientnet_lite0":
        return EfficientNetLite0(num_classes)
    if arch in ("resnet18", "resnet50"):
        import torchvision  # only here: a second of imports that EfficientNet-Lite0 does without

        net = getattr(torchvision.models, arch)(weights=None, num_classes=max(num_classes, 1))
        if num_classes == 0:
            net.fc = nn.Identity()
        return net
    raise CheckpointError(f"unknown architecture {arch!r}; known: {', '.join(ARCH_DIMS)}")


class Encoder(nn.Module):
    """Backbone + global average pooling; ``forward`` gives L2-normalised embeddings.

    Args:
        arch: one of ``ARCH_DIMS``.

    Attributes:
        gem_p: exponent of the final map's pooling (:func:`simclr_watches.model.pooling.gem`);
            1 (the default, what every checkpoint was trained with) is average pooling. Set it
            to evaluate GeM pooling of a trained encoder (``evaluate``'s ``+gemP`` methods):
            the embedding changes, so an index must be built with the same value.

    Shapes:
        input: (B, 3, H, W), normalised by the model's Preprocessing.
        features: (B, D), D = ``ARCH_DIMS[arch]``: what the SimCLR projection head reads.
        forward: (B, D), unit L2 norm: what the index stores.
    """

    def __init__(self, arch: str):
        super().__init__()
        self.arch = arch
        self.dim = ARCH_DIMS.get(arch, 0)
        self.backbone = create_backbone(arch)
        self.gem_p = 1.0

    @classmethod
    def from_state_dict(cls, arch: str, state: Mapping[str, torch.Tensor], source: str, *,
                        copy: bool = False) -> "Encoder":
        """An encoder whose backbone holds ``state`` (floating tensors as float32), loaded strictly.

        By default the backbone is built on the meta device and takes the tensors of
        ``state`` as its own (float32 ones without a copy): nothing is allocated or
        initialised only to be overwritten.

        Args:
            arch: one of ``ARCH_DIMS``.
            state: the backbone's state dict.
            source: where ``state`` comes from (a file), for the message.
            copy: build a randomly initialised backbone and copy ``state`` into it, so its
                parameters share memory with nothing else (for training).

        Raises:
            CheckpointError: ``state`` misses, adds or misshapes a tensor of ``arch``, naming ``source``.
        """
        if copy:
            enc = cls(arch)
        else:
            with torch.device("meta"):
                enc = cls(arch)
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        try:
            enc.backbone.load_state_dict(state, strict=True, assign=not copy)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise CheckpointError(f"{source}: weights do not fit the architecture: {' '.join(first[:3])}") from None
        if any(t.is_meta for t in (*enc.parameters(), *enc.buffers())):  # a buffer kept out of the state dict
            raise RuntimeError(f"{arch}: the state dict does not set every tensor of the backbone")
        return enc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x) if self.gem_p == 1.0 else self.run_stages(x)

    def stages(self) -> list[list[nn.Module]]:
        """The backbone's stages from input to output: the stem, then each block group.

        EfficientNet-Lite0: stem, blocks 0-6 (8 stages); ResNet: stem, layer1-4 (5 stages).
        The head convolution (EfficientNet) is not a stage: it always trains.
        """
        b = self.backbone
        if self.arch.startswith("efficientnet"):
            return [[b.conv_stem, b.bn1], *[[blk] for blk in b.blocks]]
        return [[b.conv1, b.bn1], [b.layer1], [b.layer2], [b.layer3], [b.layer4]]

    def _steps(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """:meth:`features` as a sequence: one step per stage of :meth:`stages`, then the pooling head."""
        b, p = self.backbone, self.gem_p
        if self.arch.startswith("efficientnet"):
            head = b.forward_head if p == 1.0 else lambda x: gem(b.forward_head_map(x), p)
            return [b.forward_stem, *b.blocks, head]
        return [lambda x: b.maxpool(b.relu(b.bn1(b.conv1(x)))), b.layer1, b.layer2, b.layer3, b.layer4,
                lambda x: b.fc(torch.flatten(b.avgpool(x), 1) if p == 1.0 else gem(x, p))]

    def run_stages(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Stages ``start`` to ``stop`` of the forward pass (``stop`` None: through the pooling head).

        ``run_stages(x)`` is ``features(x)``; ``run_stages(run_stages(x, 0, k), k)`` is too.
        """
        for step in self._steps()[start:stop]:
            x = step(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(x).float(), dim=1)


def shared_stages(members: Sequence[Encoder]) -> int:
    """How many leading stages all ``members`` share: same architecture and equal weights at half precision.

    Half precision, because a shipped checkpoint stores its frozen stages (its init's
    weights, unchanged by training) in float16.
    """
    if any(m.arch != members[0].arch for m in members):
        return 0
    n = 0
    for stages in zip(*(m.stages() for m in members)):
        tensors = [[v.half() if v.is_floating_point() else v for mod in stage for v in mod.state_dict().values()]
                   for stage in stages]
        if not all(a.shape == b.shape and torch.equal(a, b) for other in tensors[1:] for a, b in zip(tensors[0], other)):
            break
        n += 1
    return n
