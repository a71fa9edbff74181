"""The photo simulator: reproducible under a seed, varied across seeds, a sane cut-out."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from helpers import draw_watch
from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.data.simulate import LEVELS, SEVERITIES, camera, cutout_mask, degrade_file, simulate_file, simulate_photo


def test_same_seed_gives_identical_bytes_and_other_seeds_differ():
    watch = draw_watch(3, 96)
    for severity in SEVERITIES:
        a = simulate_photo(watch, None, 7, severity, size=96)
        assert a == simulate_photo(watch, None, 7, severity, size=96)
        assert a != simulate_photo(watch, None, 8, severity, size=96)
        assert a != simulate_photo(watch, None, (7, 1), severity, size=96)
    assert simulate_photo(watch, None, 7, "mild", size=96) != simulate_photo(watch, None, 7, "hard", size=96)


def test_output_is_a_jpeg_of_the_asked_size(tmp_path):
    src = tmp_path / "w.png"
    draw_watch(1, 80).save(src)
    out = simulate_file(src, tmp_path / "sim" / "w.jpg", 0, "medium", size=64)
    img = Image.open(out)
    assert img.format == "JPEG" and img.size == (64, 64)
    # The white packshot background is replaced: almost no pure white remains.
    assert (np.asarray(img.convert("RGB")).min(axis=2) > 245).mean() < 0.05


def test_camera_degrades_a_photo_in_place_reproducibly():
    photo = draw_watch(2, 120).resize((120, 90))  # not square: the scene keeps its shape
    shot = camera(photo, np.random.default_rng(3), LEVELS["hard"])
    assert shot == camera(photo, np.random.default_rng(3), LEVELS["hard"])
    assert shot != camera(photo, np.random.default_rng(4), LEVELS["hard"])
    img = Image.open(io.BytesIO(shot))
    assert img.format == "JPEG" and img.size == (120, 90)
    # Hard light gains 0.35-0.6 (a cast of at most 25 % on top): the photo comes out darker.
    assert np.asarray(img.convert("RGB"), np.float32).mean() < 0.8 * np.asarray(photo, np.float32).mean()


def test_degrade_file_writes_the_photo_through_the_camera_and_refuses_unknown_severities(tmp_path):
    src = tmp_path / "wrist.png"
    draw_watch(4, 100).resize((100, 70)).save(src)
    out = degrade_file(src, tmp_path / "cam" / "wrist.jpg", (0, 5), "medium")
    assert Image.open(out).size == (100, 70)
    assert out.read_bytes() == camera(Image.open(src).convert("RGB"), np.random.default_rng([0, 5, 1]), LEVELS["medium"])
    with pytest.raises(SimclrWatchesError, match="unknown severity 'awful'"):
        degrade_file(src, tmp_path / "x.jpg", 0, "awful")
    assert not (tmp_path / "x.jpg").exists()


def test_cutout_keeps_enclosed_white_and_drops_the_border_white():
    img = Image.new("RGB", (60, 60), (255, 255, 255))
    ImageDraw.Draw(img).ellipse([10, 10, 50, 50], outline=(0, 0, 0), width=5)  # a white dial in a black case
    mask = np.asarray(cutout_mask(img))
    assert mask[2, 2] == 0 and mask[57, 57] == 0
    assert mask[30, 30] == 255


def test_cutout_of_a_photo_without_white_background_keeps_everything():
    img = Image.fromarray(np.full((40, 40, 3), 90, np.uint8))
    assert np.asarray(cutout_mask(img)).min() == 255


def test_unknown_severity_is_a_clear_error():
    with pytest.raises(SimclrWatchesError, match="severity"):
        simulate_photo(draw_watch(0, 32), None, 0, "extreme", size=32)


def test_alpha_is_used_as_the_mask_when_present():
    rgb = Image.new("RGB", (40, 40), (200, 0, 0))  # red everywhere, threshold would keep it all
    alpha = Image.new("L", (40, 40), 0)
    out = simulate_photo(rgb, alpha, 0, "mild", size=40)
    arr = np.asarray(Image.open(io.BytesIO(out)).convert("RGB"), np.float32)
    red_dominant = (arr[..., 0] > 150) & (arr[..., 1] < 60) & (arr[..., 2] < 60)
    assert red_dominant.mean() < 0.2  # the fully transparent watch left only background
