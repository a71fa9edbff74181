"""Test tiers and shared fixtures: small generated catalogs (no network, no shared data needed).

Tiers: ``pytest`` runs the fast tier; ``pytest --slow`` adds the tests marked ``slow`` (the
real encoder or registry models, real processes, seconds each); tests marked ``gpu`` are
skipped without CUDA. Helper functions live in ``helpers.py``; fixtures stay here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import draw_watch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run the slow tests (marked slow: real encoder, real processes)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips the slow tests unless ``--slow`` is given, and the GPU tests without CUDA."""
    import torch

    skip_slow = pytest.mark.skip(reason="slow: run with --slow (make test-all)")
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    run_slow, has_cuda = config.getoption("--slow"), torch.cuda.is_available()
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


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


@pytest.fixture
def one_thread():
    """Tiny CPU steps: with several threads on a busy machine, OpenMP waits cost 100x the work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
