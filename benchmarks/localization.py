"""Query-side localisation: window layouts and the learnt box compared on catalog-photo, and per-query search latency.

Part 1 runs the `catalog-photo` protocol (gallery = packshots, queries = on-wrist photos) for the
whole-image encoder, without and with the catalog crop, for several window layouts and for the
learnt box (with the crop, as `search` does), reporting Recall@k, MRR and ms per query.
Part 2 times the real search path (`Searcher`, Annoy candidates + exact fusion) one query at a
time, without localisation, with windows and with the learnt box, on a cropped index of the
packshots (the default).

Usage:
    python benchmarks/localization.py ../shared/data/watches-dev/manifest.csv [--model NAME] [--latency-queries 30]
        [--skip-compare] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from simclr_watches.evaluation.encoders import BoxMethod, LocalizedMethod
from simclr_watches.evaluation.method_names import make_method
from simclr_watches.evaluation.protocols import catalog_photo_task
from simclr_watches.evaluation.runner import run_task
from simclr_watches.retrieval.index import write_index
from simclr_watches.retrieval.boxes import BoxSearchConfig
from simclr_watches.retrieval.localize import LocalizeConfig
from simclr_watches.data.mask import CROP_MARGIN
from simclr_watches.retrieval.search import Searcher
from simclr_watches.weights import DEFAULT_MODEL, load_model

LAYOUTS = {
    "default: whole + 0.45 windows, stride 0.7": LocalizeConfig(),
    "whole + 0.4 windows, stride 0.5": LocalizeConfig(scales=(0.4,), stride=0.5),
    "whole + 0.4 windows at 192 px, stride 0.6": LocalizeConfig(scales=(0.4,), stride=0.6, size=192),
    "whole + 0.6/0.4 windows at 160 px, stride 0.6": LocalizeConfig(scales=(0.6, 0.4), stride=0.6, size=160),
}
BOXES = {
    "learnt box, 3 squares + whole (default)": BoxSearchConfig(),
    "learnt box grown 10 % + whole": BoxSearchConfig(squares=(), top_m=1),
    "learnt box, 3 squares + mirrors + whole": BoxSearchConfig(flip=True),
}


def compare(manifest: Path, model: str) -> None:
    task = catalog_photo_task(manifest)
    plain, inner = make_method(model), make_method(f"{model}+crop")
    print(f"catalog-photo: {len(task.queries)} queries, gallery {len(task.gallery)}")
    print("| method | R@1 | R@5 | R@10 | MRR | ms/query |")
    print("| --- | --- | --- | --- | --- | --- |")
    for m in (plain, inner):
        m.embed(task.gallery)  # the gallery is shared; keep its cost out of the per-query times
    methods = [("whole image, no crop, no localisation", plain), ("whole image, catalog crop, no localisation", inner)]
    methods += [(f"crop + {k}", LocalizedMethod(inner, c)) for k, c in LAYOUTS.items()]
    methods += [(f"crop + {k}", BoxMethod(inner, c)) for k, c in BOXES.items()]
    for name, method in methods:
        t0 = time.perf_counter()
        s = run_task(task, method).summary
        ms = (time.perf_counter() - t0) / len(task.queries) * 1000
        print(f"| {name} | {s['R@1']:.3f} | {s['R@5']:.3f} | {s['R@10']:.3f} | {s['MRR']:.3f} | {ms:.0f} |", flush=True)


def latency(manifest: Path, model: str, n: int) -> None:
    task = catalog_photo_task(manifest)
    enc, info = load_model(model)
    gallery = make_method(f"{model}+crop").embed(task.gallery)
    from simclr_watches.retrieval.embed import EmbeddedItem
    from simclr_watches.core.files import sha256_file

    items = [EmbeddedItem(p, sha256_file(p), p.stat().st_size) for p in task.gallery]
    with tempfile.TemporaryDirectory() as tmp:
        write_index(Path(tmp) / "idx", gallery, items, info, info.preprocessing,
                    extra={"catalog_view": {"crop": "foreground", "margin": CROP_MARGIN}})
        print(f"\nsearch latency, one query per call, {n} on-wrist photos, {torch.get_num_threads()} torch threads, "
              f"modes interleaved query by query (load average before: {os.getloadavg()[0]:.1f})")
        modes = {"--no-localize": None, "windows (localised)": LocalizeConfig(),
                 **{f"{k} (localised)": c for k, c in BOXES.items()}}
        searchers = {label: Searcher(Path(tmp) / "idx", checkpoint=model, device="cpu", localize=cfg)
                     for label, cfg in modes.items()}
        times: dict[str, list[float]] = {label: [] for label in modes}
        for s in searchers.values():
            s.search([(str(task.queries[0]), task.queries[0])])  # warm-up
        for q in task.queries[:n]:
            for label, s in searchers.items():
                t0 = time.perf_counter()
                s.search([(str(q), q)], top_k=10)
                times[label].append((time.perf_counter() - t0) * 1000)
        base = statistics.median(times["windows (localised)"])
        print("| search | median ms | p90 ms | median / windows |")
        print("| --- | --- | --- | --- |")
        for label, t in times.items():
            t.sort()
            print(f"| {label} | {statistics.median(t):.0f} | {t[int(0.9 * (len(t) - 1))]:.0f} | "
                  f"{statistics.median(t) / base:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--latency-queries", type=int, default=30)
    ap.add_argument("--skip-compare", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, one per core)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_compare:
        compare(args.manifest, args.model)
    latency(args.manifest, args.model, args.latency_queries)


if __name__ == "__main__":
    main()
