"""Search with the learnt box: the shipped head finds a watch pasted into a synthetic photo."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from simclr_watches.core.errors import CheckpointError, SimclrWatchesError
from simclr_watches.data.mask import white_background_mask
from simclr_watches.data.synth import render_watch, sample_attributes
from simclr_watches.retrieval.boxes import BoxSearchConfig, box_regions, grow, square
from simclr_watches.retrieval.index import build_index
from simclr_watches.retrieval.localize import LocalizeConfig
from simclr_watches.retrieval.search import Searcher, locate_config


def _iou(a, b) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _photo(seed: int, path) -> tuple[int, int, int, int]:
    """A synthetic watch pasted small on a textured, non-white background; returns its true box."""
    rng = np.random.default_rng(seed)
    watch = render_watch(sample_attributes(rng), size=200, seed=seed)
    mask = white_background_mask(watch)
    side = int(rng.integers(110, 170))
    watch, m = watch.resize((side, side)), Image.fromarray(mask.astype(np.uint8) * 255).resize((side, side))
    yy, xx = np.mgrid[0:360, 0:480]
    bg = np.stack([80 + 60 * np.sin(xx / 23.0), 110 + 40 * np.cos(yy / 17.0), 90 + 0 * xx], axis=-1)
    img = Image.fromarray((bg + rng.normal(0, 6, bg.shape)).clip(0, 255).astype(np.uint8))
    x, y = int(rng.integers(0, 480 - side)), int(rng.integers(0, 360 - side))
    img.paste(watch, (x, y), m)
    img.save(path)
    ys, xs = np.nonzero(np.asarray(m) >= 128)
    return x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1


def _catalog(root):
    """Four synthetic watches on white, w0.png to w3.png, in ``root``."""
    rng = np.random.default_rng(5)
    for i in range(4):
        render_watch(sample_attributes(rng), size=160, seed=i).save(root / f"w{i}.png")
    return root


@pytest.fixture(scope="module")
def default_index(tmp_path_factory):
    """A small catalog indexed with the default model (the box head reads its first member's maps)."""
    root = _catalog(tmp_path_factory.mktemp("boxcat"))
    build_index(root, root.parent / "idx", progress=False, n_trees=5)
    return root.parent / "idx"


def test_search_with_the_box_finds_the_watch_in_a_synthetic_photo(default_index, tmp_path, one_thread):
    cfg = BoxSearchConfig(squares=(), top_m=1, margin=0.0)  # the box itself
    searcher = Searcher(default_index, device="cpu", localize=cfg)
    ious = []
    for seed in range(3):
        truth = _photo(100 + seed, tmp_path / f"q{seed}.jpg")
        result = searcher.search_one(tmp_path / f"q{seed}.jpg", top_k=2)
        assert len(result.hits) == 2 and result.box is not None
        ious.append(_iou(result.box, truth))
    assert min(ious) >= 0.5, ious


def test_another_encoder_gets_windows_by_default_and_a_named_head_is_refused(make_catalog, small_checkpoint, tmp_path):
    build_index(make_catalog(3), tmp_path / "idx", checkpoint=str(small_checkpoint), progress=False, n_trees=2)
    s = Searcher(tmp_path / "idx", device="cpu", localize=BoxSearchConfig())
    assert s.localize == LocalizeConfig() and s.finder is None
    assert s.search_one(tmp_path / "catalog" / "w001.png", top_k=1).hits[0].path.endswith("w001.png")
    with pytest.raises(CheckpointError, match="reads the maps of watches-lite0-v1"):
        Searcher(tmp_path / "idx", device="cpu", localize=BoxSearchConfig(head="watches-lite0-v1-box"))


def test_locate_modes():
    assert locate_config("windows") == LocalizeConfig()
    assert locate_config("box", "h.safetensors") == BoxSearchConfig(head="h.safetensors")
    with pytest.raises(SimclrWatchesError, match="--locate"):
        locate_config("grid")
    with pytest.raises(SimclrWatchesError, match="--box-head needs --locate box"):
        locate_config("windows", "h.safetensors")


def test_grow_keeps_the_box_inside_the_picture():
    assert grow((10, 10, 30, 50), 0.1, 100, 100) == (6, 6, 34, 54)
    assert grow((0, 0, 100, 20), 0.5, 100, 40) == (0, 0, 100, 40)


def test_squares_are_centred_on_the_box_and_clipped():
    assert square((40, 40, 60, 80), 1.0, 200, 200) == (30, 40, 70, 80)
    assert square((0, 0, 20, 20), 2.0, 200, 200) == (0, 0, 30, 30)
    cfg = BoxSearchConfig(squares=(1.0, 1.5), top_m=2)
    assert box_regions((40, 40, 60, 80), cfg, 200, 200) == [(30, 40, 70, 80), (20, 30, 80, 90)]
    assert box_regions((40, 40, 60, 80), BoxSearchConfig(squares=(), margin=0.0), 200, 200) == [(40, 40, 60, 80)]


@pytest.mark.parametrize("cfg", [BoxSearchConfig(), BoxSearchConfig(whole=False, squares=(1.0, 1.3), top_m=2)])
def test_square_regions_search_finds_the_watch(default_index, tmp_path, one_thread, cfg):
    truth = _photo(7, tmp_path / "q.jpg")
    result = Searcher(default_index, device="cpu", localize=cfg).search_one(tmp_path / "q.jpg", top_k=3)
    assert len(result.hits) == 3 and [h.rank for h in result.hits] == [1, 2, 3]
    x0, y0, x1, y1 = result.box
    cx, cy = (truth[0] + truth[2]) / 2, (truth[1] + truth[3]) / 2
    assert x0 <= cx <= x1 and y0 <= cy <= y1  # a square around the watch's centre


def test_the_default_model_sees_the_box_regions_at_its_region_size(default_index, tmp_path, one_thread, monkeypatch):
    import simclr_watches.retrieval.boxes as boxes_mod

    seen, real = [], boxes_mod.embed_tensors
    monkeypatch.setattr(boxes_mod, "embed_tensors", lambda enc, pre, x, dev: seen.append(tuple(x.shape)) or real(enc, pre, x, dev))
    _photo(7, tmp_path / "q.jpg")
    searcher = Searcher(default_index, device="cpu")
    assert searcher.search_one(tmp_path / "q.jpg", top_k=1).hits
    pre = searcher.index.preprocessing
    assert (pre.size, pre.region_sizes, pre.catalog_sides) == (160, (224, 160), (160, 288))  # what the index records
    assert BoxSearchConfig().squares == (1.0, 1.3)
    assert seen == [(1, 3, 160, 160), (1, 3, 224, 224)]  # a batch per side: the 1.3 square at 160 px, the box's at 224


def test_each_square_is_seen_at_its_region_size_the_last_size_repeating(default_index, tmp_path, one_thread, monkeypatch):
    import simclr_watches.retrieval.boxes as boxes_mod

    seen, real = [], boxes_mod.embed_tensors
    monkeypatch.setattr(boxes_mod, "embed_tensors", lambda enc, pre, x, dev: seen.append(tuple(x.shape)) or real(enc, pre, x, dev))
    _photo(7, tmp_path / "q.jpg")
    cfg = BoxSearchConfig(squares=(1.0, 1.3, 1.7), flip=True)
    assert Searcher(default_index, device="cpu", localize=cfg).search_one(tmp_path / "q.jpg", top_k=3).hits
    assert seen == [(4, 3, 160, 160), (2, 3, 224, 224)]  # 1.3 and 1.7 at 160 px, 1.0 at 224, each with its mirror image


def test_a_packshot_query_is_described_as_the_catalog_is(default_index, tmp_path, one_thread, monkeypatch):
    import simclr_watches.retrieval.boxes as boxes_mod
    import simclr_watches.retrieval.embed as embed_mod

    seen, real = [], embed_mod.embed_tensors
    for mod in (boxes_mod, embed_mod):
        monkeypatch.setattr(mod, "embed_tensors", lambda enc, pre, x, dev: seen.append(tuple(x.shape)) or real(enc, pre, x, dev))
    rng = np.random.default_rng(5)  # the first watch of the indexed catalog, on white: a catalog-style query
    render_watch(sample_attributes(rng), size=160, seed=0).save(tmp_path / "packshot.png")
    hits = Searcher(default_index, device="cpu").search_one(tmp_path / "packshot.png", top_k=1).hits
    assert hits[0].score == pytest.approx(1.0, abs=2e-3)  # its stored vector, found again: 160 + 288 px averaged
    assert seen == [(1, 3, 288, 288), (1, 3, 160, 160), (1, 3, 224, 224)]  # its whole view at 288 px, then the squares


CBOX = "watches-lite0-v1-ens-attr-ms2-cbox"


@pytest.fixture(scope="module")
def cbox_index(tmp_path_factory):
    """Three synthetic watches indexed with a model whose catalog is also seen around its learnt box."""
    root = _catalog(tmp_path_factory.mktemp("cboxcat"))
    (root / "w3.png").rename(root.parent / "later.png")  # added afterwards
    build_index(root, root.parent / "cbox-idx", checkpoint=CBOX, progress=False, n_trees=5)
    return root.parent / "cbox-idx"


def test_a_catalog_box_view_is_averaged_into_the_catalog_and_into_a_packshot_query(cbox_index, tmp_path, one_thread,
                                                                                 monkeypatch):
    import simclr_watches.retrieval.boxes as boxes_mod
    import simclr_watches.retrieval.catalog as catalog_mod
    import simclr_watches.retrieval.embed as embed_mod
    from simclr_watches.retrieval.index import load_index
    from simclr_watches.retrieval.update import add_items

    pre = load_index(cbox_index).preprocessing
    assert (pre.catalog_box.square, pre.catalog_box.size) == (1.3, 224)  # what the index records
    rng = np.random.default_rng(5)  # the first watch of the indexed catalog, on white: a catalog-style query
    render_watch(sample_attributes(rng), size=160, seed=0).save(tmp_path / "packshot.png")
    seen, real = [], embed_mod.embed_tensors
    for mod in (boxes_mod, catalog_mod, embed_mod):
        monkeypatch.setattr(mod, "embed_tensors", lambda enc, pre, x, dev: seen.append(tuple(x.shape)) or real(enc, pre, x, dev))
    hits = Searcher(cbox_index, device="cpu").search_one(tmp_path / "packshot.png", top_k=1).hits
    assert hits[0].path.endswith("w0.png")
    assert hits[0].score == pytest.approx(1.0, abs=2e-3)  # its stored vector found again: 160 + 288 px + the box view
    assert seen[:2] == [(1, 3, 288, 288), (1, 3, 224, 224)]  # as the catalog: 288 px, then the square around its box
    # An item added later is embedded as the build embedded the others: with its box view.
    report = add_items(cbox_index, [cbox_index.parent / "later.png"], device="cpu")
    assert report.embedded == 1
    hit = Searcher(cbox_index, device="cpu").search_one(cbox_index.parent / "later.png", top_k=1).hits[0]
    assert hit.path.endswith("later.png") and hit.score == pytest.approx(1.0, abs=2e-3)
