"""Localised scoring: one path for search and evaluate; candidates, fusion, and the query pipeline."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import draw_watch
from simclr_watches.data import images
from simclr_watches.data.images import load_image
from simclr_watches.data.mask import crop_box
from simclr_watches.evaluation.encoders import EncoderMethod, LocalizedMethod
from simclr_watches.retrieval import index as index_mod, scoring
from simclr_watches.retrieval.embed import embed_tensors
from simclr_watches.retrieval.index import build_forest, build_index, load_index
from simclr_watches.retrieval.localize import LocalizeConfig, embed_regions, window_crops
from simclr_watches.retrieval.projection import unit_rows
from simclr_watches.retrieval.scoring import AnnoyCandidates, fuse_scores, score_regions
from simclr_watches.retrieval.search import Searcher
from simclr_watches.weights import load_encoder_file


@pytest.fixture
def index_dir(make_catalog, small_checkpoint, tmp_path) -> Path:
    build_index(make_catalog(8), tmp_path / "idx", checkpoint=str(small_checkpoint), progress=False, n_trees=5)
    return tmp_path / "idx"


@pytest.fixture
def scenes(tmp_path) -> list[Path]:
    """Catalog watches pasted small into noisy scenes of different shapes: photos with several windows."""
    rng = np.random.default_rng(0)
    out = []
    for i, (w, h) in enumerate([(320, 240), (200, 260), (240, 240)]):
        scene = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        scene.paste(draw_watch(i + 2, size=90), (w - 100, h - 100))
        out.append(tmp_path / f"scene{i}.jpg")
        scene.save(out[-1])
    return out


def test_fusion_is_max_of_whole_and_top_m_window_mean():
    scores = np.array([[0.9, 0.2, 0.5],   # whole image
                       [0.1, 0.8, 0.6],
                       [0.3, 0.6, 0.7],
                       [0.2, 0.1, 0.9]])
    fused, best = fuse_scores(scores, top_m=2)
    assert fused == pytest.approx([0.9, 0.7, 0.8])
    assert best.tolist() == [0, 1, 3]
    assert fuse_scores(scores[:1], top_m=3)[0] == pytest.approx(scores[0])


def test_only_candidates_are_scored_the_rest_rank_last():
    gallery = np.eye(4, dtype=np.float32)
    regions = np.array([[0.6, 0.8, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]], np.float32)
    res = score_regions(regions, gallery, lambda r: np.array([1, 2]), top_m=1)
    assert res.ids.tolist() == [1, 2]
    assert res.scores == pytest.approx([1.0, 1.0])  # item 1: window 2; item 2: window 1
    assert res.best.tolist() == [2, 1]
    assert res.ranking().tolist() == [0, 1]  # a tie keeps gallery order
    dense = res.dense(4)
    assert dense.dtype == np.float32 and dense[[1, 2]] == pytest.approx([1.0, 1.0])
    assert np.isneginf(dense[[0, 3]]).all()  # item 0 matches the whole image (0.6) but was no candidate


@pytest.fixture
def searched_forest(monkeypatch):
    """Forests are searched whatever their size (the tests of the forest path use small ones)."""
    monkeypatch.setattr(index_mod, "EXACT_ITEMS", 0)


def test_every_item_of_a_small_forest_is_a_candidate_but_the_hidden_ones():
    gallery = np.eye(6, dtype=np.float32)
    cands = AnnoyCandidates(build_forest(gallery, 3), per_region=1, hidden=frozenset({2}), always=np.array([6]))
    region = np.array([[0, 0, 0, 0, 1, 0]], np.float32)
    assert cands(region).tolist() == [0, 1, 3, 4, 5, 6]  # one region, one per region: the forest is not asked


def test_a_forest_above_the_exact_size_is_searched(monkeypatch):
    gallery = np.eye(6, dtype=np.float32)
    forest = build_forest(gallery, 3)
    region = np.array([[0, 0, 0, 0, 1, 0]], np.float32)
    monkeypatch.setattr(index_mod, "EXACT_ITEMS", 6)
    assert AnnoyCandidates(forest, per_region=1)(region).tolist() == list(range(6))
    monkeypatch.setattr(index_mod, "EXACT_ITEMS", 5)
    assert AnnoyCandidates(forest, per_region=1)(region).tolist() == [4]


def test_annoy_candidates_unite_each_regions_nearest_items(searched_forest):
    gallery = np.eye(6, dtype=np.float32)
    cands = AnnoyCandidates(build_forest(gallery, 3), per_region=1)
    regions = np.array([[0, 0, 0, 0, 1, 0], [0.9, 0.1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0]], np.float32)
    regions /= np.linalg.norm(regions, axis=1, keepdims=True)
    assert cands(regions).tolist() == [0, 4]


def test_the_in_memory_forest_is_the_one_build_index_writes(index_dir, tmp_path):
    index = load_index(index_dir)
    build_forest(np.array(index.vectors), n_trees=5).save(str(tmp_path / "again.ann"))
    assert (tmp_path / "again.ann").read_bytes() == (index_dir / index.meta["files"]["forest"]).read_bytes()


def test_evaluate_scores_what_search_finds(index_dir, small_checkpoint, scenes, tmp_path, searched_forest):
    """evaluate's +loc and search share one path, Annoy candidates included: same items, same scores."""
    cfg = LocalizeConfig(candidates=1)  # few candidates: items outside them must be missing from both
    catalog = [Path(p) for p in load_index(index_dir).paths]
    results = Searcher(index_dir, device="cpu", localize=cfg).search(scenes, top_k=len(catalog))
    method = LocalizedMethod(EncoderMethod("small", str(small_checkpoint), crop=True), cfg)
    gallery = method.embed_gallery(catalog)
    scores = method.score_queries(scenes, gallery)
    for res, row in zip(results, scores):
        found = {Path(h.path): h.score for h in res.hits}
        assert 0 < len(found) < len(catalog)
        assert {catalog[g] for g in np.flatnonzero(np.isfinite(row))} == set(found)
        for g in np.flatnonzero(np.isfinite(row)):
            assert row[g] == pytest.approx(found[catalog[g]], abs=1e-5)


