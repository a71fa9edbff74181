"""Training throughput of SimCLR pretraining, in catalog photos per second (each photo = 2 views).

Three measurements in one run, on one device, with the same model, loss and optimiser
(EfficientNet-Lite0, 224 px, 256 photos x 2 views per step by default):

  (a) this project's pipeline: uint8 catalog cache on the device + Kornia augmentations
      (``train.loop.train_one_epoch``, exactly what ``simclr-watches pretrain`` runs);
  (b) the usual CPU path: lightly's ``SimCLRTransform`` (PIL/torchvision, with rotation)
      in a DataLoader with one worker per CPU core, feeding the same training step;
  (c) the ceiling: the training step alone on device-resident random tensors.

Target on an H100 (issue 3): (a) >= 4x (b) and (a) >= 80 % of (c).

    python benchmarks/train_throughput.py                      # real numbers: needs a GPU
    python benchmarks/train_throughput.py --device cpu --size 32 --batch 8 --steps 2 --warmup 1 --limit 16

Numbers from a CPU run only show that the script works; they are not a result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from simclr_watches.train.catalog_cache import CatalogCache, build_cache, cache_placement  # noqa: E402
from simclr_watches.core.device import resolve_device  # noqa: E402
from simclr_watches.train.config import load_pretrain_config  # noqa: E402
from simclr_watches.train.loop import simclr_step, train_one_epoch  # noqa: E402
from simclr_watches.train.run import build_training  # noqa: E402
from simclr_watches.train.simclr import memory_format  # noqa: E402

DEFAULT_CATALOG = Path("/work/shared/data/watches-dev/images")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run_steps, steps: int, warmup: int, batch: int, device: torch.device) -> float:
    """Photos per second of ``run_steps(n)`` (which runs n training steps), after ``warmup`` steps."""
    run_steps(warmup)
    sync(device)
    t0 = time.perf_counter()
    run_steps(steps)
    sync(device)
    return steps * batch / (time.perf_counter() - t0)


def bench_pipeline(cfg, cache, device, steps, warmup) -> float:
    """(a): whole epochs of ``train_one_epoch`` over the device cache, cut to ``steps`` steps."""
    model, opt, crit, augment = build_training(cfg, device)
    per_epoch = len(cache) // cfg.train.batch_size
    counter = {"epoch": 0}

    def run(n: int) -> None:
        done = 0
        while done < n:
            # A shard of the cache as long as the steps still to do, so the count is exact.
            take = min(n - done, per_epoch) * cfg.train.batch_size
            part = CatalogCache(cache.paths[:take], cache.images[:take], cache.masks[:take], [])
            _, _ = train_one_epoch(model, crit, opt, augment, cfg.preprocessing, part,
                                   epoch=counter["epoch"], step=0, cfg=cfg, device=device)
            counter["epoch"] += 1
            done += take // cfg.train.batch_size

    return timed(run, steps, warmup, cfg.train.batch_size, device)


class _LightlyDataset(torch.utils.data.Dataset):
    """Cached photos as PIL images through lightly's CPU transform, cycling over the catalog."""

    def __init__(self, images: np.ndarray, transform, length: int):
        self.images, self.transform, self.length = images, transform, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i % len(self.images)]))


def bench_lightly(cfg, cache, device, steps, warmup, workers) -> float:
    """(b): the same training step fed by lightly's SimCLRTransform in DataLoader workers."""
    from lightly.transforms import SimCLRTransform

    pre = cfg.preprocessing
    a = cfg.augment
    transform = SimCLRTransform(input_size=a.size, min_scale=a.crop_scale[0], rr_prob=a.rotation_p,
                                rr_degrees=a.rotation_deg, normalize={"mean": list(pre.mean), "std": list(pre.std)})
    images = cache.images.cpu().permute(0, 2, 3, 1).numpy()  # decoded once, like (a): only augmentation is compared
    b = cfg.train.batch_size
    loader = torch.utils.data.DataLoader(
        _LightlyDataset(images, transform, (steps + warmup) * b), batch_size=b, num_workers=workers,
        drop_last=True, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )
    model, opt, crit, _ = build_training(cfg, device)
    memory = memory_format(cfg.model, device)
    batches = iter(loader)

    def run(n: int) -> None:
        for _ in range(n):
            v1, v2 = next(batches)
            x = torch.cat([v1, v2]).to(device, non_blocking=True).contiguous(memory_format=memory)
            simclr_step(model, crit, opt, x, device)

    return timed(run, steps, warmup, b, device)


def bench_model_only(cfg, device, steps, warmup) -> float:
    """(c): the training step on random normalised views already on the device."""
    model, opt, crit, _ = build_training(cfg, device)
    s, b = cfg.augment.size, cfg.train.batch_size
    x = torch.randn(2 * b, 3, s, s, device=device).contiguous(memory_format=memory_format(cfg.model, device))

    def run(n: int) -> None:
        for _ in range(n):
            simclr_step(model, crit, opt, x, device)

    return timed(run, steps, warmup, b, device)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    p.add_argument("--config", type=Path, default=REPO / "configs" / "pretrain.toml")
    p.add_argument("--size", type=int, default=224, help="view side (augment.size)")
    p.add_argument("--batch", type=int, default=256, help="photos per step (2 views each)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (cuDNN autotune, compile)")
    p.add_argument("--limit", type=int, default=None, help="use only this many catalog photos")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers for (b)")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="any config override")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    cfg = load_pretrain_config(args.config, [f"augment.size={args.size}", f"train.batch_size={args.batch}",
                                             f"data.cache_size={max(args.size, round(args.size * 8 / 7))}",
                                             *args.overrides])
    cache = build_cache(args.catalog, cfg.data.cache_size, limit=args.limit)
    if len(cache) < args.batch:
        raise SystemExit(f"{args.catalog}: {len(cache)} readable photos, fewer than --batch {args.batch}")
    cache = cache.to(cache_placement(cache.nbytes, device, cfg.data.cache_device, cfg.data.gpu_fraction))
    torch.manual_seed(0)

    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "arch": cfg.model.arch, "size": args.size, "batch": args.batch, "steps": args.steps,
        "workers_b": args.workers, "photos": len(cache),
    }
    results["a_pipeline"] = bench_pipeline(cfg, cache, device, args.steps, args.warmup)
    results["b_lightly_cpu"] = bench_lightly(cfg, cache, device, args.steps, args.warmup, args.workers)
    results["c_model_only"] = bench_model_only(cfg, device, args.steps, args.warmup)
    results["a_over_b"] = results["a_pipeline"] / results["b_lightly_cpu"]
    results["a_over_c"] = results["a_pipeline"] / results["c_model_only"]

    print(f"{results['device']}, {cfg.model.arch}, {args.size} px, {args.batch} photos x 2 views per step")
    print("| measurement | photos/s |\n|---|---|")
    for key, label in (("a_pipeline", "(a) device cache + Kornia"), ("b_lightly_cpu", f"(b) lightly on CPU, {args.workers} workers"),
                       ("c_model_only", "(c) model only")):
        print(f"| {label} | {results[key]:.1f} |")
    print(f"(a)/(b) = {results['a_over_b']:.2f} (target >= 4), (a)/(c) = {results['a_over_c']:.2f} (target >= 0.8)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
