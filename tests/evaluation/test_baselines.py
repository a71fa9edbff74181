"""Retrieval methods: built-in baselines, encoders, localisation and ensembles by name."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import catalog_manifest, draw_watch, groups_folder
from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.evaluation.encoders import LocalizedMethod
from simclr_watches.evaluation.method_names import make_method, parse_methods
from simclr_watches.evaluation.protocols import catalog_photo_task


@pytest.mark.slow
def test_random_encoder_is_seeded(tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(2)]
    for i, p in enumerate(paths):
        draw_watch(i, 48).save(p)
    a = make_method("random", seed=1).embed(paths)
    assert np.array_equal(a, make_method("random", seed=1).embed(paths))
    assert not np.allclose(a, make_method("random", seed=2).embed(paths))


def test_unknown_method_is_a_clear_error():
    with pytest.raises(SimclrWatchesError, match="unknown method 'sift'"):
        parse_methods("hist,sift")


@pytest.mark.slow
def test_localized_method_wraps_an_encoder(tmp_path, small_checkpoint):
    manifest = catalog_manifest(tmp_path / "data")
    task = catalog_photo_task(manifest)
    whole = make_method(str(small_checkpoint))
    loc = make_method(f"{small_checkpoint}+loc")
    assert loc.name.endswith("+loc")
    gallery = loc.embed_gallery(task.gallery)
    s_loc = loc.score_queries(task.queries, gallery)
    s_whole = whole.score_queries(task.queries, whole.embed_gallery(task.gallery))
    assert s_loc.shape == (len(task.queries), len(task.gallery))
    # The whole image is one of the regions, so fusion never scores below it.
    assert (s_loc >= s_whole - 1e-5).all()
    # A gallery image as its own query scores 1 through its whole-image region.
    assert loc.score_queries(task.gallery[:1], gallery)[0, 0] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(SimclrWatchesError, match=r"hist\+loc: localisation \(\+loc\) needs an encoder"):
        make_method("hist+loc")


@pytest.mark.slow
def test_an_ensemble_of_checkpoints_is_a_method(tmp_path, small_checkpoint):
    root = groups_folder(tmp_path / "data")
    paths = sorted(root.rglob("*.png"))[:3]
    single = make_method(str(small_checkpoint)).embed(paths)
    ens = make_method(f"{small_checkpoint}+{small_checkpoint}+crop+loc")
    assert isinstance(ens, LocalizedMethod) and ens.inner.crop
    # Two equal members: each embedding is the member's, twice, over sqrt(2).
    pair = make_method(f"{small_checkpoint}+{small_checkpoint}").embed(paths)
    assert np.allclose(pair, np.concatenate([single, single], 1) / np.sqrt(2), atol=1e-5)
