import json

import numpy as np
import pytest
from PIL import Image

from helpers import draw_watch, run_cli
from simclr_watches.retrieval.index import build_index
from simclr_watches.retrieval.localize import MAX_POSITIONS, MIN_WINDOW, LocalizeConfig, window_boxes
from simclr_watches.retrieval.search import Searcher


def test_windows_cover_the_image_whole_first():
    cfg = LocalizeConfig(scales=(0.5,), stride=0.5)
    boxes = window_boxes(200, 100, cfg)
    assert boxes[0].tolist() == [0, 0, 200, 100]
    w = boxes[1:]
    assert (w[:, 2] - w[:, 0] == 50).all() and (w[:, 3] - w[:, 1] == 50).all()  # squares of half the short side
    assert w[:, 0].min() == 0 and w[:, 2].max() == 200 and w[:, 1].min() == 0 and w[:, 3].max() == 100
    assert len(w) == 7 * 3  # x: 0, 25, ..., 150; y: 0, 25, 50
    assert len({tuple(b) for b in boxes.tolist()}) == len(boxes)


def test_scale_one_on_a_square_image_is_not_repeated():
    assert window_boxes(64, 64, LocalizeConfig(scales=(1.0,))).tolist() == [[0, 0, 64, 64]]


@pytest.mark.parametrize("bad", [dict(scales=()), dict(scales=(1.5,)), dict(stride=0.0), dict(top_m=0)])
def test_bad_config(bad):
    with pytest.raises(ValueError):
        LocalizeConfig(**bad)


@pytest.mark.slow
def test_box_finds_a_packshot_pasted_into_a_scene(make_catalog, small_checkpoint, tmp_path):
    """A catalog watch pasted small at a known place into clutter: the box lands on it."""
    root = make_catalog(6)
    build_index(root, tmp_path / "idx", checkpoint=str(small_checkpoint), progress=False, n_trees=5)
    rng = np.random.default_rng(0)
    scene = Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).resize((320, 240), Image.NEAREST)
    scene = scene.resize((320, 240))
    watch = draw_watch(3, size=96)
    x, y = 200, 120
    scene.paste(watch, (x, y))
    scene.save(tmp_path / "scene.png")
    cfg = LocalizeConfig(scales=(0.4,), stride=0.25, top_m=1)
    [res] = Searcher(tmp_path / "idx", localize=cfg).search([("q", tmp_path / "scene.png")], top_k=3)
    assert res.hits[0].path.endswith("w003.png")
    x0, y0, x1, y1 = res.box
    inter = max(0, min(x1, x + 96) - max(x0, x)) * max(0, min(y1, y + 96) - max(y0, y))
    iou = inter / ((x1 - x0) * (y1 - y0) + 96 * 96 - inter)
    assert iou > 0.5, (res.box, iou)


@pytest.mark.parametrize("size", [(1, 1), (3, 200), (15, 15), (36, 36), (60000, 40), (97, 1001)])
def test_every_window_has_a_positive_area_inside_the_image(size):
    w, h = size
    boxes = window_boxes(w, h)
    assert boxes[0].tolist() == [0, 0, w, h]
    assert ((boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= w) & (boxes[:, 3] <= h)).all()
    assert ((boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)).all()
    sides = boxes[1:, 2] - boxes[1:, 0]
    assert (sides >= MIN_WINDOW).all()  # smaller windows are not looked at: the whole image is
    assert len(boxes) <= 1 + MAX_POSITIONS**2  # a panorama does not become thousands of windows


@pytest.mark.slow
def test_cli_box_of_a_one_pixel_query_is_the_whole_image(make_catalog, small_checkpoint, tmp_path):
    build_index(make_catalog(2), tmp_path / "idx", checkpoint=str(small_checkpoint), progress=False, n_trees=2)
    Image.new("RGB", (1, 1), (0, 0, 0)).save(tmp_path / "dot.png")
    proc = run_cli("search", tmp_path / "dot.png", "--index", tmp_path / "idx", "--json", "-k", 1)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["box"] == [0, 0, 1, 1]


def test_windows_are_seen_at_the_models_region_size_and_the_whole_photo_at_its_size():
    from simclr_watches.model import Preprocessing
    from simclr_watches.retrieval.localize import window_crops

    img = draw_watch(0).resize((200, 150))
    boxes, whole, crops = window_crops(img, Preprocessing(size=64, region_sizes=(80,)))
    assert whole.shape == (3, 64, 64) and crops.shape == (len(boxes) - 1, 3, 80, 80) and len(boxes) > 1
    _, _, small = window_crops(img, Preprocessing(size=64, region_sizes=(80,)), LocalizeConfig(size=48))
    assert small.shape[-2:] == (48, 48)  # a layout's own window size still wins
