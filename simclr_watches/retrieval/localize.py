"""Query-side localisation: the windows of a photo in which to look for the watch.

A user's photo shows a watch on a wrist in a scene; a whole-image embedding
describes the sleeve and the sofa as much as the watch. So square windows at
several scales are embedded in one batch with the whole image, and a catalog item
scores the larger of (a) its whole-image similarity and (b) the mean of its
``top_m`` best window similarities (:func:`simclr_watches.retrieval.scoring.fuse_scores`).
(b) is a soft max: one lucky window matching a strap colour counts less than several
overlapping windows agreeing. (a) keeps a clean packshot query scoring exactly as
without localisation. The window that matched the top result best is reported as
the watch's box.

This is multi-scale sliding-window retrieval in the spirit of R-MAC region pooling
(Tolias, Sicre & Jégou, "Particular object retrieval with integral max-pooling of
CNN activations", ICLR 2016), but each region is re-embedded at full resolution
because a small watch needs the encoder's full input size to be recognised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from simclr_watches.model import Preprocessing

# A window narrower than this says nothing about a watch: a tiny or thin image gets the whole-image view only.
MIN_WINDOW = 16
# Window positions per axis and scale at most: a 60000 x 20 px panorama must not become thousands of windows.
MAX_POSITIONS = 16


@dataclass(frozen=True)
class LocalizeConfig:
    """How windows are laid out and their scores fused.

    Attributes:
        scales: window side as a fraction of the image's shorter side; the whole
            image is always window 0.
        stride: step between neighbouring windows as a fraction of the window side.
        top_m: number of best window scores averaged per catalog item.
        candidates: catalog items fetched from the index per window before exact fusion.
        size: input side for windows (0: the model's own region size). Smaller is faster; the
            whole image always goes in at the model's size.
    """

    scales: tuple[float, ...] = (0.45,)
    stride: float = 0.7
    top_m: int = 3
    candidates: int = 50
    size: int = 0

    def __post_init__(self) -> None:
        if not self.scales or not all(0.0 < s <= 1.0 for s in self.scales):
            raise ValueError(f"scales must lie in (0, 1], got {self.scales}")
        if not 0.0 < self.stride <= 1.0:
            raise ValueError(f"stride must lie in (0, 1], got {self.stride}")
        if self.size < 0 or 0 < self.size < 32:
            raise ValueError(f"size must be 0 (model's own) or >= 32, got {self.size}")
        if self.top_m < 1 or self.candidates < 1:
            raise ValueError("top_m and candidates must be >= 1")


def _positions(length: float, side: float, stride: float) -> np.ndarray:
    """Window starts covering [0, length] evenly, first flush left, last flush right.

    At most MAX_POSITIONS of them: along a very long side the windows then leave gaps.
    """
    if side >= length:
        return np.array([0.0])
    n = int(np.ceil((length - side) / (side * stride))) + 1
    return np.linspace(0.0, length - side, min(n, MAX_POSITIONS))


def window_boxes(width: int, height: int, cfg: LocalizeConfig = LocalizeConfig()) -> np.ndarray:
    """Square windows over an image, whole image first.

    Windows whose side would be under MIN_WINDOW pixels are left out, so every box has
    a positive area, and a tiny image is only looked at whole.

    Returns:
        (R, 4) int array of ``[x0, y0, x1, y1]`` pixel boxes (x1, y1 exclusive), all
        inside the image; row 0 is ``[0, 0, width, height]``.
    """
    if width < 1 or height < 1:
        raise ValueError(f"an image of {width}x{height} pixels has no windows")
    boxes = [(0.0, 0.0, float(width), float(height))]
    short = min(width, height)
    for s in cfg.scales:
        side = s * short
        if side < MIN_WINDOW:
            continue
        for y in _positions(height, side, cfg.stride):
            for x in _positions(width, side, cfg.stride):
                boxes.append((x, y, x + side, y + side))
    out = np.rint(np.array(boxes)).astype(int)
    # Drop windows that rounding made identical (e.g. scale 1.0 on a square image).
    _, first = np.unique(out, axis=0, return_index=True)
    return out[np.sort(first)]


def window_crops(img: Image.Image, pre: Preprocessing, cfg: LocalizeConfig = LocalizeConfig(),
                 whole_box: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """The windows of an RGB image, each prepared as encoder input.

    Args:
        whole_box: region 0, the "whole image" view, when the catalog was indexed with a
            crop (the same crop is then applied to the query); default the full image.

    Returns:
        boxes: (R, 4) region 0 then the windows of :func:`window_boxes`.
        whole: (3, S, S) uint8 region 0, S = ``pre.size``.
        crops: (R - 1, 3, s, s) uint8 windows, s = ``cfg.size or pre.region_side()``.
    """
    boxes = window_boxes(*img.size, cfg)
    if whole_box is not None:
        boxes[0] = whole_box
    size = cfg.size or pre.region_side()
    crops = [pre.to_uint8(img.crop(tuple(int(v) for v in b)), size) for b in boxes[1:]]
    return boxes, pre.to_uint8(img.crop(tuple(int(v) for v in boxes[0]))), torch.stack(crops) if crops else torch.zeros((0, 3, size, size), dtype=torch.uint8)


def embed_regions(encoder, pre: Preprocessing, whole: torch.Tensor, crops: torch.Tensor, device: torch.device,
                  batch_size: int = 32) -> np.ndarray:
    """Embeds one image's whole view and windows, whole image first.

    When the windows go in at the whole view's size (the default), all regions share
    batches: a square photo's 10 regions are one encoder pass, not two.

    Args:
        whole: (3, S, S) uint8 region 0.
        crops: (R - 1, 3, s, s) uint8 windows.

    Returns:
        (R, D) float32 unit vectors.
    """
    from simclr_watches.retrieval.embed import embed_tensors

    if crops.shape[-2:] == whole.shape[-2:]:
        batches = torch.cat([whole[None], crops]).split(batch_size)
    else:
        batches = (whole[None], *crops.split(batch_size))
    return np.concatenate([embed_tensors(encoder, pre, b, device) for b in batches])
