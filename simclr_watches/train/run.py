"""A pretraining run: the run folder and its files, set-up, the epochs, checkpoints and resume.

SimCLR (Chen et al. 2020, arXiv:2002.05709): two augmented views of each photo go
through encoder + projection head; the NT-Xent loss pulls the two projections of
a photo together and pushes apart those of the other photos in the batch. Only
the encoder is kept: its pooled features are what the index stores.

The pipeline, one module each: :mod:`~simclr_watches.train.config` (what a run depends
on), :mod:`~simclr_watches.train.catalog_cache` (the catalog decoded once into a uint8
cache on the accelerator), :mod:`~simclr_watches.train.augment` (views made by Kornia in
batches), :mod:`~simclr_watches.train.simclr` (model and optimiser),
:mod:`~simclr_watches.train.loop` (schedule, step, epoch), :mod:`~simclr_watches.train.proxy`
(the per-epoch metric), :mod:`~simclr_watches.train.state` (checkpoints) and
:mod:`~simclr_watches.core.distributed`: under ``torchrun`` every process trains on
its shard of the catalog with DDP, and the loss gathers the projections of all
processes, so the negatives are the global batch.
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from simclr_watches.core.config import apply_overrides, from_dict, to_dict
from simclr_watches.core.errors import CheckpointError, ConfigError, SimclrWatchesError
from simclr_watches.core.outputs import OutputKind, check_disjoint, owned_folder, prepare_output, read_prefix
from simclr_watches.core.progress import progress_bar, stderr
from simclr_watches.core.device import resolve_device
from simclr_watches.train.augment import SimCLRAugment
from simclr_watches.train.catalog_cache import CatalogCache, build_cache, cache_placement
from simclr_watches.train.config import PretrainConfig
from simclr_watches.core.distributed import DistInfo, all_ranks, dist_from_env, local_device, mean_over_ranks, process_group
from simclr_watches.train.loop import batch_order, lr_at, train_one_epoch
from simclr_watches.train.proxy import make_proxy_set, retrieval_proxy
from simclr_watches.train.simclr import SimCLRModel, build_model, build_optimizer, memory_format
from simclr_watches.train.state import load_training_checkpoint, rng_state, save_training_checkpoint, set_rng_state
from simclr_watches.weights import CHECKPOINT_OUTPUT, save_encoder

TRAIN_CHECKPOINT = "checkpoint.pt"
ENCODER_FILE = "encoder.safetensors"
METRICS_FILE = "metrics.jsonl"


def _metrics_owned(path: Path) -> bool:
    """Our metrics log: empty, or its first line is a JSON object with an ``epoch``."""
    first = read_prefix(path).split(b"\n", 1)[0]
    if not first.strip():
        return True
    try:
        row = json.loads(first)
    except (ValueError, RecursionError):
        return False
    return isinstance(row, dict) and "epoch" in row


RUN_OUTPUT = OutputKind(
    "pretraining run",
    folder=True,
    owned=owned_folder({TRAIN_CHECKPOINT: zipfile.is_zipfile,  # torch.save's format; never unpickled here
                        ENCODER_FILE: CHECKPOINT_OUTPUT.owned, METRICS_FILE: _metrics_owned}),
    taken="already holds a run; pass --resume to continue it, --force to start it afresh, or another --out",
)


@dataclass
class PretrainResult:
    """What a run produced: the trained model (unwrapped, on its device) and per-epoch metrics."""

    run_dir: Path
    model: SimCLRModel
    metrics: list[dict[str, Any]]
    epochs_done: int


def run_config(run_dir: Path | str, overrides: Sequence[str] = ()) -> PretrainConfig:
    """The config stored in a run's training checkpoint, with overrides (e.g. more epochs) on top."""
    path = Path(run_dir) / TRAIN_CHECKPOINT
    ckpt = load_training_checkpoint(path)
    try:
        return from_dict(PretrainConfig, apply_overrides(ckpt["config"], overrides))
    except ConfigError as e:
        raise ConfigError(f"{path}: stored config with --set: {e}") from None


def build_training(cfg: PretrainConfig, device: torch.device, world: int = 1, *,
                   init: bool = True) -> tuple[SimCLRModel, torch.optim.Optimizer, nn.Module, SimCLRAugment]:
    """Model (on ``device``, in its memory format), optimiser, NT-Xent loss and augmentation of a run.

    With ``world`` > 1 the loss gathers projections from all processes (negatives from
    the global batch) and, on CUDA, batch norm is synchronised, as SimCLR does.

    Args:
        init: load ``model.init``'s weights; False (a resume, whose checkpoint replaces every
            tensor) starts from random ones, so a resume never needs the init weights file.
    """
    from lightly.loss import NTXentLoss

    model = build_model(cfg.model if init else replace(cfg.model, init="random"))
    if world > 1 and device.type == "cuda" and cfg.model.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device).to(memory_format=memory_format(cfg.model, device))
    optimizer = build_optimizer(model, cfg.train)
    criterion = NTXentLoss(temperature=cfg.loss.temperature, gather_distributed=world > 1)
    return model, optimizer, criterion, SimCLRAugment(cfg.augment)


