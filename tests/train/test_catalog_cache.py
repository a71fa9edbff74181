"""The decoded catalog cache: contents, masks, sharding and the placement rule."""

from __future__ import annotations

import pytest
import torch

from simclr_watches.train.catalog_cache import build_cache, cache_bytes, cache_placement
from simclr_watches.core.errors import SimclrWatchesError


def test_cache_holds_padded_squares_and_masks(make_catalog):
    catalog = make_catalog(5)
    (catalog / "broken.png").write_bytes(b"\x89PNG not really")
    cache = build_cache(catalog, size=40, progress=False)
    assert len(cache) == 5 and [p.name for p in cache.paths] == [f"w{i:03d}.png" for i in range(5)]
    assert [e.path.name for e in cache.skipped] == ["broken.png"]
    assert cache.images.shape == (5, 3, 40, 40) and cache.images.dtype == torch.uint8
    assert cache.masks.shape == (5, 1, 40, 40) and set(cache.masks.unique().tolist()) == {0, 1}
    assert (cache.masks[:, 0, 20, 20] == 1).all()  # the dial
    assert (cache.masks[:, 0, 0, 0] == 0).all() and (cache.images[:, :, 0, 0] == 255).all()
    assert cache.nbytes == cache_bytes(5, 40) == 5 * 4 * 40 * 40

    images, masks = cache.batch(torch.tensor([4, 0]), torch.device("cpu"))
    assert images.dtype == torch.float32 and images.max() <= 1 and torch.equal(images[1] * 255, cache.images[0].float())
    assert masks.shape == (2, 1, 40, 40)


def test_shards_split_the_catalog(make_catalog):
    cache = build_cache(make_catalog(5), size=16, progress=False)
    a, b = cache.shard(0, 2), cache.shard(1, 2)
    assert [p.name for p in a.paths] == ["w000.png", "w002.png"]  # equal shards: w004 is left out
    assert torch.equal(b.images, cache.images[1::2])
    assert len(cache.shard(0, 1)) == 5


def test_limit_spreads_over_the_catalog(make_catalog):
    cache = build_cache(make_catalog(9), size=16, progress=False, limit=3)
    assert [p.name for p in cache.paths] == ["w000.png", "w004.png", "w008.png"]


def test_placement_without_cuda_is_host_memory():
    assert cache_placement(10**12, torch.device("cpu"), "gpu") == torch.device("cpu")


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(SimclrWatchesError, match="no image files"):
        build_cache(tmp_path, progress=False)


@pytest.mark.gpu
def test_placement_rule_and_host_to_gpu_batches(make_catalog):
    gpu = torch.device("cuda")
    assert cache_placement(1 << 20, gpu).type == "cuda"
    assert cache_placement(1 << 50, gpu) == torch.device("cpu")
    cache = build_cache(make_catalog(3), size=16, progress=False)
    images, masks = cache.batch(torch.tensor([2, 1]), gpu)
    assert images.is_cuda and torch.equal((images[0] * 255).round().byte().cpu(), cache.images[2])