def test_a_small_catalog_is_searched_exactly(index_dir, small_checkpoint, scenes):
    """Below EXACT_ITEMS every item is scored, whatever the candidates per region: the same scores as evaluate's."""
    cfg = LocalizeConfig(candidates=1)
    index = load_index(index_dir)
    assert index.scoring_rows.dtype == np.float32
    assert np.allclose(index.scoring_rows, unit_rows(np.asarray(index.vectors, np.float32)))
    catalog = [Path(p) for p in index.paths]
    results = Searcher(index_dir, device="cpu", localize=cfg).search(scenes, top_k=len(catalog))
    method = LocalizedMethod(EncoderMethod("small", str(small_checkpoint), crop=True), cfg)
    scores = method.score_queries(scenes, method.embed_gallery(catalog))
    assert np.isfinite(scores).all()
    for res, row in zip(results, scores):
        assert len(res.hits) == len(catalog)
        assert [h.score for h in res.hits] == pytest.approx(np.sort(row)[::-1].tolist(), abs=1e-5)


def test_a_large_index_scores_its_stored_rows(index_dir, searched_forest):
    index = load_index(index_dir)
    assert index.scoring_rows is index.vectors  # read row by row, candidates only


def _old_localized_search(index_dir: Path, checkpoint: Path, query: Path, cfg: LocalizeConfig, top_k: int):
    """Localised search as it was: whole view and windows in separate passes, a hashed decode."""
    index = load_index(index_dir)
    enc, info = load_encoder_file(checkpoint)
    pre = info.preprocessing
    photo = load_image(query)
    boxes, whole, crops = window_crops(photo.rgb, pre, cfg, crop_box(photo, index.crop_margin))
    vecs = np.concatenate([embed_tensors(enc, pre, whole[None], torch.device("cpu")),
                           embed_tensors(enc, pre, crops, torch.device("cpu"))])
    cand = sorted({i for v in vecs for i in index.ann.get_nns_by_vector(v.tolist(), cfg.candidates)})
    rows = np.asarray(index.vectors[cand], np.float32)  # float16 rows, unit again
    fused, best = fuse_scores(vecs @ (rows / np.linalg.norm(rows, axis=1, keepdims=True)).T, cfg.top_m)
    order = np.argsort(-fused, kind="stable")[:top_k]
    return [(index.paths[cand[j]], float(fused[j])) for j in order], boxes[best[order[0]]].tolist()


