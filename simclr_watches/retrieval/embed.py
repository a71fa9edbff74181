"""Batched embedding of image files: decode in threads, run the encoder, L2-normalise."""

from __future__ import annotations

import collections
import concurrent.futures as cf
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image

from simclr_watches.data.images import PILLOW_ERRORS, Photo, try_load_image
from simclr_watches.core.device import resolve_device
from simclr_watches.core.errors import ImageReadError, SimclrWatchesError
from simclr_watches.model import Encoder, Preprocessing
from simclr_watches.core.progress import progress_bar
from simclr_watches.retrieval.projection import unit_rows

# Turns a decoded photo into the picture the encoder should see (e.g. a crop around the watch).
PhotoView = Callable[[Photo], Image.Image]
# One more view of a batch of photos, from what the encoder saw of each (RGB, at most KEPT_VIEW px a side)
# and their (B, 3, S, S) uint8 inputs at the model's size: (B, D) unit vectors, averaged in
# (e.g. :func:`simclr_watches.retrieval.catalog.catalog_box_view`).
ExtraView = Callable[[list[Image.Image], torch.Tensor], np.ndarray]
KEPT_VIEW = 1024  # the longest side of a view kept for an ExtraView: bounds a batch's memory
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class EmbeddedItem:
    """An embedded file: its path, the sha256 of its bytes (None when not hashed) and its size."""

    path: Path
    sha256: str | None
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


def kept_view(view: Image.Image) -> Image.Image:
    """A copy of ``view`` at most ``KEPT_VIEW`` px a side, as an :data:`ExtraView` sees it."""
    view = view.copy()
    view.thumbnail((KEPT_VIEW, KEPT_VIEW), Image.Resampling.BICUBIC)
    return view


@dataclass
class _Prepared:
    item: EmbeddedItem
    tensors: list[torch.Tensor]  # at each side, then at the model's size when ``kept``
    kept: Image.Image | None  # the view, for an ExtraView


def _prepare(path: Path, pre: Preprocessing, view: PhotoView | None, hash: bool = True,
             sides: Sequence[int] = (), keep: bool = False) -> _Prepared | ImageReadError:
    """The file decoded, viewed (e.g. cropped) and fitted as encoder input at each side, or why it is unusable.

    With ``keep``, the view itself too (at most ``KEPT_VIEW`` px a side) and, last, its input at ``pre.size``.
    """
    photo = try_load_image(path, hash=hash)
    if isinstance(photo, ImageReadError):
        return photo
    tensors = []
    try:
        seen = view(photo) if view else photo.rgb
        for side in (*(sides or (pre.size,)), *((pre.size,) if keep else ())):
            tensors.append(pre.to_uint8(seen, side))
        if keep:
            seen = kept_view(seen)
    except PILLOW_ERRORS as e:  # the image's content defeated the crop or the resize
        return _unpreparable(photo, e)
    return _Prepared(EmbeddedItem(path, photo.sha256, photo.nbytes), tensors, seen if keep else None)


def fit_photo(photo: Photo, pre: Preprocessing, view: PhotoView | None = None,
              side: int | None = None) -> torch.Tensor | ImageReadError:
    """A decoded photo viewed (e.g. cropped) and fitted as encoder input, (3, S, S) uint8 (S = ``side`` or
    ``pre.size``), or why it is unusable."""
    try:
        return pre.to_uint8(view(photo) if view else photo.rgb, side)
    except PILLOW_ERRORS as e:  # the image's content defeated the crop or the resize
        return _unpreparable(photo, e)


def _unpreparable(photo: Photo, e: Exception) -> ImageReadError:
    """Why a decoded photo could not be cropped or resized as encoder input."""
    return ImageReadError(photo.path, f"cannot prepare the decoded image ({e or type(e).__name__})")


