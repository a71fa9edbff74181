"""How an image becomes the encoder's input: fit into a padded square, then normalise.

Preprocessing is part of a model's description (it travels in checkpoints and
index sidecars), so the same pixels reach the network at pretraining, indexing
and search.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from simclr_watches.core import validate
from simclr_watches.core.errors import CheckpointError

# EfficientNet-Lite was trained on (x - 127) / 128; these are those constants on a [0, 1] scale.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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
