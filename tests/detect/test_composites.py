"""Composites: the watch drawn inside its box, boxes mapped to and from the encoder's square."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import draw_watch
from PIL import Image

from simclr_watches.data.mask import white_background_mask
from simclr_watches.detect.composites import CompositeConfig, box_from_square, box_in_square, cutout, make_composite


def _marker_watch() -> tuple:
    """A pure-green watch on white: every green pixel of a composite is the watch's."""
    img = Image.new("RGB", (80, 120), (255, 255, 255))
    img.paste((0, 255, 0), (20, 10, 60, 110))
    return cutout(img, white_background_mask(img))


@pytest.mark.parametrize("seed", range(6))
def test_the_drawn_watch_lies_inside_its_box_and_fills_it(seed):
    watch = _marker_watch()
    objects = [cutout(draw_watch(s).convert("RGB"), np.ones((96, 96), bool) & (np.arange(96) > 10)[:, None])
               for s in range(2)]
    # No light, blur, noise or cast changes, high JPEG quality: green stays recognisable.
    cfg = CompositeConfig(size=96, gain=(1.0, 1.0), gamma=(1.0, 1.0), cast=0.0, blur=(0.0, 0.0), noise=(0.0, 0.0),
                          jpeg=(100, 100), arm_p=0.5, distractors=(0, 0))
    img, (x0, y0, x1, y1) = make_composite(watch, objects, np.random.default_rng(seed), cfg)
    arr = np.asarray(img).astype(int)
    green = (arr[..., 1] > 200) & (arr[..., 0] < 60) & (arr[..., 2] < 60)
    assert 0 <= x0 < x1 <= img.width and 0 <= y0 < y1 <= img.height
    ys, xs = np.nonzero(green)
    assert len(xs) > 50
    # every green pixel inside the box (1 px of JPEG/resampling slack), and the box no larger than the watch + 2 px
    assert xs.min() >= x0 - 1 and xs.max() < x1 + 1 and ys.min() >= y0 - 1 and ys.max() < y1 + 1
    assert xs.min() <= x0 + 2 and xs.max() >= x1 - 3 and ys.min() <= y0 + 2 and ys.max() >= y1 - 3


def test_composites_are_reproducible_from_their_seed():
    watch = _marker_watch()
    a = make_composite(watch, [], np.random.default_rng(3), CompositeConfig(size=64))
    b = make_composite(watch, [], np.random.default_rng(3), CompositeConfig(size=64))
    assert a[1] == b[1] and np.array_equal(np.asarray(a[0]), np.asarray(b[0]))


@pytest.mark.parametrize("w,h", [(200, 100), (100, 200), (150, 150)])
def test_square_units_round_trip(w, h):
    box = (10, 20, 90, 80)
    sq = box_in_square(box, w, h)
    assert all(0 <= v <= 1 for v in sq)
    assert box_from_square(np.array(sq), w, h) == box


def test_cutout_refuses_nothing_to_cut():
    img = Image.new("RGB", (20, 20), (255, 255, 255))
    assert cutout(img, np.zeros((20, 20), bool)) is None
    assert cutout(img, np.ones((20, 20), bool)) is None
