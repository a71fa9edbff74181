"""The decoded catalog as one uint8 tensor, so pretraining never decodes a JPEG twice.

A catalog of a few thousand photos at 256 px is a few hundred MB as uint8: small
enough to live on the GPU, where the augmentations then read it with no host
transfer at all. The size rule deciding where it lives is :func:`cache_placement`.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from simclr_watches.data.images import load_image, scan_images
from simclr_watches.core.errors import ImageReadError, NoReadableImagesError, SimclrWatchesError
from simclr_watches.data.mask import photo_mask
from simclr_watches.model import Preprocessing
from simclr_watches.core.progress import progress_bar

# Bytes per pixel of the cache: three uint8 colour channels and one uint8 mask.
BYTES_PER_PIXEL = 4


@dataclass
class CatalogCache:
    """Catalog photos fitted into padded squares, with their foreground masks.

    Attributes:
        paths: source file of each row.
        images: (N, 3, S, S) uint8, white padding.
        masks: (N, 1, S, S) uint8, 1 on the watch, 0 on background and padding.
        skipped: files that could not be read, with the reason.
    """

    paths: list[Path]
    images: torch.Tensor
    masks: torch.Tensor
    skipped: list[ImageReadError]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def nbytes(self) -> int:
        return self.images.nelement() + self.masks.nelement()

    def shard(self, rank: int, world: int) -> "CatalogCache":
        """Rows ``rank, rank + world, ...``: each DDP process keeps (and augments) only its share.

        Every shard has ``len(self) // world`` rows (up to ``world - 1`` photos are left out),
        because processes with different step counts would wait for each other forever.
        """
        rows = slice(rank, rank + world * (len(self) // world), world)
        return CatalogCache(self.paths[rows], self.images[rows].clone(), self.masks[rows].clone(), self.skipped)

    def to(self, device: torch.device) -> "CatalogCache":
        return CatalogCache(self.paths, self.images.to(device), self.masks.to(device), self.skipped)

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``idx`` on ``device``: images (B, 3, S, S) float in [0, 1], masks (B, 1, S, S) float 0/1."""
        idx = idx.to(self.images.device)
        images, masks = self.images[idx], self.masks[idx]
        if images.device.type == "cpu" and device.type == "cuda":
            # Gathered rows are staged in pinned memory so the copy to the GPU runs asynchronously.
            images, masks = images.pin_memory(), masks.pin_memory()
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        return images.float().div_(255.0), masks.float()


def cache_bytes(n: int, size: int) -> int:
    """Memory of a cache of ``n`` photos at ``size`` px: n * 4 * size^2 bytes (954 at 256 px: 250 MB)."""
    return n * BYTES_PER_PIXEL * size * size


def cache_placement(nbytes: int, device: torch.device, where: str = "auto", gpu_fraction: float = 0.25) -> torch.device:
    """Where the cache lives.

    The rule: on a CUDA device, ``auto`` puts the cache on the GPU when it takes at most
    ``gpu_fraction`` of the GPU's free memory (the rest is for the model, the activations
    of two views and the augmentations), else in host memory, from which each batch is
    gathered into pinned memory and copied asynchronously. ``gpu`` and ``cpu`` force the
    choice. Without CUDA the cache stays in host memory.
    """
    if device.type != "cuda" or where == "cpu":
        return torch.device("cpu")
    if where == "gpu":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    return device if nbytes <= gpu_fraction * free else torch.device("cpu")


def _decode(path: Path, pre: Preprocessing) -> tuple[torch.Tensor, torch.Tensor] | ImageReadError:
    try:
        photo = load_image(path)
    except ImageReadError as e:
        return e
    mask = Image.fromarray(photo_mask(photo).astype(np.uint8) * 255)
    square = ImageOps.pad(mask, (pre.size, pre.size), method=Image.Resampling.BILINEAR, color=0)
    m = torch.from_numpy((np.asarray(square) >= 128).astype(np.uint8))[None]
    return pre.to_uint8(photo.rgb), m


def build_cache(root: Path | str, size: int = 256, workers: int | None = None, progress: bool = True,
                limit: int | None = None) -> CatalogCache:
    """Decodes every image under ``root`` into a cache at ``size`` px (CPU tensors).

    Unreadable files are skipped and listed in ``skipped``. With ``limit``, only that
    many files, spread evenly over the sorted list (a preview wants variety, not one folder).

    Raises:
        SimclrWatchesError: ``root`` is not a folder, or holds no image file.
        NoReadableImagesError: none of its image files could be read (with why, for each).
    """
    paths = scan_images(root)
    if not paths:
        raise SimclrWatchesError(f"{root}: no image files found (looked for .jpg, .png, .webp, ...)")
    if limit is not None and limit < len(paths):
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
    pre = Preprocessing(size=size)
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    kept, images, masks, skipped = [], [], [], []
    with progress_bar("decoding catalog", total=len(paths), enabled=progress) as advance, \
            cf.ThreadPoolExecutor(max_workers=workers) as pool:
        for path, result in zip(paths, pool.map(lambda p: _decode(p, pre), paths)):
            if isinstance(result, ImageReadError):
                skipped.append(result)
            else:
                kept.append(path)
                images.append(result[0])
                masks.append(result[1])
            advance(1)
    if not kept:
        raise NoReadableImagesError(root, skipped)
    return CatalogCache(kept, torch.stack(images), torch.stack(masks), skipped)
