"""The catalog embedded as every index embeds it: its view around the learnt box, and what it needs."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import simclr_watches.retrieval.catalog as catalog_mod
from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.data.images import scan_images
from simclr_watches.model import Preprocessing
from simclr_watches.model.preprocessing import CatalogBox
from simclr_watches.retrieval.catalog import catalog_box_view, embed_catalog
from simclr_watches.weights import load_encoder_file


def test_a_catalog_box_view_crops_the_square_around_the_found_box(monkeypatch):
    class Finder:  # finds the box [0.25, 0.25, 0.5, 0.5] of the padded square, whatever it is shown
        encoder = None

        def __call__(self, x, k):
            return None, torch.tensor([[[0.25, 0.25, 0.5, 0.5]]] * len(x)), torch.ones(len(x), 1)

    pre = Preprocessing(size=32, catalog_box=CatalogBox("h", 2.0, 16))
    seen, real = [], Preprocessing.to_uint8
    monkeypatch.setattr(catalog_mod, "embed_tensors", lambda enc, p, x, dev: seen.append(tuple(x.shape)) or np.ones((len(x), 4)))
    monkeypatch.setattr(Preprocessing, "to_uint8", lambda self, img, size=None: seen.append(img.size) or real(self, img, size))
    view = Image.new("RGB", (200, 200), "white")
    out = catalog_box_view(Finder(), pre, torch.device("cpu"))([view], real(pre, view)[None])
    # The box is 50 px (a quarter of the 200 px view) from (50, 50): its 2x square is 100 px, centred on (75, 75).
    assert seen == [(100, 100), (1, 3, 16, 16)] and out.shape == (1, 4)


def test_a_catalog_box_needs_the_model_description(make_catalog, small_checkpoint):
    enc, info = load_encoder_file(small_checkpoint)
    pre = replace(info.preprocessing, catalog_box=CatalogBox("watches-lite0-v1-box", 1.3, 64))
    with pytest.raises(SimclrWatchesError, match="catalog box view needs its description"):
        embed_catalog(enc, pre, scan_images(make_catalog(1)), None, progress=False)


def test_a_catalog_box_head_is_looked_up_in_the_registry_never_as_a_file(small_checkpoint, tmp_path, monkeypatch):
    from simclr_watches.core.errors import CheckpointError
    from simclr_watches.retrieval.catalog import catalog_finder
    from simclr_watches.weights.box import DEFAULT_BOX

    enc, info = load_encoder_file(small_checkpoint)
    (tmp_path / "head.safetensors").write_bytes(b"not read")
    monkeypatch.chdir(tmp_path)
    described = replace(info, preprocessing=replace(info.preprocessing, catalog_box=CatalogBox("head.safetensors", 1.3, 64)))
    with pytest.raises(CheckpointError, match="catalog_box head 'head.safetensors' is no registered box head"):
        catalog_finder(enc, described, torch.device("cpu"))
    described = replace(info, preprocessing=replace(info.preprocessing, catalog_box=CatalogBox(DEFAULT_BOX, 1.3, 64)))
    with pytest.raises(CheckpointError, match="reads the maps of watches-lite0-v1"):  # registered, but not this encoder's
        catalog_finder(enc, described, torch.device("cpu"))


def test_a_search_s_finder_on_the_same_encoder_and_head_is_taken_as_it_is():
    from types import SimpleNamespace

    from simclr_watches.retrieval.catalog import catalog_finder

    enc = object()
    info = SimpleNamespace(id="m", preprocessing=Preprocessing(size=32, catalog_box=CatalogBox("h", 1.3, 64)))
    loaded = SimpleNamespace(info=SimpleNamespace(id="h"), encoder=enc)
    assert catalog_finder(enc, info, torch.device("cpu"), loaded) is loaded
    assert catalog_finder(enc, SimpleNamespace(id="m", preprocessing=Preprocessing(size=32)), torch.device("cpu"),
                          loaded) is None  # no catalog box: no finder
