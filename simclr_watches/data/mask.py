"""Foreground mask of a catalog photo: which pixels are the watch, which the plain background.

Pretraining's background swap cuts the watch out with this mask; cropping a
catalog photo around the watch (issue 6) uses :func:`foreground_box`.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
from PIL import Image

from simclr_watches.data.images import Photo


def white_background_mask(rgb: Image.Image | np.ndarray, threshold: int = 24, close: int = 2) -> np.ndarray:
    """Foreground of a packshot on a near-white background.

    A pixel is background when every channel is within ``threshold`` of 255 *and*
    it is connected to the image border through such pixels; so a white dial or a
    highlight inside the watch stays foreground (holes are filled), while only the
    surrounding backdrop is cut away. A closing of radius ``close`` first bridges
    the thin bright seams (polished bezels, reflections) that would otherwise let
    the backdrop leak into the watch.

    A photo with no near-white border (an on-wrist "lifestyle" shot) comes back
    all foreground, and so does an all-white image: with nothing to tell apart,
    the safe answer is "do not cut".

    Args:
        rgb: RGB image, PIL or uint8 array (H, W, 3).
        threshold: largest distance from white (0-255, per channel) still counted as background.
        close: radius in pixels of the morphological closing of the non-white pixels.

    Returns:
        bool array (H, W), True on the watch.
    """
    arr = np.asarray(rgb, dtype=np.uint8)
    darkest = np.minimum(np.minimum(arr[..., 0], arr[..., 1]), arr[..., 2])  # arr.min(axis=2), 4x faster
    not_white = (255 - darkest) > threshold
    if close > 0:
        # A closing whose erosion treats the outside as foreground, so a strap cut by the frame is not eaten away.
        grown = _square_filter(not_white, close, np.logical_or, outside=False)
        not_white = _square_filter(grown, close, np.logical_and, outside=True) | not_white
    background = _reach_from_border(~not_white)
    fg = ~background
    if not fg.any() or not background.any():
        return np.ones(arr.shape[:2], bool)
    return fg


def _square_filter(mask: np.ndarray, radius: int, op, outside: bool) -> np.ndarray:
    """Binary dilation (``op`` = or) or erosion (``op`` = and) by a (2r+1)^2 square, pixels beyond the edge = ``outside``.

    The square is separable: a running ``op`` over rows, then over columns.
    """
    out = mask
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, constant_values=outside)
        n = out.shape[axis]
        acc = np.take(padded, range(0, n), axis=axis)
        for k in range(1, 2 * radius + 1):
            acc = op(acc, np.take(padded, range(k, k + n), axis=axis))
        out = acc
    return out


def _reach_from_border(free: np.ndarray) -> np.ndarray:
    """The ``free`` pixels 4-connected to the image border through ``free`` pixels (bool (H, W)).

    Geodesic reconstruction: grow the free border pixels one 4-neighbour step at a time
    inside ``free`` until nothing changes; the union of the components touching the border.
    """
    reached = np.zeros_like(free)
    reached[0], reached[-1], reached[:, 0], reached[:, -1] = free[0], free[-1], free[:, 0], free[:, -1]
    count = np.count_nonzero(reached)
    while True:
        grown = reached.copy()
        grown[1:] |= reached[:-1]
        grown[:-1] |= reached[1:]
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown &= free
        # grown only adds to reached (reached lies in free): equal counts, equal sets.
        grown_count = np.count_nonzero(grown)
        if grown_count == count:
            return reached
        reached, count = grown, grown_count


def photo_mask(photo: Photo, threshold: int = 24, close: int = 2) -> np.ndarray:
    """Foreground mask of a decoded photo: its alpha when it has one, else the white-background rule.

    Returns:
        bool array (H, W) of the photo's size, True on the watch.
    """
    if photo.alpha is not None:
        return np.asarray(photo.alpha, dtype=np.uint8) >= 128
    return white_background_mask(photo.rgb, threshold, close)


def foreground_box(mask: np.ndarray, margin: float = 0.1) -> tuple[int, int, int, int]:
    """Box around the foreground, grown by ``margin`` times its longer side, clipped to the image.

    Args:
        mask: bool or 0/1 array (H, W).
        margin: fraction of the box's longer side added on every side.

    Returns:
        ``(x0, y0, x1, y1)``, exclusive upper corner (PIL's ``crop`` order); the whole
        image when the mask is empty.
    """
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0, 0, w, h
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    pad = int(round(margin * max(x1 - x0, y1 - y0)))
    return max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)


# Margin around the watch when a catalog photo is cropped to it: keeps the lugs and a strip of backdrop.
CROP_MARGIN = 0.05
# The crop box is found on a copy this size: the mask's morphology on a 4000 px original costs seconds.
CROP_MASK_SIDE = 256


def crop_box(photo: Photo, margin: float = CROP_MARGIN) -> tuple[int, int, int, int]:
    """The box a photo is cropped to before embedding: the watch plus ``margin`` (whole photo if no backdrop)."""
    return crop_and_backdrop(photo, margin)[0]


def crop_and_backdrop(photo: Photo, margin: float = CROP_MARGIN) -> tuple[tuple[int, int, int, int], float]:
    """:func:`crop_box` and the share of the photo's border that is white backdrop, from one mask.

    The share tells a catalog-style packshot (the backdrop runs round the watch: close to 1)
    from a photo of a watch in a scene (no near-white backdrop: 0).
    """
    w, h = photo.rgb.size
    scale = CROP_MASK_SIDE / max(w, h)
    if scale >= 1:
        mask = photo_mask(photo)
        return foreground_box(mask, margin), border_backdrop_share(mask)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = Photo(photo.path, photo.rgb.resize(size, Image.Resampling.BILINEAR),
                  None if photo.alpha is None else photo.alpha.resize(size, Image.Resampling.BILINEAR),
                  photo.sha256, photo.nbytes)
    # One small pixel spans 1/scale original pixels: widen the box by one of them on every side.
    mask = photo_mask(small)
    x0, y0, x1, y1 = foreground_box(mask, margin)
    box = (max(0, int((x0 - 1) / scale)), max(0, int((y0 - 1) / scale)),
           min(w, int(np.ceil((x1 + 1) / scale))), min(h, int(np.ceil((y1 + 1) / scale))))
    return box, border_backdrop_share(mask)


def border_backdrop_share(mask: np.ndarray) -> float:
    """Share of the border pixels of a foreground mask (bool (H, W), True on the watch) that are backdrop."""
    border = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    return float(1.0 - border.mean())


def crop_to_foreground(photo: Photo, margin: float = CROP_MARGIN) -> Image.Image:
    """The photo's RGB cropped tightly around the watch, so text, badges and empty backdrop weigh less."""
    return photo.rgb.crop(crop_box(photo, margin))


def catalog_view(margin: float | None) -> Callable[[Photo], Image.Image] | None:
    """How catalog photos are cut before embedding: around the watch with ``margin``; None (whole) for None."""
    return None if margin is None else functools.partial(crop_to_foreground, margin=margin)
