import json

import pytest
import torch

from simclr_watches.core.errors import ImageReadError, IndexFormatError, SimclrWatchesError
from simclr_watches.retrieval.index import build_index
from simclr_watches.retrieval.localize import LocalizeConfig
from simclr_watches.model import Preprocessing
from simclr_watches.retrieval.search import QueryResult, Searcher
from simclr_watches.weights import init_encoder, save_encoder


@pytest.fixture
def index_dir(make_catalog, small_checkpoint, tmp_path):
    build_index(make_catalog(6), tmp_path / "idx", checkpoint=str(small_checkpoint), progress=False, n_trees=5)
    return tmp_path / "idx"


def test_each_catalog_image_finds_itself_first(index_dir, tmp_path):
    s = Searcher(index_dir, device="cpu")
    queries = [(str(p), p) for p in sorted((tmp_path / "catalog").iterdir())]
    results = s.search(queries, top_k=3)
    for (label, p), r in zip(queries, results):
        assert r.query == label and r.error is None and len(r.hits) == 3
        assert r.hits[0].path == str(p.resolve()) and r.hits[0].score > 0.999
        assert [h.rank for h in r.hits] == [1, 2, 3]
        assert r.hits[0].score >= r.hits[1].score >= r.hits[2].score


def test_unreadable_query_is_reported_and_others_answered(index_dir, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    good = tmp_path / "catalog" / "w001.png"
    results = Searcher(index_dir).search([("bad", bad), ("good", good)], top_k=20)
    assert results[0].error and "bad.png: not an image" in results[0].error and results[0].hits == []
    assert results[1].error is None and len(results[1].hits) == 6  # top-k capped at catalog size
    assert json.loads(json.dumps(results[1].to_json()))["query"] == "good"


def test_another_model_is_refused(index_dir, tmp_path):
    other = save_encoder(tmp_path / "other.safetensors", init_encoder("resnet18", "random"), Preprocessing(size=64))
    with pytest.raises(IndexFormatError, match="index was built with model .*small.safetensors.* rebuild it"):
        Searcher(index_dir, checkpoint=str(other))


def test_an_index_built_with_an_a_plus_b_ensemble_searches_from_anywhere(make_catalog, tmp_path, monkeypatch):
    torch.manual_seed(1)
    other = save_encoder(tmp_path / "other.safetensors", init_encoder("resnet18", "random"), Preprocessing(size=64))
    torch.manual_seed(2)
    save_encoder(tmp_path / "third.safetensors", init_encoder("resnet18", "random"), Preprocessing(size=64))
    catalog = make_catalog(4)
    monkeypatch.chdir(tmp_path)
    build_index(catalog, tmp_path / "idx", checkpoint="other.safetensors+third.safetensors", progress=False, n_trees=5)
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["dim"] == 1024 and [m["id"] for m in meta["model"]["members"]] == [
        str(other.resolve()), str((tmp_path / "third.safetensors").resolve())]
    monkeypatch.chdir(catalog)  # the recorded id has absolute paths
    query = sorted(catalog.iterdir())[2]
    [r] = Searcher(tmp_path / "idx").search([("q", query)], top_k=2)
    assert r.hits[0].path == str(query.resolve()) and r.hits[0].score > 0.999


def test_plain_paths_are_queries_labelled_by_themselves(index_dir, tmp_path):
    photo = tmp_path / "catalog" / "w002.png"
    s = Searcher(index_dir, device="cpu")
    by_pair = s.search([("mine", photo)], top_k=2)[0]
    for query in (photo, str(photo)):
        [res] = s.search([query], top_k=2)
        assert res.query == str(photo) and res.hits == by_pair.hits and res.box == by_pair.box
    assert [r.query for r in s.search(str(photo), top_k=1)] == [str(photo)]  # one path: one query


@pytest.mark.parametrize("localize", [LocalizeConfig(), None])
def test_search_one_answers_one_photo_or_raises(index_dir, tmp_path, localize):
    s = Searcher(index_dir, device="cpu", localize=localize)
    photo = tmp_path / "catalog" / "w004.png"
    res = s.search_one(str(photo), top_k=5)
    assert isinstance(res, QueryResult) and res.error is None
    assert [h.rank for h in res.hits] == [1, 2, 3, 4, 5] and res.hits[0].path == str(photo.resolve())
    assert (res.box is not None) == (localize is not None)
    (tmp_path / "bad.jpg").write_bytes(b"no image")
    with pytest.raises(ImageReadError, match="bad.jpg: not an image"):
        s.search_one(tmp_path / "bad.jpg")
    with pytest.raises(SimclrWatchesError, match="top-k must be >= 1"):
        s.search_one(photo, top_k=0)


@pytest.mark.slow
def test_the_descriptor_model_scores_a_scene_by_the_plain_ensemble_and_a_packshot_with_its_descriptor(make_catalog, tmp_path):
    """The descriptor block is used for a packshot query only (retrieval/query_descriptor.py), PCA or not.

    A photo in a scene ranks, and scores, the items by the plain ensemble's cosine (the old
    default's ranking): on the full rows, and on rows projected by a PCA that keeps the
    catalog's vectors (5 distinct watches in 8 files, a 6-d PCA: the span of the rows is kept).
    The model with the block and one catalog size (``watches-lite0-v1-ens-attr``), where those
    cosines are exact; the default's two catalog sizes: ``test_a_packshot_query_...`` below.
    """
    import shutil

    import numpy as np
    from PIL import Image

    from simclr_watches.data.mask import CROP_MARGIN, crop_to_foreground
    from simclr_watches.retrieval.boxes import BoxSearchConfig
    from simclr_watches.retrieval.embed import embed_paths
    from simclr_watches.weights import load_model

    catalog = make_catalog(5)
    for src in sorted(catalog.iterdir())[:3]:
        shutil.copy(src, catalog / f"copy-{src.name}")
    model = "watches-lite0-v1-ens-attr"
    build_index(catalog, tmp_path / "full", checkpoint=model, progress=False, n_trees=5, pca=0)
    build_index(catalog, tmp_path / "pca", checkpoint=model, progress=False, n_trees=5, pca=6)
    packshot = catalog / "w004.png"  # not copied: it alone is itself
    scene = Image.fromarray(np.random.default_rng(0).integers(0, 160, (200, 200, 3), dtype=np.uint8))
    scene.paste(Image.open(packshot).convert("RGB").resize((100, 100)), (50, 50))  # no white backdrop
    scene.save(tmp_path / "scene.png")
    # The plain ensemble (the old default) on the same views: the cosines a scene must score.
    plain, info = load_model("watches-lite0-v1-ens")
    view = lambda photo: crop_to_foreground(photo, CROP_MARGIN)  # noqa: E731
    items = embed_paths(plain, info.preprocessing, sorted(catalog.iterdir()), progress=False, view=view)
    [q] = embed_paths(plain, info.preprocessing, [tmp_path / "scene.png"], progress=False, view=view).vectors
    want = {str(it.path.resolve()): float(q @ v) for it, v in zip(items.items, items.vectors)}
    for name in ("full", "pca"):
        s = Searcher(tmp_path / name, device="cpu", localize=None)
        assert (s.index.projection is None) == (name == "full")
        [shot, photo] = s.search([packshot, tmp_path / "scene.png"], top_k=8)
        assert shot.hits[0].path == str(packshot.resolve()) and shot.hits[0].score > 0.99
        got = [(h.path, h.score) for h in photo.hits]
        assert [g for _, g in got] == pytest.approx([want[p] for p, _ in got], abs=2e-3)  # float16 rows
        ranked = [want[p] for p, _ in got]  # the plain ensemble's order (ties: copies; float16 rounding)
        assert sorted(want) == sorted(p for p, _ in got) and all(a >= b - 2e-3 for a, b in zip(ranked, ranked[1:]))
    # The learnt box scores the same query by regions: the packshot still finds itself with its block.
    s = Searcher(tmp_path / "pca", device="cpu", localize=BoxSearchConfig())
    [shot, photo] = s.search([packshot, tmp_path / "scene.png"], top_k=8)
    assert shot.hits[0].path == str(packshot.resolve()) and shot.hits[0].score > 0.99
    assert len(photo.hits) == 8 and all(-1.0 <= h.score <= 1.01 for h in photo.hits)


@pytest.mark.slow
def test_a_packshot_query_is_described_as_the_default_describes_its_catalog_with_or_without_the_box(make_catalog, tmp_path):
    from simclr_watches.retrieval.boxes import BoxSearchConfig

    catalog = make_catalog(4)
    build_index(catalog, tmp_path / "idx", progress=False, n_trees=5)  # the default: catalog at 160 + 288 px
    packshot = catalog / "w002.png"
    for localize in (None, BoxSearchConfig()):
        [shot] = Searcher(tmp_path / "idx", device="cpu", localize=localize).search([packshot], top_k=2)
        assert shot.hits[0].path == str(packshot.resolve()) and shot.hits[0].score > 0.995  # its own stored vector
