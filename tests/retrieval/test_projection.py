"""Compact vectors (issue 17): the PCA an index stores, applied to queries; its life through updates."""

from pathlib import Path

import numpy as np
import pytest

from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.evaluation.method_names import make_method
from simclr_watches.retrieval.index import build_index, fit_projection, load_index
from simclr_watches.retrieval.projection import Projection, candidate_rows, fit_pca, stored_rows, unit_rows
from simclr_watches.retrieval.search import Searcher
from simclr_watches.retrieval.update import add_items, compact, remove_items


def _unit(rng, n, d):
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_a_full_rank_uncentred_pca_keeps_every_ranking():
    """Rows inside the fitted subspace keep their dot products with any query: the same neighbours."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(32, 6)))[0].T  # 6 orthonormal 32-d axes
    gallery = _unit(rng, 50, 6) @ basis
    queries = _unit(rng, 10, 32)
    p = fit_pca(gallery, 6)
    assert p.apply(gallery).shape == (50, 6) and np.allclose(np.linalg.norm(p.apply(queries), axis=1), 1, atol=1e-5)
    assert np.allclose(p.mean, 0)  # not centred
    exact = np.argsort(-(queries @ gallery.T), axis=1)[:, :5]
    projected = np.argsort(-(p.apply(queries) @ p.apply(gallery).T), axis=1)[:, :5]
    assert (exact == projected).all()
    assert np.allclose(np.abs(p.apply(queries[0])), np.abs(p.apply(queries[:1])[0]))  # one vector or rows alike


def test_centred_and_whitened_pcas_and_their_round_trip():
    rng = np.random.default_rng(1)
    x = _unit(rng, 200, 16) + 0.5
    c = fit_pca(x, 4, center=True)
    assert np.allclose(c.mean, x.mean(0), atol=1e-6)
    w = fit_pca(x, 4, whiten=True, center=True)
    y = (x - w.mean) @ w.matrix.T
    assert np.allclose(y.var(axis=0, ddof=1), 1, atol=0.05)  # unit variance, up to the regularisation
    again = Projection.from_array(w.to_array(), whiten=True)
    assert np.array_equal(again.to_array(), w.to_array()) and again.width == 4 and again.input_dim == 16
    assert np.array_equal(fit_pca(x, 4).matrix, fit_pca(x, 4).matrix)  # deterministic


def test_widths_out_of_range_are_refused():
    x = _unit(np.random.default_rng(2), 10, 8)
    assert fit_projection(x, 0) is None and fit_projection(x, 8) is None  # no PCA, or one of every dimension
    with pytest.raises(SimclrWatchesError, match="needs more than 12 images, the catalog has 10"):
        fit_projection(_unit(np.random.default_rng(2), 10, 16), 12)
    with pytest.raises(SimclrWatchesError, match="must be >= 0"):
        fit_projection(x, -1)
    assert stored_rows(x).dtype == np.float16


def test_an_index_with_a_pca_searches_adds_and_compacts_in_its_space(make_catalog, small_checkpoint, tmp_path,
                                                                      one_thread):
    catalog = make_catalog(8)
    build_index(catalog, tmp_path / "idx", checkpoint=str(small_checkpoint), progress=False, n_trees=3, pca=5)
    index = load_index(tmp_path / "idx")
    assert index.meta["dim"] == 5 and index.meta["projection"] == {"method": "pca", "input_dim": 512}
    assert index.projection.width == 5 and index.vectors.shape == (8, 5) and index.vectors.dtype == np.float16
    searcher = Searcher(tmp_path / "idx", device="cpu")
    for localize in (True, False):
        searcher.localize = searcher.localize if localize else None
        hits = searcher.search_one(catalog / "w003.png", top_k=3).hits
        assert hits[0].id == 3 and hits[0].score == pytest.approx(1, abs=1e-3)
    new = make_catalog(10, subdir="more")
    report = add_items(tmp_path / "idx", [new / "w009.png"], model=(searcher.encoder, searcher.model))
    assert [a["id"] for a in report.added] == [8]
    remove_items(tmp_path / "idx", [0])
    assert compact(tmp_path / "idx").compacted
    after = load_index(tmp_path / "idx")
    assert after.meta["files"]["projection"] == "projection-1.npy"  # kept, not refitted
    assert np.array_equal(after.projection.to_array(), index.projection.to_array())
    assert after.ids == [1, 2, 3, 4, 5, 6, 7, 8]
    searcher.refresh()
    searcher.localize = None
    assert searcher.search_one(new / "w009.png", top_k=1).hits[0].id == 8


def test_the_forest_of_a_projected_index_holds_the_leading_axes_and_candidates_score_exactly(tmp_path, monkeypatch):
    from simclr_watches.model import Preprocessing
    from simclr_watches.retrieval import index as index_mod
    from simclr_watches.retrieval.embed import EmbeddedItem
    from simclr_watches.weights import ModelInfo

    monkeypatch.setattr(index_mod, "FOREST_WIDTH", 4)
    rng = np.random.default_rng(3)
    embeddings = _unit(rng, 60, 16)
    pca = fit_projection(embeddings, 8)
    items = [EmbeddedItem(f"/cat/{i}.jpg", f"{i:064x}", 1) for i in range(60)]
    index_mod.write_index(tmp_path / "idx", pca.apply(embeddings), items, ModelInfo("m", "a" * 64, "resnet18", 16,
                          Preprocessing(size=32)), Preprocessing(size=32), n_trees=3, projection=pca)
    index = load_index(tmp_path / "idx")
    rows = np.asarray(index.vectors, np.float32)
    assert index.meta["forest_dim"] == 4 and index.ann.f == 4 and index.meta["dim"] == 8
    assert np.allclose(index.ann.get_item_vector(7), unit_rows(rows[7:8, :4])[0], atol=1e-6)
    for query in pca.apply(_unit(rng, 5, 16)):
        found, scores = index.query(query, 10)
        exact = unit_rows(rows) @ query  # 60 items, all candidates: the exact top 10, exact cosines
        assert found == np.argsort(-exact, kind="stable")[:10].tolist()
        assert np.allclose(scores, exact[found], atol=1e-6)
    monkeypatch.undo()
    remove_items(tmp_path / "idx", [0])
    assert compact(tmp_path / "idx").compacted
    assert load_index(tmp_path / "idx").ann.f == 4  # the index's own forest_dim, whatever the default now


def test_a_small_catalog_keeps_every_dimension(make_catalog, small_checkpoint, tmp_path, one_thread):
    build_index(make_catalog(4), tmp_path / "idx", checkpoint=str(small_checkpoint), progress=False, n_trees=3)
    index = load_index(tmp_path / "idx")  # 4 images: a 512-d PCA is impossible (and keeps every dimension of this 512-d model)
    assert index.projection is None and "projection" not in index.meta and index.meta["dim"] == 512


def test_evaluate_names_store_the_gallery_as_an_index_does(tmp_path):
    m = make_method("imagenet+crop+pca64+loc")
    assert m.name == "imagenet+crop+pca64+loc" and m.inner.stored == (64, "pca") and m.inner.crop
    assert make_method("imagenet+white32").stored == (32, "white")
    assert make_method("imagenet+cpca32").stored == (32, "cpca")
    assert make_method("imagenet+f16").stored == (0, "")
    with pytest.raises(SimclrWatchesError, match="needs an encoder method"):
        make_method("hist+pca8")


def test_evaluate_keeps_every_dimension_of_a_gallery_no_wider_than_the_pca_as_build_index_does():
    rng = np.random.default_rng(3)
    m = make_method("imagenet+pca8")
    for n, projected in ((8, False), (9, True)):
        vectors = _unit(rng, n, 16)
        m.embed = lambda paths, v=vectors: v  # the encoder's embeddings, without an encoder
        gallery = m.embed_gallery([Path(f"{i}.png") for i in range(n)])
        assert (m.projection is not None) == projected and gallery.shape == (n, 8 if projected else 16)
        assert np.array_equal(gallery, stored_rows(vectors if not projected else m.projection.apply(vectors)).astype(np.float32))


def test_a_projection_without_renormalising_keeps_the_projected_length():
    rng = np.random.default_rng(4)
    p = fit_pca(_unit(rng, 30, 10), 4)
    x = 3.0 * _unit(rng, 2, 10)
    raw = p.apply(x, unit=False)
    assert np.allclose(raw, x @ p.matrix.T, atol=1e-6) and np.allclose(unit_rows(raw), p.apply(x), atol=1e-6)
    assert np.allclose(p.apply(x[0], unit=False), raw[0], atol=1e-6)


def test_candidate_rows_renormalise_stored_rows_and_take_a_float32_copy_as_it_is():
    rows = stored_rows(_unit(np.random.default_rng(1), 6, 8))
    picked = candidate_rows(rows, np.array([1, 4]))
    assert picked.dtype == np.float32 and np.allclose(np.linalg.norm(picked, axis=1), 1, atol=1e-6)
    assert np.allclose(picked, unit_rows(rows[[1, 4]]))
    copy = unit_rows(rows)
    assert candidate_rows(copy, np.arange(6)) is copy  # every row of the float32 copy: no copy again
    assert np.array_equal(candidate_rows(copy, np.array([2])), copy[[2]])
