"""At which sides to describe the catalog and a query's regions: real and simulated photos, one table.

The default search finds the watch with the learnt box on the whole photo (at the model's 160 px),
then scores squares around the box against the catalog. This script fixes those boxes (found once,
by the default box pass) and varies only the sides: the catalog embedded at one side or averaged
over two (``catalog_sizes``), the squares at one side (``region_sizes``), two squares (1, 1.3 x the
box) or three (+ 1.7); and, with ``--mixed``, two squares each at its own side (``region_sizes``
of two: the box's square at the first side, the wider one at the second); with ``--box``, the catalog
also averaged with squares around its own learnt box (found in its crop at 160 px, as ``catalog_box``
does; each square at 224 px), e.g. ``160+288+box1.0``; with ``--degrade medium``, the real on-wrist photos
also taken again by the simulator's worse camera alone (light, cast, blur, noise, JPEG at that
severity; :func:`simclr_watches.data.simulate.camera`), their scenes unchanged: is what the
simulated photos prefer their scenes or their camera? Scores are exact (no PCA, no forest) with the plain ensemble
``watches-lite0-v1-ens`` (photo queries are scored without the descriptor block anyway), fused
as search fuses them: max(whole view, mean of the squares).

Tasks: watches-dev ``catalog-photo`` (158 real on-wrist photos against the 793 packshots) and
``photo`` medium and hard (374 simulated photos each against all 954 images), as ``evaluate``.

Usage:
    python benchmarks/catalog_scales.py ../shared/data/watches-dev [--catalog 160,224,288] [--regions 160,224]
        [--mixed] [--box 1,1.3] [--degrade medium,hard] [--out runs/catalog-scales]
"""

from __future__ import annotations

import argparse
import itertools
import time
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from simclr_watches.data.images import try_load_image
from simclr_watches.data.simulate import SEVERITIES, degrade_file
from simclr_watches.data.mask import CROP_MARGIN, catalog_view, crop_to_foreground
from simclr_watches.evaluation.method_names import make_method
from simclr_watches.evaluation.metrics import score_rankings, summarize
from simclr_watches.evaluation.protocols import build_tasks
from simclr_watches.retrieval.boxes import BoxSearchConfig, box_regions
from simclr_watches.model.preprocessing import CatalogBox
from simclr_watches.retrieval.catalog import catalog_box_view
from simclr_watches.retrieval.embed import embed_paths, embed_tensors, kept_view
from simclr_watches.retrieval.projection import unit_rows

SQUARES = {"2 squares": (1.0, 1.3), "3 squares": (1.0, 1.3, 1.7)}


def regions(scorer, paths, sides):
    """Per query: the whole view at the model's size, and the 3 squares around its box at each side."""
    whole, squares = [], {s: [] for s in sides}
    cfg = BoxSearchConfig(squares=SQUARES["3 squares"])
    for p in paths:
        prep = scorer._prepare(p)
        v, boxes, _ = scorer.locate(prep)
        whole.append(v)
        w, h = prep.photo.size
        crops = [prep.photo.crop(r) for r in box_regions(tuple(boxes[0]), cfg, w, h)]
        for s in sides:
            squares[s].append(embed_tensors(scorer.encoder, scorer.pre, torch.stack([scorer.pre.to_uint8(c, s) for c in crops]),
                                            scorer.device))
    return np.stack(whole), {s: np.stack(v) for s, v in squares.items()}


def catalog_boxes(scorer, paths, squares, side=224):
    """{square: (N, D)}: each catalog photo's view around its learnt box, as ``catalog_box = {square, size = side}``
    embeds it (:func:`~simclr_watches.retrieval.catalog.catalog_box_view`)."""
    views = {q: catalog_box_view(scorer.finder, replace(scorer.pre, catalog_box=CatalogBox(scorer.finder.info.id, q, side)),
                                 scorer.device) for q in squares}
    out = {q: [] for q in squares}
    for p in paths:
        view = crop_to_foreground(try_load_image(p, hash=False), CROP_MARGIN)
        kept, inputs = [kept_view(view)], scorer.pre.to_uint8(view)[None]
        for q, embed in views.items():
            out[q].append(embed(kept, inputs)[0])
    return {q: np.stack(v) for q, v in out.items()}


def degraded(task, severity, out):
    """``task`` with its query photos taken again by the simulator's camera at ``severity`` (written under ``out``)."""
    paths = [degrade_file(p, out / severity / f"{i:05d}.jpg", (0, zlib.crc32(p.relative_to(task.root).as_posix().encode())),
                          severity) for i, p in enumerate(task.queries)]  # keyed by path, as the photo protocol's scenes
    return replace(task, name=f"{task.name}/{severity} camera", queries=paths)


