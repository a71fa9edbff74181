"""Query-side localisation: window layouts and the learnt box compared on catalog-photo, and per-query search latency.

Part 1 runs the `catalog-photo` protocol (gallery = packshots, queries = on-wrist photos) for the
whole-image encoder, without and with the catalog crop, for several window layouts and for the
learnt box (with the crop, as `search` does), reporting Recall@k, MRR and ms per query.
Part 2 times the real search path (`Searcher`, Annoy candidates + exact fusion) one query at a
time, without localisation, with windows and with the learnt box, on a cropped index of the
packshots (the default).
Part 2b (``--alone``) times the default search as a user or the service runs it: one search model
per process, nothing else in it (part 2 keeps every mode's model in one process, which shares the
CPU caches between five models); ``--rounds`` fresh warm worker processes, one after the other,
each answering the same photos; the figure is the median of the processes' medians.
Part 3 (``--baseline DIR``, another checkout, e.g. ``git worktree add --detach /tmp/before main``)
times the default search of this checkout against the baseline's on the same index: each side is
a warm worker process (this script's ``--worker`` mode, run with the side's code on PYTHONPATH),
fed the same photo in turn, query by query, so that the machine's load hits both alike; the
median of the per-query ratios is the figure to trust on a shared machine.

Usage:
    python benchmarks/localization.py ../shared/data/watches-dev/manifest.csv [--model NAME] [--latency-queries 30]
        [--skip-compare] [--skip-modes] [--threads N] [--alone [--squares 1,1.3,1.7]] [--baseline DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from simclr_watches.evaluation.encoders import BoxMethod, LocalizedMethod
from simclr_watches.evaluation.method_names import make_method
from simclr_watches.evaluation.protocols import catalog_photo_task
from simclr_watches.evaluation.runner import run_task
from simclr_watches.retrieval.index import DEFAULT_WIDTH, fit_projection, write_index
from simclr_watches.retrieval.boxes import BoxSearchConfig
from simclr_watches.retrieval.localize import LocalizeConfig
from simclr_watches.data.mask import CROP_MARGIN
from simclr_watches.retrieval.search import Searcher
from simclr_watches.weights import DEFAULT_MODEL, load_model

REPO = Path(__file__).resolve().parent.parent
LAYOUTS = {
    "default: whole + 0.45 windows, stride 0.7": LocalizeConfig(),
    "whole + 0.4 windows, stride 0.5": LocalizeConfig(scales=(0.4,), stride=0.5),
    "whole + 0.4 windows at 192 px, stride 0.6": LocalizeConfig(scales=(0.4,), stride=0.6, size=192),
    "whole + 0.6/0.4 windows at 160 px, stride 0.6": LocalizeConfig(scales=(0.6, 0.4), stride=0.6, size=160),
}
BOXES = {
    "learnt box, 2 squares + whole (default)": BoxSearchConfig(),
    "learnt box grown 10 % + whole": BoxSearchConfig(squares=(), top_m=1),
    "learnt box, 2 squares + mirrors + whole": BoxSearchConfig(flip=True),
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


def write_gallery_index(out: Path, gallery: list[Path], model: str) -> None:
    """A cropped index of ``gallery`` as ``build-index`` writes it by default (its PCA width) in ``out``."""
    from simclr_watches.retrieval.embed import EmbeddedItem
    from simclr_watches.core.files import sha256_file

    _, info = load_model(model)
    vectors = make_method(f"{model}+crop").embed_catalog(gallery)  # at the catalog sides, as build-index
    items = [EmbeddedItem(p, sha256_file(p), p.stat().st_size) for p in gallery]
    projection = fit_projection(vectors, DEFAULT_WIDTH if len(items) > DEFAULT_WIDTH else 0, whiten=False)
    write_index(out, vectors if projection is None else projection.apply(vectors), items, info, info.preprocessing,
                projection=projection, extra={"catalog_view": {"crop": "foreground", "margin": CROP_MARGIN}})


def latency(manifest: Path, model: str, n: int) -> None:
    task = catalog_photo_task(manifest)
    with tempfile.TemporaryDirectory() as tmp:
        write_gallery_index(Path(tmp) / "idx", task.gallery, model)
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


def worker(index: Path, squares: str = "") -> None:
    """``--worker``: a warm default search over ``index`` (with ``squares``, e.g. ``1,1.3,1.7``, around the box);
    answers each photo path read on stdin with its wall ms and the process's CPU ms (all threads: the work
    done, which a busy machine inflates less)."""
    cfg = BoxSearchConfig(squares=tuple(float(v) for v in squares.split(","))) if squares else BoxSearchConfig()
    searcher = Searcher(index, device="cpu", localize=cfg)
    for line in sys.stdin:
        q = Path(line.strip())
        t0, c0 = time.perf_counter(), time.process_time()
        searcher.search([(str(q), q)], top_k=10)
        print(f"{(time.perf_counter() - t0) * 1000:.3f} {(time.process_time() - c0) * 1000:.3f}", flush=True)


def _start_worker(checkout: Path, manifest: Path, index: Path, threads: int, squares: str = "") -> subprocess.Popen:
    """A ``--worker`` process running ``checkout``'s code over ``index``."""
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), str(manifest), "--worker", str(index), "--threads", str(threads),
         *(["--squares", squares] if squares else [])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout)})


