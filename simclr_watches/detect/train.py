"""Training the box head: composites drawn once, the frozen encoder's maps cached once, then the head alone.

The encoder never changes (it is the shipped model's), so each composite goes through it
exactly once; the head then trains for many epochs on the cached maps in seconds per
epoch on a CPU. Box quality is measured on composites of held-aside catalog groups (watches
the head never saw), by the IoU of the best box with the true one.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from simclr_watches.core.config import to_dict
from simclr_watches.core.errors import ImageReadError, SimclrWatchesError
from simclr_watches.core.progress import progress_bar
from simclr_watches.data.images import Photo, scan_images, try_load_image
from simclr_watches.data.mask import photo_mask, white_background_mask
from simclr_watches.data.synth import render_watch, sample_attributes
from simclr_watches.detect.composites import Cutout, CompositeConfig, box_in_square, cutout, dark_background_mask, make_composite
from simclr_watches.detect.config import BoxConfig
from simclr_watches.detect.features import box_backbone, maps
from simclr_watches.detect.head import BoxHead, box_iou, box_loss, decode
from simclr_watches.detect.infer import backbone_record
from simclr_watches.model import Preprocessing

Log = Callable[[str], None]


@dataclass
class Sources:
    """Pictures composites are drawn from.

    Attributes:
        train: watches to train on; held: watches of held-aside groups; objects: backgrounds and distractors.
        counts: how many of each, and where they came from, for the head's description.
    """

    train: list[Cutout]
    held: list[Cutout]
    objects: list[Cutout]
    counts: dict


def catalog_packshots(catalog: Path) -> list[tuple[Path, str]]:
    """(path, group) of the catalog's packshots: a manifest's ``kind = packshot`` rows, or every image of a folder.

    A manifest must have a ``kind`` column, so that on-wrist (``lifestyle``) photos, the
    evaluation's queries, can never be trained on.

    Raises:
        SimclrWatchesError: a manifest without ``kind``, or no packshots.
    """
    from simclr_watches.evaluation.protocols import load_items

    items = load_items(catalog, kind="packshot" if catalog.suffix.lower() == ".csv" else None)
    return [(it.path, it.group) for it in items]


def is_held_aside(group: str, share: float) -> bool:
    """Whether a group is kept out of training: a stable hash of its id, so every run agrees."""
    return zlib.crc32(group.encode("utf-8")) % 1000 < share * 1000


def _unreadable(photo: Photo | ImageReadError, log: Log) -> bool:
    """Whether ``photo`` is an unreadable file's error (logged as ``skipped PATH: REASON``)."""
    if isinstance(photo, ImageReadError):
        log(f"skipped {photo.path}: {photo.reason}")
        return True
    return False


def load_sources(cfg: BoxConfig, log: Log = lambda s: None) -> Sources:
    """The cut-out watches (train and held-aside groups, plus synthetic ones) and objects of a config.

    Packshots whose backdrop cannot be cut away (no white border) are left out, and so are
    unreadable packshots and object photos (each logged, all counted), as ``build-index`` does.

    Raises:
        SimclrWatchesError: no catalog given, or no watch could be cut out for training or for testing.
    """
    d = cfg.data
    if not d.catalog:
        raise SimclrWatchesError("box training needs data.catalog: a manifest CSV with a kind column, or a folder of packshots")
    train, held, skipped, unreadable = [], [], 0, {"packshots": 0, "objects": 0}
    for path, group in catalog_packshots(Path(d.catalog)):
        photo = try_load_image(path, hash=False)
        if _unreadable(photo, log):
            unreadable["packshots"] += 1
            continue
        c = cutout(photo.rgb, photo_mask(photo))
        if c is None:
            skipped += 1
            continue
        (held if is_held_aside(group, d.held_aside) else train).append(c)
    rng = np.random.default_rng(d.synth_seed)
    for i in range(d.synthetic):
        img = render_watch(sample_attributes(rng), size=256, seed=d.synth_seed * 100_003 + i)
        c = cutout(img, white_background_mask(img))
        if c is not None:
            train.append(c)
    objects = []
    if d.objects:
        for path in scan_images(d.objects)[:: d.objects_every]:
            photo = try_load_image(path, hash=False)
            if _unreadable(photo, log):
                unreadable["objects"] += 1
                continue
            c = cutout(photo.rgb, dark_background_mask(photo.rgb))
            if c is not None:
                objects.append(c)
    if not train or not held:
        raise SimclrWatchesError(f"{d.catalog}: no cut-out watches for {'training' if not train else 'testing'} "
                                 f"(data.held_aside = {d.held_aside})")
    counts = {"catalog": d.catalog, "train_watches": len(train) - d.synthetic, "synthetic": d.synthetic,
              "held_aside_watches": len(held), "packshots_without_backdrop": skipped, "objects": len(objects),
              "unreadable_packshots": unreadable["packshots"], "unreadable_objects": unreadable["objects"]}
    log(f"sources: {counts}")
    return Sources(train, held, objects, counts)


