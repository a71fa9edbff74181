"""CPU/GPU embedding throughput and build-index wall time.

Measures, for one model:
  (1) model-only images/s on preprocessed uint8 batches (decode excluded),
  (2) end-to-end images/s of ``embed_paths`` over a catalog folder (decode + preprocess + model),
  (3) wall time of ``build_index`` on that folder (scan, embed, Annoy build, atomic write).

Usage:
    python benchmarks/embed_throughput.py ../shared/data/watches-dev/images [--model NAME] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from simclr_watches.data.images import scan_images
from simclr_watches.core.device import resolve_device
from simclr_watches.retrieval.embed import embed_paths, embed_tensors
from simclr_watches.retrieval.index import build_index
from simclr_watches.weights import DEFAULT_MODEL, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("catalog", type=Path)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    device = resolve_device(args.device)
    encoder, info = load_model(args.model)
    encoder = encoder.to(device).eval().to(memory_format=torch.channels_last)
    pre = info.preprocessing
    batch = torch.randint(0, 256, (args.batch_size, 3, pre.size, pre.size), dtype=torch.uint8)
    embed_tensors(encoder, pre, batch, device)  # warm-up: allocator, kernels
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        embed_tensors(encoder, pre, batch, device)
        times.append(time.perf_counter() - t0)
    model_ips = args.batch_size / statistics.median(times)

    paths = scan_images(args.catalog)
    t0 = time.perf_counter()
    emb = embed_paths(encoder, pre, paths, batch_size=args.batch_size, device=device, progress=False)
    e2e_ips = len(emb.items) / (time.perf_counter() - t0)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = build_index(args.catalog, Path(tmp) / "idx", checkpoint=args.model, batch_size=args.batch_size,
                             device=str(device), progress=False)
        build_s = time.perf_counter() - t0

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, device {device}")
    print(f"model: {info.id} ({info.arch}, {pre.size} px), batch {args.batch_size}, torch {torch.__version__}")
    print("| measure | value |")
    print("| --- | --- |")
    print(f"| model-only throughput (median of {args.repeats} batches) | {model_ips:.1f} images/s |")
    print(f"| end-to-end embed_paths ({len(paths)} files, decode included) | {e2e_ips:.1f} images/s |")
    print(f"| build-index wall time ({report.count} images) | {build_s:.1f} s |")


if __name__ == "__main__":
    main()