def fused(whole, squares, gallery, n):
    """max(whole view, mean of the first n squares) against every gallery row."""
    return np.maximum(whole @ gallery.T, np.einsum("qrd,gd->qg", squares[:, :n], gallery) / n)


def mixed(squares, first, second):
    """(Q, 2, D): each query's box square (1 x) seen at side ``first``, its 1.3 square at ``second``."""
    return np.stack([squares[first][:, 0], squares[second][:, 1]], axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="watches-dev: its manifest.csv and images/")
    ap.add_argument("--catalog", default="160,224,288", help="catalog sides to embed at (pairs of them are averaged too)")
    ap.add_argument("--regions", default="160,224", help="sides of the squares around the box")
    ap.add_argument("--mixed", action="store_true", help="also the two squares at two sides of --regions, both orders")
    ap.add_argument("--box", default="", help="squares around the catalog's learnt box (e.g. 1,1.3) averaged with 160+288 too")
    ap.add_argument("--degrade", default="", help="also the real photos through the simulator's camera at these severities")
    ap.add_argument("--out", type=Path, default=Path("runs/catalog-scales"), help="simulated photos go here")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cat_sides = [int(v) for v in args.catalog.split(",")]
    reg_sides = [int(v) for v in args.regions.split(",")]
    if args.box and not {160, 288} <= set(cat_sides):
        ap.error("--box averages the boxes with the 160 and 288 px views: --catalog must hold both")
    if not set(filter(None, args.degrade.split(","))) <= set(SEVERITIES):
        ap.error(f"--degrade takes severities among {', '.join(SEVERITIES)}")
    tasks = build_tasks("catalog-photo", args.data / "manifest.csv") + \
        build_tasks("photo", args.data / "images", severities=("medium", "hard"), cache_dir=args.out)
    tasks[1:1] = [degraded(tasks[0], s, args.out / "camera") for s in args.degrade.split(",") if s]
    method = make_method("watches-lite0-v1-ens+crop+box")
    scorer = method.scorer(method.embed_gallery(tasks[0].gallery[:2]))
    enc, pre = method.inner.load()
    t0 = time.perf_counter()
    results, galleries = {}, {}
    with torch.inference_mode():
        for t in tasks:
            if tuple(t.gallery) not in galleries:  # the photo severities share one gallery
                gal = {s: embed_paths(enc, pre, t.gallery, progress=False, view=catalog_view(CROP_MARGIN), hash=False,
                                      sides=(s,)).vectors for s in cat_sides}
                for a, b in itertools.combinations(cat_sides, 2):
                    gal[f"{a}+{b}"] = unit_rows(gal[a] + gal[b])  # what catalog_sizes = [a, b] stores
                if args.box:
                    boxed = catalog_boxes(scorer, t.gallery, [float(q) for q in args.box.split(",")])
                    for q, rows in boxed.items():  # what catalog_box = {square = q, size = 224} adds to 160 + 288
                        gal[f"160+288+box{q}"] = unit_rows(gal[160] + gal[288] + rows)
                    gal["160+288+box" + "+box".join(map(str, boxed))] = unit_rows(gal[160] + gal[288] + sum(boxed.values()))
                galleries[tuple(t.gallery)] = gal
            gal = galleries[tuple(t.gallery)]
            whole, squares = regions(scorer, t.queries, reg_sides)
            for (g, rows), r, (sq, n) in itertools.product(gal.items(), reg_sides, [(k, len(v)) for k, v in SQUARES.items()]):
                m = summarize(score_rankings(fused(whole, squares[r], rows, n), t.relevant, t.ignore))
                results.setdefault((str(g), r, sq), {})[t.name] = m
            pairs = itertools.permutations(reg_sides, 2) if args.mixed else ()
            for (g, rows), (a, b) in itertools.product(gal.items(), list(pairs)):
                m = summarize(score_rankings(fused(whole, mixed(squares, a, b), rows, 2), t.relevant, t.ignore))
                results.setdefault((str(g), f"{a} + {b}", "2 squares"), {})[t.name] = m
    print(f"({time.perf_counter() - t0:.0f} s) catalog side(s) | squares' side | squares | "
          + " | ".join(f"{t.name} R@1 / R@10" for t in tasks))
    print("| catalog | regions | squares | " + " | ".join(t.name for t in tasks) + " |")
    print("|---|---|---|" + "---|" * len(tasks))
    for (g, r, sq), by_task in results.items():
        cells = " | ".join(f"{by_task[t.name]['R@1']:.3f} / {by_task[t.name]['R@10']:.3f}" for t in tasks)
        print(f"| {g} | {r} | {sq} | {cells} |")


if __name__ == "__main__":
    main()
