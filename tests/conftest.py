"""Shared fixtures: small generated catalogs (no network, no shared data needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw


def draw_watch(seed: int, size: int = 96) -> Image.Image:
    """A crude front-facing 'watch' on white: coloured case and dial, strap, two hands.

    Different seeds give clearly different colours and shapes, so a test catalog has
    distinct items that the ImageNet encoder can tell apart.
    """
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    c = size // 2
    strap = tuple(int(v) for v in rng.integers(0, 200, 3))
    case = tuple(int(v) for v in rng.integers(40, 230, 3))
    dial = tuple(int(v) for v in rng.integers(0, 255, 3))
    w = int(size * rng.uniform(0.18, 0.3))
    d.rectangle([c - w // 2, 0, c + w // 2, size], fill=strap)
    r = int(size * rng.uniform(0.28, 0.38))
    box = [c - r, c - r, c + r, c + r]
    (d.ellipse if seed % 2 else d.rounded_rectangle)(box, fill=case)
    ri = int(r * 0.8)
    d.ellipse([c - ri, c - ri, c + ri, c + ri], fill=dial)
    for ang, length in ((rng.uniform(0, 2 * math.pi), 0.7), (rng.uniform(0, 2 * math.pi), 0.5)):
        d.line([c, c, c + ri * length * math.cos(ang), c + ri * length * math.sin(ang)], fill=(20, 20, 20), width=3)
    return img


@pytest.fixture
def make_catalog(tmp_path: Path):
    """Returns ``make(n, subdir="catalog", ext="png") -> folder`` writing n generated watches."""

    def make(n: int = 6, subdir: str = "catalog", ext: str = "png") -> Path:
        root = tmp_path / subdir
        root.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            draw_watch(i).save(root / f"w{i:03d}.{ext}")
        return root

    return make


@pytest.fixture(scope="session")
def imagenet_model():
    """The ImageNet-initialised EfficientNet-Lite0 encoder and its ModelInfo (loaded once)."""
    from simclr_watches.weights import IMAGENET_LITE0, load_model

    return load_model(IMAGENET_LITE0)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory) -> Path:
    """A random-init ResNet-18 checkpoint at 64 px: fast, and its embeddings still tell images apart."""
    import torch

    from simclr_watches.model import Preprocessing
    from simclr_watches.weights import init_encoder, save_encoder

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "small.safetensors"
    return save_encoder(path, init_encoder("resnet18", "random"), Preprocessing(size=64))
