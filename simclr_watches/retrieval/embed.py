"""Batched embedding of image files: decode in threads, run the encoder, L2-normalise."""

from __future__ import annotations

import collections
import concurrent.futures as cf
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from simclr_watches.data.images import PILLOW_ERRORS, Photo, try_load_image
from simclr_watches.core.device import resolve_device
from simclr_watches.core.errors import ImageReadError, SimclrWatchesError
from simclr_watches.model import Encoder, Preprocessing
from simclr_watches.core.progress import progress_bar

# Turns a decoded photo into the picture the encoder should see (e.g. a crop around the watch).
PhotoView = Callable[[Photo], Image.Image]


@dataclass(frozen=True)
class EmbeddedItem:
    path: Path
    sha256: str
    nbytes: int


@dataclass
class Embedded:
    """Embeddings of the readable files, in input order, and the files that were skipped.

    Attributes:
        items: one per embedded file.
        vectors: (N, D) float32, unit L2 norm, row i for items[i].
        skipped: why each unreadable file was left out.
    """

    items: list[EmbeddedItem]
    vectors: np.ndarray
    skipped: list[ImageReadError]


def _prepare(path: Path, pre: Preprocessing, view: PhotoView | None) -> tuple[EmbeddedItem, torch.Tensor] | ImageReadError:
    """The file decoded, viewed (e.g. cropped) and fitted as encoder input, or why it is unusable."""
    photo = try_load_image(path)
    if isinstance(photo, ImageReadError):
        return photo
    try:
        tensor = pre.to_uint8(view(photo) if view else photo.rgb)
    except PILLOW_ERRORS as e:  # the image's content defeated the crop or the resize
        return ImageReadError(path, f"cannot prepare the decoded image ({e or type(e).__name__})")
    return EmbeddedItem(path, photo.sha256, photo.nbytes), tensor


def _prefetched_batches(paths: Sequence[Path], batch_size: int, fn: Callable, workers: int) -> Iterator[list]:
    """Yields decoded batches in order while the next ones decode in worker threads."""
    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque = collections.deque()
        for batch in batches:
            pending.append([pool.submit(fn, p) for p in batch])
            if len(pending) > 2:
                yield [f.result() for f in pending.popleft()]
        while pending:
            yield [f.result() for f in pending.popleft()]


@torch.inference_mode()
def embed_tensors(encoder: Encoder, pre: Preprocessing, images: torch.Tensor, device: torch.device) -> np.ndarray:
    """Embeds a uint8 batch (B, 3, S, S); returns (B, D) float32 unit vectors."""
    x = pre.normalize(images.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = encoder(x)
    return out.float().cpu().numpy()


def embed_paths(
    encoder: Encoder,
    pre: Preprocessing,
    paths: Sequence[Path],
    *,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    view: PhotoView | None = None,
    progress: bool = True,
    label: str = "embedding",
) -> Embedded:
    """Embeds image files in batches; unreadable files are skipped, not fatal."""
    if batch_size < 1:
        raise SimclrWatchesError(f"batch size must be >= 1, got {batch_size}")
    device = resolve_device(str(device))
    encoder = encoder.to(device).eval().to(memory_format=torch.channels_last)
    items: list[EmbeddedItem] = []
    vectors: list[np.ndarray] = []
    skipped: list[ImageReadError] = []
    workers = max(1, min(4, os.cpu_count() or 1))
    with progress_bar(label, total=len(paths), enabled=progress) as advance:
        for batch in _prefetched_batches(paths, batch_size, lambda p: _prepare(p, pre, view), workers):
            good = [r for r in batch if not isinstance(r, ImageReadError)]
            skipped.extend(r for r in batch if isinstance(r, ImageReadError))
            if good:
                items.extend(item for item, _ in good)
                vectors.append(embed_tensors(encoder, pre, torch.stack([t for _, t in good]), device))
            advance(len(batch))
    dim = encoder.dim
    return Embedded(items, np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32), skipped)
