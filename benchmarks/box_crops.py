"""Which crops around the learnt box to embed: a sweep on catalog-photo with exact scoring.

Each on-wrist photo is located once (the box head of `search --locate box`); crops around the
box (grown by a margin, or squares of several sides centred on it) and their mirror images are
embedded once; every fusion rule is then scored exactly against the whole gallery (no Annoy
candidates), so the sweep costs one embedding per crop. The chosen rule is then confirmed with
`simclr-watches evaluate` (Annoy candidates, as `search` runs).

Usage:
    python benchmarks/box_crops.py ../shared/data/watches-dev/manifest.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import ImageOps

from simclr_watches.core.device import resolve_device
from simclr_watches.data.mask import CROP_MARGIN
from simclr_watches.evaluation.method_names import make_method
from simclr_watches.evaluation.protocols import catalog_photo_task
from simclr_watches.retrieval.boxes import BoxScorer, BoxSearchConfig, grow, load_finder, square
from simclr_watches.retrieval.embed import embed_tensors
from simclr_watches.weights import DEFAULT_MODEL, load_model

CROPS = {"grown 0": ("grow", 0.0), "grown 0.1": ("grow", 0.1), "grown 0.25": ("grow", 0.25), "grown 0.5": ("grow", 0.5),
         "square 0.7": ("square", 0.7), "square 1": ("square", 1.0), "square 1.3": ("square", 1.3), "square 1.7": ("square", 1.7)}
SETS = {"grown 0.1/0.25/0.5": ["grown 0.1", "grown 0.25", "grown 0.5"],
        "squares 1/1.3/1.7": ["square 1", "square 1.3", "square 1.7"],
        "squares 0.7/1/1.3/1.7": ["square 0.7", "square 1", "square 1.3", "square 1.7"],
        "grown 0 + grown 0.25 + square 1.3": ["grown 0", "grown 0.25", "square 1.3"]}


def recall(sims: list[np.ndarray], relevant: np.ndarray, ignore: np.ndarray, fuse) -> tuple[float, float]:
    """R@1 and R@10 of a fusion rule over the queries with a relevant item."""
    hits1 = hits10 = n = 0
    for q, s in enumerate(sims):
        if not relevant[q].any():
            continue
        score = fuse(s).astype(np.float64)
        score[ignore[q]] = -np.inf
        first = np.nonzero(relevant[q][np.argsort(-score, kind="stable")])[0][0]
        n, hits1, hits10 = n + 1, hits1 + (first < 1), hits10 + (first < 10)
    return hits1 / n, hits10 / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    args = ap.parse_args()
    task = catalog_photo_task(args.manifest)
    gallery = make_method(f"{args.model}+crop").embed(task.gallery)
    enc, info = load_model(args.model)
    pre, device, cfg = info.preprocessing, resolve_device("cpu"), BoxSearchConfig()
    scorer = BoxScorer(load_finder(cfg, enc, info, device), pre, gallery, None, cfg, CROP_MARGIN, device)
    sims = []  # per query: (1 + 2 * len(CROPS), G): whole view, each crop, each crop mirrored
    for path in task.queries:
        prepared = scorer._prepare(path)
        whole, boxes, _ = scorer.locate(prepared)
        w, h = prepared.photo.size
        box = tuple(boxes[0])
        regions = [grow(box, v, w, h) if kind == "grow" else square(box, v, w, h) for kind, v in CROPS.values()]
        images = [pre.to_uint8(prepared.photo.crop(r)) for r in regions]
        images += [pre.to_uint8(ImageOps.mirror(prepared.photo.crop(r))) for r in regions]
        sims.append(np.concatenate([whole[None], embed_tensors(enc, pre, torch.stack(images), device)]) @ gallery.T)
    row = {k: 1 + i for i, k in enumerate(CROPS)}
    flip = {k: 1 + len(CROPS) + i for i, k in enumerate(CROPS)}
    print(f"catalog-photo, {len(task.queries)} queries, exact scoring; R@1 / R@10")
    print("| regions | alone | max with whole | crop + mirror, max with whole |")
    print("| --- | --- | --- | --- |")
    print(f"| whole view | {'%.3f / %.3f' % recall(sims, task.relevant, task.ignore, lambda s: s[0])} | | |")
    for k in CROPS:
        cells = [recall(sims, task.relevant, task.ignore, f) for f in (
            lambda s, k=k: s[row[k]], lambda s, k=k: np.maximum(s[0], s[row[k]]),
            lambda s, k=k: np.maximum(s[0], (s[row[k]] + s[flip[k]]) / 2))]
        print(f"| {k} | " + " | ".join("%.3f / %.3f" % c for c in cells) + " |")
    print("\n| region set, max with whole | top 1 | top 2 | mean of all | mean of all + mirrors |")
    print("| --- | --- | --- | --- | --- |")
    for name, keys in SETS.items():
        top = [recall(sims, task.relevant, task.ignore,
                      lambda s, m=m: np.maximum(s[0], np.sort(s[[row[k] for k in keys]], 0)[-m:].mean(0))) for m in (1, 2)]
        mean = recall(sims, task.relevant, task.ignore, lambda s: np.maximum(s[0], s[[row[k] for k in keys]].mean(0)))
        both = recall(sims, task.relevant, task.ignore,
                      lambda s: np.maximum(s[0], s[[row[k] for k in keys] + [flip[k] for k in keys]].mean(0)))
        print(f"| {name} | " + " | ".join("%.3f / %.3f" % c for c in (*top, mean, both)) + " |")


if __name__ == "__main__":
    main()
