"""Query-side use of the descriptor block: a catalog-style query keeps it, a photo in a scene scores the ensemble alone."""

import numpy as np

from simclr_watches.retrieval.query_descriptor import (BACKDROP_BORDER_SHARE, DescriptorLayout, descriptor_layout,
                                                       query_vectors)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _stored(ens: np.ndarray, desc: np.ndarray, w: float) -> np.ndarray:
    return np.concatenate([ens * np.sqrt(1 - w), desc * np.sqrt(w)], 1)


def test_a_photo_query_scores_the_plain_ensemble_cosine_and_a_packshot_the_weighted_sum():
    rng = np.random.default_rng(0)
    w, layout = 0.8, DescriptorLayout(dim=4, weight=0.8)
    ens, desc = unit_rows(rng.normal(size=(7, 6))), unit_rows(rng.normal(size=(7, 4)))
    gallery = _stored(ens[1:], desc[1:], w)
    query = _stored(ens[:1], desc[:1], w)
    assert np.allclose(np.linalg.norm(gallery, axis=1), 1.0, atol=1e-6)
    photo = query_vectors(query, 0.0, layout) @ gallery.T
    packshot = query_vectors(query, BACKDROP_BORDER_SHARE, layout) @ gallery.T
    for j in range(6):  # the naive per-item formulas
        e, d = float(ens[0] @ ens[j + 1]), float(desc[0] @ desc[j + 1])
        assert np.isclose(photo[0, j], e, atol=1e-5)
        assert np.isclose(packshot[0, j], (1 - w) * e + w * d, atol=1e-5)
    assert query_vectors(query, 0.0, None) is query  # a model without a block: nothing changes


def test_only_a_described_ensemble_has_a_layout():
    import torch

    assert descriptor_layout(torch.nn.Linear(2, 2)) is None


def test_through_a_pca_a_photo_query_keeps_the_plain_ensemble_cosines_and_a_packshot_is_a_unit_row():
    """Projected rows (an index's PCA, float16): a photo query is projected without renormalising."""
    from simclr_watches.retrieval.projection import fit_pca, stored_rows

    rng = np.random.default_rng(1)
    w, layout = 0.9, DescriptorLayout(dim=5, weight=0.9)
    base_e, base_d = rng.normal(size=(6, 12)), rng.normal(size=(6, 5))
    mix = rng.normal(size=(40, 6))  # 40 items in 6 + 6 directions (each block unit on its own): a 12-d PCA keeps them
    ens, desc = unit_rows(mix @ base_e), unit_rows(mix @ base_d)
    items = _stored(ens, desc, w)
    proj = fit_pca(items, 12)
    rows = stored_rows(proj.apply(items)).astype(np.float32)
    q_ens, q_desc = unit_rows(rng.normal(size=(3, 12))), unit_rows(rng.normal(size=(3, 5)))  # off the span
    query = _stored(q_ens, q_desc, w)
    photo = query_vectors(query, 0.0, layout, proj.apply)
    assert np.allclose(photo @ rows.T, q_ens @ ens.T, atol=3e-3)  # float16 rows
    assert np.array_equal(np.argsort(-(photo @ rows.T), 1)[:, :5], np.argsort(-(q_ens @ ens.T), 1)[:, :5])
    unit = unit_rows(photo)  # what renormalising would score: the same order, other values
    assert not np.allclose(unit @ rows.T, q_ens @ ens.T, atol=3e-3)
    packshot = query_vectors(query, BACKDROP_BORDER_SHARE, layout, proj.apply)
    assert np.allclose(np.linalg.norm(packshot, axis=1), 1.0, atol=1e-5)
    assert np.allclose(packshot, proj.apply(query))
