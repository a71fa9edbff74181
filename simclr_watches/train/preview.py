"""``augment-preview``: a PNG grid of catalog photos and two augmented views of each, to look at before training."""

from __future__ import annotations

from pathlib import Path

import torch

from simclr_watches.core.atomic import atomic_path
from simclr_watches.core.outputs import PNG, png_info, prepare_output
from simclr_watches.train.augment import SimCLRAugment, preview_grid
from simclr_watches.train.catalog_cache import build_cache
from simclr_watches.train.config import PretrainConfig


def write_augment_preview(catalog: Path | str, out: Path | str, cfg: PretrainConfig, n: int = 8, seed: int = 0,
                          force: bool = False) -> Path:
    """Writes a PNG grid of ``n`` catalog photos with two augmented views each (CPU).

    Args:
        force: replace a PNG that this program wrote earlier.

    Raises:
        SimclrWatchesError: ``out`` may not be written (checked before the catalog is read).
    """
    out = Path(out)
    prepare_output(out, PNG, force=force, inputs=[catalog])
    cache = build_cache(catalog, cfg.data.cache_size, progress=False, limit=n)
    torch.manual_seed(seed)
    grid = preview_grid(cache.images, cache.masks, SimCLRAugment(cfg.augment))
    with atomic_path(out) as tmp:
        grid.save(tmp, format="PNG", pnginfo=png_info())
    return out