def run_pretraining(
    catalog: Path | str,
    run_dir: Path | str,
    cfg: PretrainConfig,
    *,
    resume: bool = False,
    force: bool = False,
    device: str = "auto",
    progress: bool = True,
    stop_after: int | None = None,
    time_limit: float | None = None,
) -> PretrainResult:
    """Pretrains an encoder on the images under ``catalog``; writes checkpoints, metrics and the encoder.

    Under ``torchrun`` (WORLD_SIZE > 1) this is one DDP process; rank 0 writes the files.

    Args:
        resume: continue from ``run_dir/checkpoint.pt`` (model, optimiser, step, RNG).
        force: start afresh in a ``run_dir`` that holds an earlier run (its files are
            removed once the catalog is read, before the first epoch).
        stop_after: end (with a checkpoint) after this many epochs of this call, e.g. to fit
            a time-limited job; a later ``resume`` continues exactly where it stopped.
        time_limit: end (with a checkpoint) after the first epoch past which another epoch as
            long as it would end more than this many seconds after the start of this call
            (catalog decoding and compilation included); at least one epoch always runs.

    Raises:
        SimclrWatchesError: unusable catalog, an existing run without ``resume`` or ``force``,
            a ``run_dir`` holding anything else or overlapping the catalog, or a batch larger
            than the catalog.
        CheckpointError: ``resume`` without a usable checkpoint.
    """
    run_dir = Path(run_dir)
    clear = _check_run_dir(run_dir, catalog, resume=resume, force=force)
    ckpt = load_training_checkpoint(run_dir / TRAIN_CHECKPOINT) if resume else None
    info = dist_from_env()
    dev = local_device(resolve_device(device), info)
    with process_group(info, dev):
        return _run(catalog, run_dir, cfg, ckpt, info, dev, progress and info.main, stop_after, clear, time_limit)


def _check_run_dir(run_dir: Path, catalog: Path | str, *, resume: bool, force: bool) -> bool:
    """Checks, before any work, that the run may be written to ``run_dir``.

    Returns:
        Whether ``run_dir`` holds an earlier run to remove before training (``force``).

    Raises:
        SimclrWatchesError: see :func:`run_pretraining`.
    """
    if not resume:
        return prepare_output(run_dir, RUN_OUTPUT, force=force, inputs=[catalog])
    if force:
        raise SimclrWatchesError(f"{run_dir}: --resume continues the run there and --force starts it afresh; give one of them")
    check_disjoint(run_dir, [catalog])
    return False