def _ask(proc: subprocess.Popen, q: Path) -> tuple[float, float]:
    """(wall ms, CPU ms) of the worker's search of photo ``q``."""
    proc.stdin.write(f"{q}\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        sys.exit(f"a worker failed (exit {proc.wait()})")
    wall, cpu = line.split()
    return float(wall), float(cpu)


def _p90(values: list[float]) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))]


def alone(manifest: Path, model: str, n: int, rounds: int, threads: int, squares: str = "") -> None:
    """The default search alone in a warm process, ``rounds`` processes one after the other."""
    task = catalog_photo_task(manifest)
    queries = task.queries[:n]
    medians = []
    print(f"\ndefault search alone: {rounds} worker processes one after the other, each warmed by one search, "
          f"then {len(queries)} on-wrist photos, one per call; {threads or 'default'} torch threads")
    print("| process | load average before | median ms | p90 ms | CPU ms (median) |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "idx"
        write_gallery_index(index, task.gallery, model)
        for r in range(rounds):
            load = os.getloadavg()[0]
            proc = _start_worker(REPO, manifest, index, threads, squares)
            _ask(proc, queries[0])  # warm-up
            times = [_ask(proc, q) for q in queries]
            proc.stdin.close()
            proc.wait()
            wall, cpu = [w for w, _ in times], [c for _, c in times]
            medians.append(statistics.median(wall))
            print(f"| {r + 1} | {load:.1f} | {medians[-1]:.1f} | {_p90(wall):.1f} | {statistics.median(cpu):.1f} |")
    print(f"median of the {rounds} medians: {statistics.median(medians):.1f} ms")


def ab(manifest: Path, model: str, baseline: Path, n: int, rounds: int, threads: int) -> None:
    """Default search of this checkout vs ``baseline``'s, warm workers fed the same photos in turn."""
    task = catalog_photo_task(manifest)
    queries = task.queries[:n]
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "idx"
        write_gallery_index(index, task.gallery, model)
        sides = {"this checkout": REPO, f"baseline {baseline}": baseline.resolve()}
        workers = {label: _start_worker(checkout, manifest, index, threads) for label, checkout in sides.items()}
        for proc in workers.values():
            _ask(proc, queries[0])  # warm-up
        load = os.getloadavg()[0]
        times: dict[str, list[tuple[float, float]]] = {label: [] for label in workers}
        for _ in range(rounds):
            for q in queries:
                for label, proc in workers.items():
                    times[label].append(_ask(proc, q))
        for proc in workers.values():
            proc.stdin.close()
            proc.wait()
    (a, ta), (b, tb) = times.items()
    ratios = sorted(x[0] / y[0] for x, y in zip(ta, tb))
    print(f"\nA/B: default search, {len(queries)} on-wrist photos x {rounds} rounds, interleaved query by query, "
          f"{threads or 'default'} torch threads (load average at start {load:.1f}, at end {os.getloadavg()[0]:.1f})")
    print("| side | median ms | p90 ms | CPU ms (median) |")
    print("| --- | --- | --- | --- |")
    for label, t in times.items():
        wall, cpu = sorted(w for w, _ in t), sorted(c for _, c in t)
        print(f"| {label} | {statistics.median(wall):.1f} | {_p90(wall):.1f} | "
              f"{statistics.median(cpu):.1f} |")
    print(f"wall ratio {a} / {b}, per query: median {statistics.median(ratios):.2f} "
          f"(quartiles {ratios[len(ratios) // 4]:.2f}-{ratios[3 * len(ratios) // 4]:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--latency-queries", type=int, default=30)
    ap.add_argument("--skip-compare", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, one per core)")
    ap.add_argument("--skip-modes", action="store_true", help="skip part 2 (the latency of every mode)")
    ap.add_argument("--alone", action="store_true", help="part 2b: the default search alone in its process")
    ap.add_argument("--baseline", type=Path, help="part 3: another checkout whose default search to time against")
    ap.add_argument("--rounds", type=int, default=3, help="part 2b: worker processes; part 3: passes over the photos")
    ap.add_argument("--squares", default="", help="part 2b: the squares around the box, e.g. 1,1.3,1.7 (default: search's)")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        return worker(args.worker, args.squares)
    if not args.skip_compare:
        compare(args.manifest, args.model)
    if not args.skip_modes:
        latency(args.manifest, args.model, args.latency_queries)
    if args.alone:
        alone(args.manifest, args.model, args.latency_queries, args.rounds, args.threads, args.squares)
    if args.baseline:
        ab(args.manifest, args.model, args.baseline, args.latency_queries, args.rounds, args.threads)


if __name__ == "__main__":
    main()
