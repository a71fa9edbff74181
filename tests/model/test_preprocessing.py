import json

import pytest
import torch
from PIL import Image

from simclr_watches.core.errors import CheckpointError
from simclr_watches.model import Preprocessing, default_preprocessing
from simclr_watches.model.preprocessing import CatalogBox


def test_preprocessing_pads_to_square_on_white():
    pre = Preprocessing(size=32)
    img = Image.new("RGB", (100, 50), (0, 0, 0))
    x = pre.to_uint8(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8
    assert (x[:, 0, :] == 255).all() and (x[:, 16, :] == 0).all()  # top band is padding, middle is image
    norm = pre(img)
    assert norm.shape == (3, 32, 32)
    assert torch.allclose(norm[:, 16, 16], (0 - torch.tensor(pre.mean)) / torch.tensor(pre.std))


def test_preprocessing_round_trips_through_dict():
    pre = default_preprocessing("resnet18", size=128)
    assert Preprocessing.from_dict(pre.to_dict()) == pre


def test_catalog_and_region_sides_default_to_the_model_size_and_travel_only_when_set():
    pre = Preprocessing(size=32)
    assert (pre.catalog_sides, pre.region_side(), pre.region_side(3)) == ((32,), 32, 32)
    assert "catalog_sizes" not in pre.to_dict() and "region_sizes" not in pre.to_dict()  # older descriptions stay as they were
    ms = Preprocessing(size=32, catalog_sizes=[32, 48], region_sizes=[40, 24])
    assert ms.catalog_sides == (32, 48)
    assert [ms.region_side(i) for i in range(4)] == [40, 24, 24, 24]  # the box's i-th square; the last size repeats
    assert ms.to_dict()["catalog_sizes"] == [32, 48] and ms.to_dict()["region_sizes"] == [40, 24]
    assert Preprocessing.from_dict(ms.to_dict()) == ms
    assert Preprocessing.from_dict(pre.to_dict()) == pre


def test_a_description_written_with_one_region_size_still_reads():
    old = {**Preprocessing(size=32, catalog_sizes=[32, 48]).to_dict(), "region_size": 40}
    assert Preprocessing.from_dict(old) == Preprocessing(size=32, catalog_sizes=[32, 48], region_sizes=[40])
    assert Preprocessing.from_dict({**old, "region_size": 0}).region_sizes == ()  # 0: unset
    with pytest.raises(CheckpointError, match="preprocessing.region_size: expected region_sizes or region_size, not both"):
        Preprocessing.from_dict({**old, "region_sizes": [40]})


def test_a_catalog_box_travels_in_the_description_only_when_set():
    box = CatalogBox("watches-lite0-v1-box", 1.3, 224)
    pre = Preprocessing(size=32, catalog_sizes=[32, 48], catalog_box=box)
    assert pre.to_dict()["catalog_box"] == {"head": "watches-lite0-v1-box", "square": 1.3, "size": 224}
    assert Preprocessing.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    assert "catalog_box" not in Preprocessing(size=32).to_dict()  # older descriptions (and their sha256) stay as they were


BOX = {"head": "watches-lite0-v1-box", "square": 1.3, "size": 224}


@pytest.mark.parametrize("box, message", [
    ({**BOX, "square": 9}, r"preprocessing.catalog_box.square: expected a number in \[0.5, 4\], got 9"),
    ({**BOX, "size": 4}, r"preprocessing.catalog_box.size: expected an integer in \[8, 1024\], got 4"),
    ({**BOX, "head": "../x.safetensors"}, r"preprocessing.catalog_box.head: expected a registered box head's name"),
    ({**BOX, "head": ""}, r"preprocessing.catalog_box.head: expected a non-empty string"),
    ({"head": BOX["head"], "square": 1.3}, r"preprocessing.catalog_box.size: missing"),
    ({**BOX, "extra": 1}, r"preprocessing.catalog_box.extra: unknown field"),
    ([1.3, 224], r"preprocessing.catalog_box: expected an object"),
])
def test_a_bad_catalog_box_is_refused_naming_the_field(box, message):
    with pytest.raises(CheckpointError, match=message):
        Preprocessing.from_dict({**Preprocessing(size=32).to_dict(), "catalog_box": box})


@pytest.mark.parametrize("field, value, message", [
    ("catalog_sizes", [100_000], r"preprocessing.catalog_sizes\[0\]: expected an integer in \[8, 1024\], got 100000"),
    ("catalog_sizes", [160, "288"], r"preprocessing.catalog_sizes\[1\]: expected an integer"),
    ("catalog_sizes", 288, r"preprocessing.catalog_sizes: expected a list of at most 4 sizes"),
    ("catalog_sizes", [64] * 5, r"preprocessing.catalog_sizes: expected a list of at most 4 sizes"),
    ("catalog_sizes", [64, 64], r"preprocessing.catalog_sizes: a size is listed twice"),
    ("region_size", 4, r"preprocessing.region_size: expected an integer in \[8, 1024\], got 4"),
    ("region_size", True, r"preprocessing.region_size: expected an integer"),
    ("region_sizes", [224, 4], r"preprocessing.region_sizes\[1\]: expected an integer in \[8, 1024\], got 4"),
    ("region_sizes", 224, r"preprocessing.region_sizes: expected a list of at most 4 sizes"),
    ("region_sizes", [64] * 5, r"preprocessing.region_sizes: expected a list of at most 4 sizes"),
])
def test_a_description_with_a_bad_side_is_refused_naming_the_field(field, value, message):
    d = {**Preprocessing(size=32).to_dict(), field: value}
    with pytest.raises(CheckpointError, match=message):
        Preprocessing.from_dict(d)
