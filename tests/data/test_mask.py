"""Foreground masks of catalog photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from helpers import draw_watch
from simclr_watches.data.images import load_image
from simclr_watches.data.mask import (border_backdrop_share, crop_and_backdrop, crop_box, crop_to_foreground, foreground_box,
                                     photo_mask, white_background_mask)


def test_watch_on_white_is_foreground_and_backdrop_is_not():
    img = draw_watch(3, 96)
    mask = white_background_mask(img)
    assert mask.shape == (96, 96) and mask.dtype == bool
    assert mask[48, 48]  # dial centre
    assert not mask[2, 2] and not mask[93, 2] and not mask[2, 93] and not mask[93, 93]
    non_white = (255 - np.asarray(img).min(axis=2)) > 24
    assert mask[non_white].all()


def test_white_inside_the_watch_stays_foreground():
    img = Image.new("RGB", (80, 80), "white")
    ImageDraw.Draw(img).ellipse([10, 10, 70, 70], outline=(30, 30, 30), width=6)  # white dial inside a dark ring
    mask = white_background_mask(img)
    assert mask[40, 40]
    assert not mask[3, 3]


def test_no_white_backdrop_or_nothing_on_it_means_keep_everything():
    rng = np.random.default_rng(0)
    lifestyle = Image.fromarray(rng.integers(0, 200, (40, 50, 3), dtype=np.uint8))
    assert white_background_mask(lifestyle).all()
    assert white_background_mask(Image.new("RGB", (30, 30), "white")).all()


def test_alpha_is_the_mask_when_present(tmp_path):
    rgba = Image.new("RGBA", (40, 40), (255, 255, 255, 0))
    ImageDraw.Draw(rgba).rectangle([10, 5, 29, 34], fill=(255, 255, 255, 255))  # white watch: only alpha can see it
    rgba.save(tmp_path / "a.png")
    mask = photo_mask(load_image(tmp_path / "a.png"))
    assert mask[5:35, 10:30].all()
    assert mask.sum() == 20 * 30


def test_foreground_box_with_margin_and_clipping():
    mask = np.zeros((100, 200), bool)
    mask[20:40, 50:90] = True  # 40 wide, 20 high
    assert foreground_box(mask, 0.0) == (50, 20, 90, 40)
    assert foreground_box(mask, 0.25) == (40, 10, 100, 50)
    assert foreground_box(mask, 1.0) == (10, 0, 130, 80)
    assert foreground_box(np.zeros((10, 12), bool)) == (0, 0, 12, 10)


def test_catalog_crop_cuts_the_backdrop_but_not_a_scene(tmp_path):
    canvas = Image.new("RGB", (250, 200), (255, 255, 255))  # under CROP_MASK_SIDE: the mask is exact
    canvas.paste(draw_watch(4, 60).crop((10, 0, 50, 60)), (200, 100))  # a 40 x 60 watch at a known place
    canvas.save(tmp_path / "packshot.png")
    photo = load_image(tmp_path / "packshot.png")
    x0, y0, x1, y1 = crop_box(photo, margin=0.05)
    assert (x0, y0, x1, y1) == (197, 97, 243, 163)  # 60 px long side: 3 px margin
    assert crop_to_foreground(photo, margin=0.05).size == (46, 66)
    scene = Image.fromarray(np.random.default_rng(0).integers(0, 200, (50, 80, 3), dtype=np.uint8))
    scene.save(tmp_path / "scene.png")
    assert crop_box(load_image(tmp_path / "scene.png")) == (0, 0, 80, 50)


def test_crop_box_of_a_large_photo_is_found_on_a_small_copy(tmp_path):
    canvas = Image.new("RGB", (2000, 1000), (255, 255, 255))
    canvas.paste(draw_watch(4, 400).crop((60, 0, 340, 400)), (1200, 300))  # 280 x 400 watch
    canvas.save(tmp_path / "big.png")
    photo = load_image(tmp_path / "big.png")
    ex0, ey0, ex1, ey1 = foreground_box(photo_mask(photo), margin=0.05)  # the full-resolution answer
    x0, y0, x1, y1 = crop_box(photo, margin=0.05)
    slack = 3 * 2000 / 256  # a small-copy pixel of rounding, one of widening, one of margin
    assert ex0 - slack <= x0 <= ex0 and ey0 - slack <= y0 <= ey0
    assert ex1 <= x1 <= ex1 + slack and ey1 <= y1 <= ey1 + slack


def test_backdrop_share_tells_a_packshot_from_a_scene(tmp_path):
    mask = np.ones((10, 20), bool)
    mask[0, :5] = False  # 5 of the 56 border pixels are backdrop
    assert border_backdrop_share(mask) == pytest.approx(5 / 56)
    draw_watch(2, 120).save(tmp_path / "packshot.png")
    box, share = crop_and_backdrop(load_image(tmp_path / "packshot.png"))
    assert box == crop_box(load_image(tmp_path / "packshot.png")) and share > 0.8  # the strap leaves the frame
    scene = Image.fromarray(np.random.default_rng(0).integers(0, 200, (300, 400, 3), dtype=np.uint8))  # small copy path
    scene.save(tmp_path / "scene.png")
    assert crop_and_backdrop(load_image(tmp_path / "scene.png")) == ((0, 0, 400, 300), 0.0)


def test_white_background_mask_equals_scipys_closing_and_labelling():
    """The numpy closing and border reconstruction give scipy.ndimage's answer (scipy: the reference, not imported at search)."""
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    for trial in range(30):
        h, w = rng.integers(5, 60, 2)
        arr = np.full((h, w, 3), 255, np.uint8)
        arr[rng.random((h, w)) < rng.uniform(0.05, 0.6)] = rng.integers(0, 200, 3)
        close = int(rng.integers(0, 4))
        not_white = (255 - arr.min(axis=2)) > 24
        if close:
            square = np.ones((2 * close + 1,) * 2, bool)
            grown = ndimage.binary_dilation(not_white, structure=square)
            not_white = ndimage.binary_erosion(grown, structure=square, border_value=1) | not_white
        labels, _ = ndimage.label(~not_white)
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        background = np.isin(labels, border[border > 0])
        want = ~background if (~background).any() and background.any() else np.ones((h, w), bool)
        assert np.array_equal(white_background_mask(arr, close=close), want), trial