def as_catalog(encoder: Encoder, pre: Preprocessing, view: Image.Image, vector: np.ndarray,
               device: torch.device, box: ExtraView | None = None) -> np.ndarray:
    """A catalog-style query described as catalog photos are: its view at each of ``pre.catalog_sides`` and, with
    ``box``, around its learnt box (:func:`embed_catalog`), averaged.

    Args:
        view: the query as the encoder sees it (cropped as the catalog was), RGB.
        vector: (D,) its unit embedding at ``pre.size`` (already computed by the caller).

    Returns:
        (D,) unit vector; ``vector`` itself when the catalog is seen at ``pre.size`` alone.
    """
    sides = pre.catalog_sides
    if sides == (pre.size,) and box is None:
        return vector
    vectors = [vector] if pre.size in sides else []
    vectors += [embed_tensors(encoder, pre, pre.to_uint8(view, side)[None], device)[0] for side in sides if side != pre.size]
    if box is not None:
        vectors.append(box([kept_view(view)], pre.to_uint8(view)[None])[0])
    return unit_rows(np.mean(vectors, axis=0)[None])[0]


def prefetched(fn: Callable[[T], R], items: Iterable[T], *, workers: int = 1, ahead: int = 1) -> Iterator[R]:
    """Yields ``fn(item)`` for each item, in order, while up to ``ahead`` later items are computed in worker threads.

    Decoding the next images while the encoder runs on the current ones keeps both busy
    (Pillow's decoders and resizes release the GIL). Stopping early waits for the items in flight.
    """
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque[cf.Future[R]] = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items, the last one shorter."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def ready_encoder(encoder: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``encoder`` on ``device``, in eval mode, its weights channels-last: what :func:`embed_tensors` wants.

    Moves and converts only what is not so already: ``Module.to`` walks every tensor even when
    nothing changes, about 10 ms for the default ensemble, which a search paid per query.
    """
    params = list(encoder.parameters())
    ready = not encoder.training and all(
        p.device == device and (p.dim() != 4 or p.is_contiguous(memory_format=torch.channels_last)) for p in params)
    return encoder if ready else encoder.to(device).eval().to(memory_format=torch.channels_last)


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
    hash: bool = True,
    sides: Sequence[int] = (),
    extra: ExtraView | None = None,
) -> Embedded:
    """Embeds image files in batches; unreadable files are skipped, not fatal.

    The next two batches decode in worker threads while the encoder runs on the current one.

    Args:
        view: what the encoder sees of each decoded photo (e.g. a crop); default the whole image.
        hash: record each file's sha256 in ``items`` (an index needs it, queries do not).
        sides: embed each photo at each of these sides and average its unit vectors (then
            normalise): a multi-scale description, as a catalog's ``pre.catalog_sides``;
            empty: ``pre.size`` alone.
        extra: one more view of each photo, averaged in as the sides are.
    """
    if batch_size < 1:
        raise SimclrWatchesError(f"batch size must be >= 1, got {batch_size}")
    device = resolve_device(str(device))
    encoder = ready_encoder(encoder, device)
    items: list[EmbeddedItem] = []
    vectors: list[np.ndarray] = []
    skipped: list[ImageReadError] = []
    workers = max(1, min(4, os.cpu_count() or 1))
    with progress_bar(label, total=len(paths), enabled=progress) as advance:
        prepared = prefetched(lambda p: _prepare(p, pre, view, hash, sides, keep=extra is not None), paths,
                              workers=workers, ahead=2 * batch_size)
        n = len(sides or (pre.size,))
        for batch in _batched(prepared, batch_size):
            good = [r for r in batch if not isinstance(r, ImageReadError)]
            skipped.extend(r for r in batch if isinstance(r, ImageReadError))
            if good:
                items.extend(r.item for r in good)
                scales = [embed_tensors(encoder, pre, torch.stack([r.tensors[k] for r in good]), device) for k in range(n)]
                if extra is not None:
                    scales.append(extra([r.kept for r in good], torch.stack([r.tensors[n] for r in good])))
                vectors.append(scales[0] if len(scales) == 1 else unit_rows(np.mean(scales, axis=0)))
            advance(len(batch))
    dim = encoder.dim
    return Embedded(items, np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32), skipped)