def test_search_scores_equal_the_old_path(index_dir, small_checkpoint, scenes):
    cfg = LocalizeConfig()
    results = Searcher(index_dir, device="cpu").search(scenes, top_k=5)
    for query, res in zip(scenes, results):
        hits, box = _old_localized_search(index_dir, small_checkpoint, query, cfg, 5)
        assert [h.path for h in res.hits] == [p for p, _ in hits]
        assert [h.score for h in res.hits] == pytest.approx([s for _, s in hits], abs=1e-5)
        assert res.box == box


def test_whole_image_and_windows_are_one_batch(small_checkpoint, scenes):
    enc, info = load_encoder_file(small_checkpoint)
    photo = load_image(scenes[2])
    _, whole, crops = window_crops(photo.rgb, info.preprocessing, LocalizeConfig())
    calls = []
    hook = enc.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    vecs = embed_regions(enc, info.preprocessing, whole, crops, torch.device("cpu"), batch_size=32)
    hook.remove()
    assert calls == [1 + len(crops)] and len(crops) == 9
    apart = np.concatenate([embed_tensors(enc, info.preprocessing, whole[None], torch.device("cpu")),
                            embed_tensors(enc, info.preprocessing, crops, torch.device("cpu"))])
    assert np.allclose(vecs, apart, atol=1e-5)
    # Windows at another input size than the whole view cannot share its batch.
    _, whole, small = window_crops(photo.rgb, info.preprocessing, LocalizeConfig(size=32))
    calls.clear()
    hook = enc.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    embed_regions(enc, info.preprocessing, whole, small, torch.device("cpu"), batch_size=4)
    hook.remove()
    assert calls == [1, 4, 4, 1]


@pytest.mark.parametrize("localize", [LocalizeConfig(), None])
def test_queries_are_not_hashed(index_dir, scenes, monkeypatch, localize):
    searcher = Searcher(index_dir, device="cpu", localize=localize)

    class NoHashing:
        def sha256(self, data):
            raise AssertionError("a query was hashed")

    monkeypatch.setattr(images, "hashlib", NoHashing())
    assert all(r.error is None and r.hits for r in searcher.search(scenes, top_k=2))


def test_query_decoding_overlaps_embedding(index_dir, scenes, monkeypatch):
    """The third query may only finish decoding once the first is being embedded: no decode-all-first."""
    first_embedded = threading.Event()
    waited = []
    decode, embed = scoring.try_load_image, scoring.embed_regions

    def slow_decode(path, **kwargs):
        if path == scenes[2]:
            waited.append(first_embedded.wait(timeout=20))
        return decode(path, **kwargs)

    def embed_and_signal(*args, **kwargs):
        first_embedded.set()
        return embed(*args, **kwargs)

    monkeypatch.setattr(scoring, "try_load_image", slow_decode)
    monkeypatch.setattr(scoring, "embed_regions", embed_and_signal)
    results = Searcher(index_dir, device="cpu").search(scenes, top_k=1)
    assert waited == [True] and all(r.hits for r in results)
