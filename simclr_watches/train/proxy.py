"""A label-free retrieval proxy, logged after every pretraining epoch.

A fixed set of augmented views of catalog photos is held aside; the proxy is the
fraction of them whose nearest catalog embedding is their own source photo. It rises
when the encoder maps a changed-background, re-lit, rotated photo of a watch next to
its catalog shot, and needs no labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from simclr_watches.train.augment import SimCLRAugment
from simclr_watches.train.catalog_cache import CatalogCache
from simclr_watches.retrieval.embed import embed_tensors
from simclr_watches.model import Encoder, Preprocessing


@dataclass
class ProxySet:
    """Held-aside augmented views for the retrieval proxy.

    Attributes:
        views: (M, 3, S, S) uint8, one view of each source photo, made once.
        sources: (M,) row of the source photo in the cache.
    """

    views: torch.Tensor
    sources: torch.Tensor


def make_proxy_set(cache: CatalogCache, augment: SimCLRAugment, n: int, seed: int, device: torch.device,
                   batch_size: int = 256) -> ProxySet:
    """Fixed views for :func:`retrieval_proxy`, made under their own seed so training RNG is untouched."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        sources = torch.randperm(len(cache))[: min(n, len(cache))]
        views = []
        for chunk in sources.split(batch_size):
            images, masks = cache.batch(chunk, device)
            views.append((augment.view(images, masks) * 255 + 0.5).to(torch.uint8))
    return ProxySet(torch.cat(views), sources.to(device))


def retrieval_proxy(encoder: Encoder, preprocessing: Preprocessing, cache: CatalogCache, proxy: ProxySet,
                    device: torch.device, batch_size: int = 256) -> float:
    """Fraction of the proxy views whose nearest catalog photo (cosine) is their source.

    A label-free stand-in for retrieval quality: it rises when the encoder maps a
    changed-background, re-lit, rotated photo of a watch next to its catalog shot.
    """
    was_training = encoder.training
    encoder.eval()
    s = preprocessing.size
    catalog = []
    for chunk in torch.arange(len(cache)).split(batch_size):
        images, _ = cache.batch(chunk, device)
        images = F.interpolate(images, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        catalog.append(torch.from_numpy(embed_tensors(encoder, preprocessing, images.clamp_(0, 1), device)))
    queries = [torch.from_numpy(embed_tensors(encoder, preprocessing, v, device)) for v in proxy.views.split(batch_size)]
    encoder.train(was_training)
    nearest = (torch.cat(queries) @ torch.cat(catalog).T).argmax(1)
    return float((nearest == proxy.sources.cpu()).float().mean())