def render_set(watches: Sequence[Cutout], objects: list[Cutout], n: int, seed: int, cfg: CompositeConfig,
               pre: Preprocessing, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` composites as encoder input and their boxes.

    Returns:
        images (n, 3, S, S) uint8 padded squares (S = ``pre.size``); boxes (n, 4) float in units of S.
    """
    rng = np.random.default_rng(seed)
    images, boxes = [], []
    with progress_bar("composites", total=n, enabled=progress) as advance:
        for i in range(n):
            img, box = make_composite(watches[i % len(watches)], objects, rng, cfg)
            images.append(pre.to_uint8(img))
            boxes.append(box_in_square(box, *img.size))
            advance(1)
    return torch.stack(images), torch.tensor(boxes, dtype=torch.float32)


@torch.no_grad()
def cache_maps(backbone, pre: Preprocessing, images: torch.Tensor, batch_size: int = 64,
               progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's two input maps of every image, float16: (N, 112, S/16, S/16) and (N, 320, S/32, S/32)."""
    f16s, f32s = [], []
    with progress_bar("encoder maps", total=len(images), enabled=progress) as advance:
        for batch in images.split(batch_size):
            f16, f32 = maps(backbone, pre.normalize(batch))
            f16s.append(f16.half())
            f32s.append(f32.half())
            advance(len(batch))
    return torch.cat(f16s), torch.cat(f32s)


@torch.no_grad()
def evaluate_head(head: BoxHead, f16: torch.Tensor, f32: torch.Tensor, boxes: torch.Tensor,
                  batch_size: int = 256) -> dict[str, float]:
    """Mean IoU of the best box with the true one, and the share with IoU >= 0.5 and >= 0.7."""
    head.eval()
    pred = torch.cat([decode(head(a, b), 1)[0][:, 0] for a, b in zip(f16.split(batch_size), f32.split(batch_size))])
    iou = box_iou(pred, boxes)
    return {"mean_iou": float(iou.mean()), "iou50": float((iou >= 0.5).float().mean()),
            "iou70": float((iou >= 0.7).float().mean()), "n": len(boxes)}


def fit_head(head: BoxHead, f16: torch.Tensor, f32: torch.Tensor, boxes: torch.Tensor, epochs: int, batch_size: int,
             lr: float, weight_decay: float, seed: int, log: Log = lambda s: None) -> list[dict[str, float]]:
    """Trains ``head`` on cached maps with AdamW and a cosine schedule; returns the per-epoch mean losses."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(boxes) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    history = []
    for epoch in range(epochs):
        head.train()
        totals = {"loss": 0.0, "heat": 0.0, "box": 0.0}
        order = torch.randperm(len(boxes), generator=gen)
        for idx in order.split(batch_size):
            loss, parts = box_loss(head(f16[idx], f32[idx]), boxes[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            totals["loss"] += float(loss.detach()) * len(idx)
            for k, v in parts.items():
                totals[k] += v * len(idx)
        history.append({k: v / len(boxes) for k, v in totals.items()})
        log(f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in history[-1].items()))
    return history


def train_box_head(cfg: BoxConfig, progress: bool = True, log: Log = lambda s: None) -> tuple[BoxHead, dict]:
    """Trains a box head as ``cfg`` says.

    Returns:
        the head (eval mode) and its description's ``meta``: config, sources, encoder
        (``{"id", "sha256"}`` of the maps' encoder), input size, per-epoch losses, held-aside IoU (``test``) and seconds spent.

    Raises:
        SimclrWatchesError: bad sources (see :func:`load_sources`), or an encoder that cannot be loaded.
    """
    from simclr_watches.weights import load_model

    t0 = time.perf_counter()
    torch.manual_seed(cfg.train.seed)
    encoder, info = load_model(cfg.model.encoder)
    backbone, pre = box_backbone(encoder), info.preprocessing
    sources = load_sources(cfg, log)
    d = cfg.data
    train_x, train_boxes = render_set(sources.train, sources.objects, d.train, d.seed, cfg.composites, pre, progress)
    test_x, test_boxes = render_set(sources.held, sources.objects, d.test, d.seed + 1, cfg.composites, pre, progress)
    t1 = time.perf_counter()
    train_maps = cache_maps(backbone, pre, train_x, progress=progress)
    test_maps = cache_maps(backbone, pre, test_x, progress=progress)
    t2 = time.perf_counter()
    head = BoxHead(cfg.model.width)
    t = cfg.train
    history = fit_head(head, *train_maps, train_boxes, t.epochs, t.batch_size, t.lr, t.weight_decay, t.seed, log)
    test = evaluate_head(head, *test_maps, test_boxes)
    train_fit = evaluate_head(head, *train_maps, train_boxes)
    log(f"held-aside composites: {test}")
    meta = {"config": to_dict(cfg), "sources": sources.counts, "encoder": backbone_record(info), "input_size": pre.size,
            "history": history, "test": test, "train": train_fit,
            "seconds": {"composites": round(t1 - t0, 1), "maps": round(t2 - t1, 1),
                        "head": round(time.perf_counter() - t2, 1)}}
    return head.eval(), meta


def run_box_training(cfg: BoxConfig, out: Path | str, *, force: bool = False, progress: bool = True,
                     log: Log = lambda s: None) -> dict:
    """Trains a box head and writes it to ``out`` (safetensors) with ``out``'s ``.json`` description.

    The outputs are checked before any work (``force`` replaces only an earlier box head).

    Returns:
        the description written (sha256 and size: what a registry entry needs).
    """
    from simclr_watches.weights.box import check_box_output, save_box_head

    inputs = [p for p in (cfg.data.catalog, cfg.data.objects) if p]
    check_box_output(out, force=force, inputs=inputs)
    head, meta = train_box_head(cfg, progress=progress, log=log)
    return save_box_head(out, head, meta["encoder"], meta["input_size"], meta)
