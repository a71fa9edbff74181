"""How an image becomes the encoder's input: fit into a padded square, then normalise.

Preprocessing is part of a model's description (it travels in checkpoints and
index sidecars), so the same pixels reach the network at pretraining, indexing
and search.
"""

from __future__ import annotations

import re
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
OPTIONAL_SIDES = ("catalog_sizes", "region_sizes")  # absent from a description: unset, i.e. ``size``
SQUARE_RANGE = (0.5, 4.0)  # a catalog box view's square, in units of the box's longer side
MAX_SIDES = 4  # a catalog photo is embedded at most this many times; a query's regions take at most this many sides


@dataclass(frozen=True)
class CatalogBox:
    """A catalog photo's view around its learnt box, averaged with its whole views.

    The box head ``head`` (a registered name, verified by its sha256 when loaded) finds the
    watch in the catalog photo's cropped view at the model's ``size``, as it does in a query's
    whole view; the square of ``square`` times the box's longer side, centred on it and clipped
    to the view, is embedded at ``size`` px. The catalog then holds the view of the watch the
    query's squares around its box show (docs/MODEL_CARD.md), and a packshot decorated with
    splashes or text rows may be seen without them.

    Raises:
        FieldError: on construction, a head name that is not a plain name, or a value outside
            ``SQUARE_RANGE`` or ``SIZE_RANGE``.
    """

    head: str
    square: float
    size: int

    def __post_init__(self) -> None:
        validate.text(self.head, "head", 128)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.head):
            raise validate.FieldError("head", f"expected a registered box head's name, got {self.head!r}")
        object.__setattr__(self, "square", validate.real_in(self.square, "square", *SQUARE_RANGE))
        validate.int_in(self.size, "size", *SIZE_RANGE)

    @classmethod
    def parse(cls, d: Any) -> "CatalogBox":
        """The CatalogBox of a description (``asdict``'s output).

        Raises:
            FieldError: not an object, a field missing or unknown, or a value refused.
        """
        d = validate.obj(d, "")
        unknown = sorted(set(d) - {"head", "square", "size"})
        if unknown:
            raise validate.FieldError(unknown[0], "unknown field")
        return cls(**{key: validate.member(d, key) for key in ("head", "square", "size")})


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the encoder's input.

    The image is scaled to fit a ``size`` x ``size`` square, padded on
    ``pad_value`` (white: the catalog's background), then normalised per channel.

    A model may see the watch at other sides than a whole photo: ``catalog_sizes`` are the
    sides at which a catalog photo is embedded (``build-index``, ``add``, ``--update``), its
    unit vectors averaged into one (a multi-scale description; empty: ``size`` alone), and
    ``region_sizes`` the sides of a query's regions around the watch: the learnt box's i-th
    square at ``region_sizes[i]`` (the last one repeating), the windows at the first; empty:
    ``size``. The whole query photo, in which the box is found, is always seen at ``size``
    (docs/MODEL_CARD.md: why the default describes its catalog at 160 and 288 px). A description
    written before ``region_sizes`` may hold ``region_size``, one side (0: unset). ``catalog_box``
    adds a view of each catalog photo around its learnt box to that average (:class:`CatalogBox`).

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
    catalog_sizes: tuple[int, ...] = ()
    region_sizes: tuple[int, ...] = ()
    catalog_box: CatalogBox | None = None

    def __post_init__(self) -> None:
        validate.int_in(self.size, "size", *SIZE_RANGE)
        if self.catalog_box is not None and not isinstance(self.catalog_box, CatalogBox):
            raise validate.FieldError("catalog_box", f"expected a CatalogBox, got {validate.describe(self.catalog_box)}")
        object.__setattr__(self, "catalog_sizes", _sides(self.catalog_sizes, "catalog_sizes", distinct=True))
        object.__setattr__(self, "region_sizes", _sides(self.region_sizes, "region_sizes", distinct=False))
        object.__setattr__(self, "mean", validate.reals_in(self.mean, "mean", CHANNELS, *MEAN_RANGE))
        object.__setattr__(self, "std", validate.reals_in(self.std, "std", CHANNELS, *STD_RANGE))
        validate.int_in(self.pad_value, "pad_value", 0, 255)

    @property
    def catalog_sides(self) -> tuple[int, ...]:
        """The sides at which a catalog photo is embedded (its unit vectors averaged)."""
        return self.catalog_sizes or (self.size,)

    def region_side(self, i: int = 0) -> int:
        """The side at which a query's ``i``-th region around the watch (the box's i-th square) is embedded."""
        sides = self.region_sizes or (self.size,)
        return sides[min(i, len(sides) - 1)]

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
        """JSON fields; ``catalog_sizes``, ``region_sizes`` and ``catalog_box`` only when set (older files have none)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()
                if k not in (*OPTIONAL_SIDES, "catalog_box") or v}

    @classmethod
    def parse(cls, d: Any) -> "Preprocessing":
        """The Preprocessing a JSON description gives (``to_dict``'s output).

        Raises:
            FieldError: not an object, a missing field, or a value :class:`Preprocessing` refuses.
        """
        d = validate.obj(d, "")
        fields = {key: validate.member(d, key) for key in ("size", "mean", "std", "pad_value")}
        fields.update({key: d[key] for key in OPTIONAL_SIDES if key in d})
        if "catalog_box" in d:
            with validate.under("catalog_box"):
                fields["catalog_box"] = CatalogBox.parse(d["catalog_box"])
        if "region_size" in d:  # written before region_sizes: one side, 0 unset
            if "region_sizes" in d:
                raise validate.FieldError("region_size", "expected region_sizes or region_size, not both")
            legacy = d["region_size"]
            if not (validate.is_int(legacy) and legacy == 0):
                validate.int_in(legacy, "region_size", *SIZE_RANGE)
                fields["region_sizes"] = (legacy,)
        return cls(**fields)

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


def _sides(sides: Any, name: str, distinct: bool) -> tuple[int, ...]:
    """``sides`` as a tuple of at most ``MAX_SIDES`` sides in ``SIZE_RANGE`` (``distinct``: none twice).

    Raises:
        FieldError: naming ``name`` (and the entry) and the problem.
    """
    if not isinstance(sides, (list, tuple)) or len(sides) > MAX_SIDES:
        raise validate.FieldError(name, f"expected a list of at most {MAX_SIDES} sizes, got {validate.describe(sides)}")
    for i, side in enumerate(sides):
        validate.int_in(side, f"{name}[{i}]", *SIZE_RANGE)
    if distinct and len(set(sides)) != len(sides):
        raise validate.FieldError(name, f"a size is listed twice: {list(sides)}")
    return tuple(sides)


def default_preprocessing(arch: str, size: int = 224) -> Preprocessing:
    """The normalisation each architecture's ImageNet weights were trained with."""
    if arch.startswith("efficientnet_lite"):
        return Preprocessing(size=size)
    return Preprocessing(size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
