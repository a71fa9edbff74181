"""A contact sheet of the learnt box on real photos, to judge it by eye.

Runs the box head of ``search --locate box`` (one encoder pass of each photo's whole view)
on photos and draws the best box in red (the second peak in yellow, with ``--two``), with
the peak's heat under each thumbnail. For watches-dev, the on-wrist photos are the
``lifestyle`` rows of its manifest.

Usage:
    python benchmarks/box_sheet.py ../shared/data/watches-dev/manifest.csv --out runs/box-sheet.png [--n 48] [--cols 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from simclr_watches.core.device import resolve_device
from simclr_watches.data.mask import CROP_MARGIN
from simclr_watches.data.manifest import load_items
from simclr_watches.retrieval.boxes import BoxScorer, BoxSearchConfig, load_finder
from simclr_watches.weights import DEFAULT_MODEL, load_model

THUMB = 160


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--out", type=Path, default=Path("runs/box-sheet.png"))
    ap.add_argument("--n", type=int, default=48, help="photos, spread evenly over the lifestyle rows")
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--two", action="store_true", help="also draw the second heatmap peak")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--head", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    items = load_items(args.manifest, kind="lifestyle")
    paths = [items[i].path for i in np.linspace(0, len(items) - 1, min(args.n, len(items))).round().astype(int)]
    enc, info = load_model(args.model)
    device = resolve_device("cpu")
    cfg = BoxSearchConfig(head=args.head, boxes=2 if args.two else 1)
    scorer = BoxScorer(load_finder(cfg, enc, info, device), info.preprocessing, np.zeros((1, info.dim), np.float32),
                       lambda regions: np.zeros(0, np.int64), cfg, CROP_MARGIN, device)
    rows = (len(paths) + args.cols - 1) // args.cols
    sheet = Image.new("RGB", (args.cols * THUMB, rows * (THUMB + 14)), "white")
    for i, path in enumerate(paths):
        prepared = scorer._prepare(path)
        _, boxes, heat = scorer.locate(prepared)
        img = prepared.photo.copy()
        scale = THUMB / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
        draw = ImageDraw.Draw(img)
        for box, colour in zip(boxes, ("red", "yellow")):
            draw.rectangle([v * scale for v in box], outline=colour, width=2)
        x, y = (i % args.cols) * THUMB, (i // args.cols) * (THUMB + 14)
        sheet.paste(img, (x, y))
        ImageDraw.Draw(sheet).text((x + 2, y + THUMB), f"heat {heat[0]:.2f}", fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"{len(paths)} photos -> {args.out}")


if __name__ == "__main__":
    main()
