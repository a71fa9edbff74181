"""A catalog photo embedded as every index embeds it: its crop at each catalog side, and around its learnt box.

What ``build-index``, its shards, ``add``, ``--update`` and ``evaluate``'s galleries call, so that
every catalog vector is made the same way (docs/INDEX_FORMAT.md, ``preprocessing``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from simclr_watches.core.device import resolve_device
from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.data.mask import catalog_view
from simclr_watches.model import Encoder, Preprocessing
from simclr_watches.detect.composites import box_from_square, square
from simclr_watches.detect.infer import BoxFinder
from simclr_watches.retrieval.embed import Embedded, ExtraView, embed_paths, embed_tensors
from simclr_watches.weights.box import load_catalog_box_head


def embed_catalog(encoder: Encoder, pre: Preprocessing, paths: Sequence[Path], margin: float | None,
                  model: Any = None, **kwargs) -> Embedded:
    """Catalog photos embedded as every index embeds them (``build-index``, shards, ``add``, evaluate's gallery).

    Each photo is cut around the watch with ``margin`` (None: whole, :func:`simclr_watches.data.mask.catalog_view`)
    and embedded at each of ``pre.catalog_sides``, its unit vectors averaged, with its view around its learnt
    box when the model has a ``pre.catalog_box`` (:func:`catalog_box_view`);
    ``kwargs`` go to :func:`embed_paths`.

    Args:
        model: the encoder's ModelInfo, which a catalog box view needs (its box head must read this encoder's maps).

    Raises:
        SimclrWatchesError: a catalog box and no ``model``.
        CheckpointError: the catalog box's head cannot be loaded or does not fit the encoder.
    """
    box = None
    if pre.catalog_box is not None:
        if model is None:
            raise SimclrWatchesError("a model with a catalog box view needs its description to embed a catalog")
        device = resolve_device(str(kwargs.get("device", "cpu")))
        box = catalog_box_view(catalog_finder(encoder, model, device), pre, device)
    return embed_paths(encoder, pre, paths, view=catalog_view(margin), sides=pre.catalog_sides, extra=box, **kwargs)


def catalog_finder(encoder: torch.nn.Module, model_info, device: torch.device,
                   loaded: BoxFinder | None = None) -> BoxFinder | None:
    """The box head a model's catalog box view needs (``preprocessing.catalog_box.head``), on its encoder; None without one.

    The head is looked up in the registry only (sha256-verified), never as a file named by a description;
    ``loaded``, a finder on the same encoder already holding that head (a search's), is taken as it is.

    Raises:
        CheckpointError: the head is not a registered box head, is missing, fails its sha256 check or reads
            another encoder's maps.
    """
    box = model_info.preprocessing.catalog_box
    if box is None:
        return None
    if loaded is not None and loaded.info.id == box.head and loaded.encoder is encoder:
        return loaded
    head, info = load_catalog_box_head(box.head, model_info.id)
    return BoxFinder(encoder, model_info, head, info).to(device)


def catalog_box_view(finder: BoxFinder | None, pre: Preprocessing, device: torch.device) -> ExtraView | None:
    """A catalog photo's view around its learnt box (:class:`~simclr_watches.model.preprocessing.CatalogBox`), as
    :func:`~simclr_watches.retrieval.catalog.embed_catalog` averages it in; None without a finder (no catalog box)."""
    if finder is None:
        return None
    box = pre.catalog_box

    def view(views: list[Image.Image], inputs: torch.Tensor) -> np.ndarray:
        x = pre.normalize(inputs.to(device)).contiguous(memory_format=torch.channels_last)
        _, found, _ = finder(x, 1)
        crops = [pre.to_uint8(v.crop(square(box_from_square(b, *v.size), box.square, *v.size)), box.size)
                 for v, b in zip(views, found[:, 0].cpu().numpy())]
        return embed_tensors(finder.encoder, pre, torch.stack(crops), device)

    return view
