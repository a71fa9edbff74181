"""The encoder: a CNN backbone whose global-average-pooled features are the embedding.

Preprocessing is part of a model's description (it travels in checkpoints and
index sidecars), so the same pixels reach the network at pretraining, indexing
and search.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

from simclr_watches.core import validate
from simclr_watches.core.errors import CheckpointError
from simclr_watches.model.lite0 import EfficientNetLite0

# EfficientNet-Lite was trained on (x - 127) / 128; these are those constants on a [0, 1] scale.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Embedding width of each supported architecture.
ARCH_DIMS = {"efficientnet_lite0": 1280, "resnet18": 512, "resnet50": 2048}


# Bounds of a Preprocessing: anything outside is a corrupt or hostile description, not a model.
# 8 px is the smallest view pretraining accepts (AugmentConfig); 1024 px bounds what one image allocates.
SIZE_RANGE = (8, 1024)
MEAN_RANGE = (-1e3, 1e3)
STD_RANGE = (1e-4, 1e3)  # on the [0, 1] scale: nonzero, and normalised pixels stay finite in float32
CHANNELS = 3


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the encoder's input.

    The image is scaled to fit a ``size`` x ``size`` square, padded on
    ``pad_value`` (white: the catalog's background), then normalised per channel.

    Raises:
        FieldError: on construction, a value of the wrong type or outside ``SIZE_RANGE``,
            ``MEAN_RANGE``, ``STD_RANGE`` or 0..255, or not ``CHANNELS`` means and stds
            (so a checkpoint or index sidecar cannot make an image allocate gigabytes
            or normalise to NaN).
    """

    size: int = 224
    mean: tuple[float, float, float] = LITE_MEAN
    std: tuple[float, float, float] = LITE_STD
    pad_value: int = 255

    def __post_init__(self) -> None:
        validate.int_in(self.size, "size", *SIZE_RANGE)
        object.__setattr__(self, "mean", validate.reals_in(self.mean, "mean", CHANNELS, *MEAN_RANGE))
        object.__setattr__(self, "std", validate.reals_in(self.std, "std", CHANNELS, *STD_RANGE))
        validate.int_in(self.pad_value, "pad_value", 0, 255)

    def square(self, img: Image.Image, size: int | None = None) -> Image.Image:
        """Fits ``img`` (RGB) into a padded square of side ``size`` (default ``self.size``)."""
        s = size or self.size
        return ImageOps.pad(img, (s, s), method=Image.Resampling.BICUBIC, color=(self.pad_value,) * 3)

    def to_uint8(self, img: Image.Image, size: int | None = None) -> torch.Tensor:
        """Returns the padded square as a uint8 tensor of shape (3, S, S)."""
        arr = np.asarray(self.square(img, size), dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalises a batch (B, 3, H, W) of uint8 or [0, 1] floats."""
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """Returns the normalised float tensor (3, size, size) for one RGB image."""
        return self.normalize(self.to_uint8(img)[None])[0]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def parse(cls, d: Any) -> "Preprocessing":
        """The Preprocessing a JSON description gives (``to_dict``'s output).

        Raises:
            FieldError: not an object, a missing field, or a value :class:`Preprocessing` refuses.
        """
        d = validate.obj(d, "")
        return cls(**{key: validate.member(d, key) for key in ("size", "mean", "std", "pad_value")})

    @classmethod
    def from_dict(cls, d: Any, source: str = "") -> "Preprocessing":
        """:meth:`parse` for a checkpoint's description; ``source`` (the file) prefixes the message.

        Raises:
            CheckpointError: naming ``preprocessing.<field>`` and the problem.
        """
        try:
            with validate.under("preprocessing"):
                return cls.parse(d)
        except validate.FieldError as e:
            raise CheckpointError(f"{source}: {e}" if source else str(e)) from None


def default_preprocessing(arch: str, size: int = 224) -> Preprocessing:
    """The normalisation each architecture's ImageNet weights were trained with."""
    if arch.startswith("efficientnet_lite"):
        return Preprocessing(size=size)
    return Preprocessing(size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD)


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

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

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
        b = self.backbone
        if self.arch.startswith("efficientnet"):
            return [b.forward_stem, *b.blocks, b.forward_head]
        return [lambda x: b.maxpool(b.relu(b.bn1(b.conv1(x)))), b.layer1, b.layer2, b.layer3, b.layer4,
                lambda x: b.fc(torch.flatten(b.avgpool(x), 1))]

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


class EnsembleEncoder(nn.Module):
    """Output-space ensemble of encoders: their unit embeddings, concatenated, over sqrt(n).

    The cosine of two ensemble embeddings is then the mean of the members' cosines: every
    member votes equally. Ensembling a fine-tuned model with its initialisation this way
    keeps what the initial model knew about shifts the fine-tuning data never showed
    (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022, output-space
    ensembles): here, SimCLR on clean packshots with ImageNet, which has seen real scenes.

    All members see the same input. Leading stages the members share (see
    :func:`shared_stages`; a SimCLR run with ``frozen_stages`` keeps its init's) are
    computed once, by the first member.

    Shapes:
        input: (B, 3, H, W), normalised for the members (they must agree on normalisation).
        forward: (B, sum of the members' D), unit L2 norm.
    """

    def __init__(self, members: Sequence[Encoder]):
        super().__init__()
        if len(members) < 2:
            raise CheckpointError("an ensemble needs at least two encoders")
        self.members = nn.ModuleList(members)
        self.arch = "+".join(m.arch for m in members)
        self.dim = sum(m.dim for m in members)
        self.shared = shared_stages(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.members[0].run_stages(x, 0, self.shared)
        parts = [F.normalize(m.run_stages(h, self.shared).float(), dim=1) for m in self.members]
        return torch.cat(parts, dim=1) / math.sqrt(len(parts))