def _start_run_dir(run_dir: Path, clear: bool) -> None:
    """Creates the run folder; with ``clear``, removes the files of the earlier run in it first."""
    if clear:
        for name in (TRAIN_CHECKPOINT, ENCODER_FILE, METRICS_FILE):
            (run_dir / name).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Drops log lines of epochs after the checkpoint being resumed (they will be run again)."""
    if path.is_file():
        rows = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["epoch"] <= epochs_done]
        path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")


def _catalog_shard(catalog: Path | str, cfg: PretrainConfig, info: DistInfo, dev: torch.device,
                   progress: bool) -> tuple[CatalogCache, int]:
    """This process's shard of the decoded catalog, placed per ``cfg.data``, and the catalog's readable image count.

    Raises:
        ConfigError: fewer readable images per process than ``train.batch_size``.
    """
    full = build_cache(catalog, cfg.data.cache_size, progress=progress)
    if info.main:
        for e in full.skipped:
            stderr.print(f"[yellow]skipped[/yellow] {e}", highlight=False)
    cache = full.shard(info.rank, info.world)
    if len(cache) < cfg.train.batch_size:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} is more than the {len(cache)} readable images "
            f"{'per process ' if info.world > 1 else ''}in {catalog}; lower it"
        )
    return cache.to(cache_placement(cache.nbytes, dev, cfg.data.cache_device, cfg.data.gpu_fraction)), len(full)


def _restore(ckpt: dict | None, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: PretrainConfig,
             info: DistInfo, dev: torch.device) -> tuple[int, int, list[dict[str, Any]]]:
    """Loads a checkpoint's model, optimiser and RNG states, or seeds a fresh run.

    Returns:
        (epochs done, optimiser steps done, metrics so far); zeros and [] for a fresh run.

    Raises:
        CheckpointError: the checkpoint at ``path`` does not fit this config.
    """
    if ckpt is None:
        torch.manual_seed(cfg.train.seed + 1000 * info.rank)  # each process augments differently
        return 0, 0, []
    try:
        model.load_state_dict(ckpt["model"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: does not fit this config: {str(e).splitlines()[0]}") from None
    epoch, step = ckpt["epoch"], ckpt["step"]
    if len(ckpt["rng"]) == info.world:
        set_rng_state(ckpt["rng"][info.rank], dev)
    else:
        # Another process count: the data shards differ anyway, so exact continuation is impossible.
        torch.manual_seed(cfg.train.seed + 1000 * info.rank + step)
    return epoch, step, list(ckpt["metrics"])


def _training_module(model: nn.Module, cfg: PretrainConfig, info: DistInfo, dev: torch.device) -> nn.Module:
    """``model`` as the loop runs it: DDP-wrapped under several processes, compiled with ``model.compile``."""
    if info.world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    return torch.compile(model) if cfg.model.compile else model


def _save(run_dir: Path, model: SimCLRModel, optimizer: torch.optim.Optimizer, cfg: PretrainConfig, *, epoch: int,
          step: int, rng: list[dict[str, torch.Tensor]], metrics: list[dict[str, Any]], catalog: Path | str,
          images: int) -> None:
    """Writes the training checkpoint and the encoder (without the head), each atomically."""
    save_training_checkpoint(run_dir / TRAIN_CHECKPOINT, model, optimizer, config=to_dict(cfg), epoch=epoch,
                             step=step, rng=rng, metrics=metrics)
    save_encoder(run_dir / ENCODER_FILE, model.encoder, cfg.preprocessing,
                 meta={"config": to_dict(cfg), "epochs": epoch, "step": step, "metrics": metrics,
                       "catalog": str(catalog), "images": images})


def _run(catalog, run_dir: Path, cfg: PretrainConfig, ckpt: dict | None, info: DistInfo, dev: torch.device,
         progress: bool, stop_after: int | None, clear: bool = False, time_limit: float | None = None) -> PretrainResult:
    start = time.perf_counter()
    torch.manual_seed(cfg.train.seed)
    cache, images = _catalog_shard(catalog, cfg, info, dev, progress)
    model, optimizer, criterion, augment = build_training(cfg, dev, info.world, init=ckpt is None)
    pre = cfg.preprocessing
    metrics_path = run_dir / METRICS_FILE
    epoch, step, metrics = _restore(ckpt, run_dir / TRAIN_CHECKPOINT, model, optimizer, cfg, info, dev)
    if info.main:
        if ckpt is not None:
            _truncate_metrics(metrics_path, epoch)
        _start_run_dir(run_dir, clear)
    train_model = _training_module(model, cfg, info, dev)

    proxy = make_proxy_set(cache, augment, cfg.eval.proxy_views, cfg.eval.proxy_seed, dev, cfg.eval.batch_size)
    steps_per_epoch = len(batch_order(len(cache), cfg.train.batch_size, 0, cfg.train.seed))
    last = cfg.train.epochs if stop_after is None else min(cfg.train.epochs, epoch + stop_after)
    while epoch < last:
        t0 = time.perf_counter()
        with progress_bar(f"epoch {epoch + 1}/{cfg.train.epochs}", steps_per_epoch, enabled=progress) as advance:
            step, loss = train_one_epoch(train_model, criterion, optimizer, augment, pre, cache, epoch=epoch,
                                         step=step, cfg=cfg, device=dev, advance=advance)
        seconds = time.perf_counter() - t0
        epoch += 1
        row = {
            "epoch": epoch,
            "step": step,
            "loss": mean_over_ranks(loss, dev, info),
            "lr": lr_at(step - 1, cfg.train, steps_per_epoch),
            "proxy_top1": retrieval_proxy(model.encoder, pre, cache, proxy, dev, cfg.eval.batch_size),
            "images_per_s": steps_per_epoch * cfg.train.batch_size * info.world / seconds,
            "seconds": seconds,
        }
        metrics.append(row)
        if info.main:
            _append_metrics(metrics_path, row)
        out_of_time = time_limit is not None and _out_of_time(start, seconds, time_limit, dev, info)
        if epoch % cfg.train.checkpoint_every == 0 or epoch == last or out_of_time:
            rng = all_ranks(rng_state(dev), info)
            if info.main:
                _save(run_dir, model, optimizer, cfg, epoch=epoch, step=step, rng=rng, metrics=metrics,
                      catalog=catalog, images=images)
        if out_of_time:
            break
    return PretrainResult(run_dir, model, metrics, epoch)


def _out_of_time(start: float, seconds: float, time_limit: float, dev: torch.device, info: DistInfo) -> bool:
    """Would one more epoch of ``seconds`` end past ``time_limit`` after ``start``? The same answer on every process."""
    late = time.perf_counter() - start + seconds > time_limit
    return mean_over_ranks(float(late), dev, info) > 0
