"""The label-free retrieval proxy."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers import OFF
from simclr_watches.train.augment import SimCLRAugment
from simclr_watches.train.catalog_cache import build_cache
from simclr_watches.model import Encoder, default_preprocessing
from simclr_watches.train.proxy import make_proxy_set, retrieval_proxy


@pytest.mark.slow
def test_proxy_is_one_for_untouched_views_and_falls_when_sources_are_wrong(make_catalog):
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    cache = build_cache(make_catalog(6), size=40, progress=False)
    aug = SimCLRAugment(dataclasses.replace(OFF, size=32))
    proxy = make_proxy_set(cache, aug, n=4, seed=1, device=cpu)
    assert proxy.views.shape == (4, 3, 32, 32) and proxy.views.dtype == torch.uint8
    assert len(set(proxy.sources.tolist())) == 4
    again = make_proxy_set(cache, aug, n=4, seed=1, device=cpu)
    assert torch.equal(again.sources, proxy.sources)  # fixed by its own seed

    encoder, pre = Encoder("resnet18").eval(), default_preprocessing("resnet18", 32)
    assert retrieval_proxy(encoder, pre, cache, proxy, cpu) == 1.0
    proxy.sources = (proxy.sources + 1) % len(cache)
    assert retrieval_proxy(encoder, pre, cache, proxy, cpu) == 0.0


def test_proxy_views_do_not_disturb_the_training_rng(make_catalog):
    cache = build_cache(make_catalog(3), size=24, progress=False)
    torch.manual_seed(5)
    make_proxy_set(cache, SimCLRAugment(dataclasses.replace(OFF, size=16, background_p=1.0)), 3, 9, torch.device("cpu"))
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))
