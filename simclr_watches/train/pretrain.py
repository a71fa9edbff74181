"""SimCLR pretraining of the encoder on the catalog, without labels.

SimCLR (Chen et al. 2020, arXiv:2002.05709): two augmented views of each photo go
through encoder + projection head; the NT-Xent loss pulls the two projections of
a photo together and pushes apart those of the other photos in the batch. Only
the encoder is kept: its pooled features are what the index stores.

The whole data path is on the accelerator: the catalog is decoded once into a
uint8 cache (:mod:`simclr_watches.train.catalog_cache`) and the views are made by
Kornia in batches (:mod:`simclr_watches.train.augment`). Checkpoints are
:mod:`simclr_watches.train.state`; the per-epoch metric is :mod:`simclr_watches.train.proxy`. Under ``torchrun`` every
process trains on its shard of the catalog with DDP, and the loss gathers the
projections of all processes, so the negatives are the global batch.
"""

from __future__ import annotations

import json
import math
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
import torch.distributed as dist
from torch import nn

from simclr_watches.core.atomic import atomic_path
from simclr_watches.train.augment import AugmentConfig, SimCLRAugment, preview_grid
from simclr_watches.train.catalog_cache import CatalogCache, build_cache, cache_placement
from simclr_watches.core.config import apply_overrides, check_range, from_dict, load_config, to_dict
from simclr_watches.core.validate import FieldError
from simclr_watches.core.device import resolve_device
from simclr_watches.core.errors import CheckpointError, ConfigError, SimclrWatchesError
from simclr_watches.model import ARCH_DIMS, Encoder, Preprocessing, default_preprocessing
from simclr_watches.core.outputs import PNG, OutputKind, check_disjoint, owned_folder, png_info, prepare_output, read_prefix
from simclr_watches.train.proxy import make_proxy_set, retrieval_proxy
from simclr_watches.core.progress import progress_bar, stderr
from simclr_watches.train.state import load_training_checkpoint, rng_state, save_training_checkpoint, set_rng_state
from simclr_watches.weights import CHECKPOINT_OUTPUT, init_encoder, save_encoder

TRAIN_CHECKPOINT = "checkpoint.pt"
ENCODER_FILE = "encoder.safetensors"
METRICS_FILE = "metrics.jsonl"

# Config bounds beyond which a value is a typo, not an experiment (and memory would run out first).
MAX_WIDTH = 65536  # projection head widths
MAX_CACHE_SIDE = 2048  # a catalog cache of 1000 photos at 2048 px is already 16 GB
MAX_SEED = 2**32 - 1  # torch generators take 64 bits; batch_order multiplies the seed by ~1e6
MAX_COUNT = 1_000_000  # epochs, batch sizes, proxy views


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


@dataclass(frozen=True)
class ModelConfig:
    """Encoder and projection head.

    Attributes:
        arch: encoder architecture, one of ``model.ARCH_DIMS``.
        init: ``imagenet``, ``random`` or the path of a backbone state dict.
        head_hidden: hidden width of the projection head (0: the encoder's width, as in SimCLR).
        head_out: projection width the loss compares (SimCLR: 128).
        channels_last: NHWC memory format on CUDA (faster convolutions with bf16).
        compile: wrap the training model in ``torch.compile``.
        sync_bn: batch-norm statistics over all processes under DDP on CUDA (SimCLR's global BN).
        frozen_stages: leading backbone stages (``Encoder.stages``: the stem counts as one)
            kept at their initial weights and batch-norm statistics. Their backward pass is
            skipped, which makes CPU training several times faster, and a small catalog
            cannot wear away the generic low-level filters of the ImageNet init.
    """

    arch: str = "efficientnet_lite0"
    init: str = "imagenet"
    head_hidden: int = 0
    head_out: int = 128
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = True
    frozen_stages: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ARCH_DIMS:
            raise FieldError("arch", f"unknown architecture {self.arch!r}; known: {', '.join(ARCH_DIMS)}")
        check_range(self, "head_hidden", 0, MAX_WIDTH)
        check_range(self, "head_out", 1, MAX_WIDTH)
        check_range(self, "frozen_stages", 0)


@dataclass(frozen=True)
class DataConfig:
    """The decoded catalog cache.

    Attributes:
        cache_size: side of the cached padded squares; crops are taken from it, so keep it a
            little above ``augment.size``.
        cache_device: ``auto`` (see ``catalog_cache.cache_placement``), ``gpu`` or ``cpu``.
        gpu_fraction: largest share of free GPU memory the cache may take under ``auto``.
    """

    cache_size: int = 256
    cache_device: Literal["auto", "gpu", "cpu"] = "auto"
    gpu_fraction: float = 0.25

    def __post_init__(self) -> None:
        check_range(self, "cache_size", 16, MAX_CACHE_SIDE)
        check_range(self, "gpu_fraction", 0.0, 1.0, low_open=True)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation.

    Attributes:
        epochs: passes over the catalog (each process over its shard).
        batch_size: photos per step per process (each gives two views).
        lr: peak learning rate of AdamW, reached after the warmup.
        min_lr_ratio: the cosine ends at ``lr * min_lr_ratio``.
        warmup_epochs: linear warmup from 0, in epochs (may be fractional).
        weight_decay: AdamW decay of weights; biases and norm parameters are not decayed.
        seed: seeds model init, data order and augmentations.
        checkpoint_every: epochs between checkpoints (one is always written at the end).
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 3e-4
    min_lr_ratio: float = 0.01
    warmup_epochs: float = 5.0
    weight_decay: float = 0.05
    seed: int = 0
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        check_range(self, "epochs", 1, MAX_COUNT)
        check_range(self, "batch_size", 2, MAX_COUNT)
        check_range(self, "lr", 0.0, 1.0, low_open=True)
        check_range(self, "min_lr_ratio", 0.0, 1.0)
        check_range(self, "warmup_epochs", 0.0)
        if self.warmup_epochs > self.epochs:
            raise FieldError("warmup_epochs", f"must be <= epochs ({self.epochs}), got {self.warmup_epochs}")
        check_range(self, "weight_decay", 0.0, 1.0)
        check_range(self, "seed", 0, MAX_SEED)
        check_range(self, "checkpoint_every", 1, MAX_COUNT)


@dataclass(frozen=True)
class LossConfig:
    """NT-Xent (Chen et al. 2020, eq. 1).

    Attributes:
        temperature: softmax temperature of the cosine similarities.
    """

    temperature: float = 0.2

    def __post_init__(self) -> None:
        check_range(self, "temperature", 0.0, 10.0, low_open=True)


@dataclass(frozen=True)
class EvalConfig:
    """The label-free retrieval proxy logged after every epoch.

    Attributes:
        proxy_views: how many catalog photos get one fixed augmented view, held aside
            (made once, from ``proxy_seed``); the proxy is the fraction of those views whose
            nearest catalog embedding is their own source photo.
        proxy_seed: seed of those views, independent of training randomness.
        batch_size: photos per forward pass when embedding.
    """

    proxy_views: int = 256
    proxy_seed: int = 1234
    batch_size: int = 256

    def __post_init__(self) -> None:
        check_range(self, "proxy_views", 1, MAX_COUNT)
        check_range(self, "proxy_seed", 0, MAX_SEED)
        check_range(self, "batch_size", 1, MAX_COUNT)


@dataclass(frozen=True)
class PretrainConfig:
    """Everything a pretraining run depends on (stored in its checkpoints)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def preprocessing(self) -> Preprocessing:
        """The encoder's input: views of side ``augment.size``, normalised for ``model.arch``."""
        return default_preprocessing(self.model.arch, self.augment.size)


def load_pretrain_config(path: Path | str | None, overrides: Sequence[str] = ()) -> PretrainConfig:
    """Reads a pretraining config TOML with dotted overrides (see :func:`config.load_config`)."""
    return load_config(PretrainConfig, Path(path) if path is not None else None, overrides)


def run_config(run_dir: Path | str, overrides: Sequence[str] = ()) -> PretrainConfig:
    """The config stored in a run's training checkpoint, with overrides (e.g. more epochs) on top."""
    path = Path(run_dir) / TRAIN_CHECKPOINT
    ckpt = load_training_checkpoint(path)
    try:
        return from_dict(PretrainConfig, apply_overrides(ckpt["config"], overrides))
    except ConfigError as e:
        raise ConfigError(f"{path}: stored config with --set: {e}") from None


def lr_at(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Learning rate at optimiser step ``step``: linear warmup from 0, then cosine decay.

    Pure: the schedule position is the step count alone, so a resumed run continues on
    the same curve. Cosine decay follows SGDR (Loshchilov & Hutter 2017, arXiv:1608.03983)
    as used by SimCLR.
    """
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    floor = cfg.lr * cfg.min_lr_ratio
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class SimCLRModel(nn.Module):
    """Encoder + projection head g(.) of SimCLR (Chen et al. 2020, sec. 2.1).

    Shapes:
        input: (B, 3, S, S) normalised.
        output: (B, head_out) projections (unnormalised; NT-Xent normalises them).
    """

    def __init__(self, encoder: Encoder, head: nn.Module, frozen_stages: int = 0):
        super().__init__()
        self.encoder = encoder
        self.head = head
        stages = encoder.stages()
        if frozen_stages > len(stages):
            raise ConfigError(f"model.frozen_stages={frozen_stages}, but {encoder.arch} has {len(stages)} stages")
        self.frozen_stages = frozen_stages
        for m in self.frozen:
            m.requires_grad_(False)

    @property
    def frozen(self) -> list[nn.Module]:
        """The modules of the frozen stages, looked up each time: SyncBatchNorm conversion replaces batch norms."""
        return [m for stage in self.encoder.stages()[:self.frozen_stages] for m in stage]

    def train(self, mode: bool = True) -> "SimCLRModel":
        super().train(mode)
        # Frozen stages keep their batch-norm statistics too, so they stay in eval mode.
        for m in self.frozen:
            m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.features(x))


def build_model(cfg: ModelConfig) -> SimCLRModel:
    from lightly.models.modules import SimCLRProjectionHead

    encoder = init_encoder(cfg.arch, cfg.init)
    head = SimCLRProjectionHead(encoder.dim, cfg.head_hidden or encoder.dim, cfg.head_out)
    return SimCLRModel(encoder, head, cfg.frozen_stages)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; biases and normalisation parameters (1-d tensors) are not weight-decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> DistInfo:
    """Reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK; a plain launch is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def batch_order(n: int, batch_size: int, epoch: int, seed: int) -> list[torch.Tensor]:
    """Index batches of one epoch; the incomplete last batch is dropped (NT-Xent wants full batches).

    The order depends only on (seed, epoch), not on the global RNG, so it is the same
    after a resume.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen)
    return [perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def simclr_step(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                device: torch.device) -> torch.Tensor:
    """One optimiser step on a batch of view pairs.

    Args:
        x: (2B, 3, S, S) normalised; rows i and B + i are the two views of photo i. Both
            views go through one forward pass, so batch norm sees the whole batch.

    Returns:
        the loss, a detached scalar tensor (reading it waits for the device).
    """
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        z = model(x)
    z1, z2 = z.float().chunk(2)
    loss = criterion(z1, z2)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def memory_format(cfg: ModelConfig, device: torch.device) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last and device.type == "cuda" else torch.contiguous_format


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    augment: SimCLRAugment,
    preprocessing: Preprocessing,
    cache: CatalogCache,
    *,
    epoch: int,
    step: int,
    cfg: PretrainConfig,
    device: torch.device,
    advance: Callable[..., None] = lambda n=1, **kw: None,
) -> tuple[int, float]:
    """One pass over ``cache``: augment, embed both views, NT-Xent, AdamW step.

    Args:
        model: the training model (possibly DDP- or compile-wrapped); maps views to projections.
        step: global optimiser step at the start of the epoch (drives ``lr_at``).

    Returns:
        (global step at the end, mean loss of the epoch).
    """
    model.train()
    batches = batch_order(len(cache), cfg.train.batch_size, epoch, cfg.train.seed)
    memory = memory_format(cfg.model, device)
    total = torch.zeros((), device=device)
    for idx in batches:
        lr = lr_at(step, cfg.train, len(batches))
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, masks = cache.batch(idx, device)
        v1, v2 = augment(images, masks)
        x = preprocessing.normalize(torch.cat([v1, v2])).contiguous(memory_format=memory)
        loss = simclr_step(model, criterion, optimizer, x, device)
        total += loss
        step += 1
        # Reading the loss waits for the GPU; do it rarely so the host keeps queueing work ahead.
        advance(1, **({"loss": float(loss)} if step % 20 == 1 else {}))
    return step, float(total) / max(1, len(batches))


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Drops log lines of epochs after the checkpoint being resumed (they will be run again)."""
    if path.is_file():
        rows = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["epoch"] <= epochs_done]
        path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")


@dataclass
class PretrainResult:
    """What a run produced: the trained model (unwrapped, on its device) and per-epoch metrics."""

    run_dir: Path
    model: SimCLRModel
    metrics: list[dict[str, Any]]
    epochs_done: int


def _all_ranks(obj: Any, info: DistInfo) -> list[Any]:
    if info.world == 1:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def _mean_over_ranks(value: float, device: torch.device, info: DistInfo) -> float:
    if info.world == 1:
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t)
    return float(t) / info.world


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
) -> PretrainResult:
    """Pretrains an encoder on the images under ``catalog``; writes checkpoints, metrics and the encoder.

    Under ``torchrun`` (WORLD_SIZE > 1) this is one DDP process; rank 0 writes the files.

    Args:
        resume: continue from ``run_dir/checkpoint.pt`` (model, optimiser, step, RNG).
        force: start afresh in a ``run_dir`` that holds an earlier run (its files are
            removed once the catalog is read, before the first epoch).
        stop_after: end (with a checkpoint) after this many epochs of this call, e.g. to fit
            a time-limited job; a later ``resume`` continues exactly where it stopped.

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
    started_dist = info.world > 1 and not dist.is_initialized()
    dev = resolve_device(device)
    if info.world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    if started_dist:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        return _run(catalog, run_dir, cfg, ckpt, info, dev, progress and info.main, stop_after, clear)
    finally:
        if started_dist:
            dist.destroy_process_group()


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


def build_training(cfg: PretrainConfig, device: torch.device, world: int = 1) -> tuple[SimCLRModel, torch.optim.Optimizer, nn.Module, SimCLRAugment]:
    """Model (on ``device``, in its memory format), optimiser, NT-Xent loss and augmentation of a run.

    With ``world`` > 1 the loss gathers projections from all processes (negatives from
    the global batch) and, on CUDA, batch norm is synchronised, as SimCLR does.
    """
    from lightly.loss import NTXentLoss

    model = build_model(cfg.model)
    if world > 1 and device.type == "cuda" and cfg.model.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device).to(memory_format=memory_format(cfg.model, device))
    optimizer = build_optimizer(model, cfg.train)
    criterion = NTXentLoss(temperature=cfg.loss.temperature, gather_distributed=world > 1)
    return model, optimizer, criterion, SimCLRAugment(cfg.augment)


def _run(catalog, run_dir: Path, cfg: PretrainConfig, ckpt: dict | None, info: DistInfo, dev: torch.device,
         progress: bool, stop_after: int | None, clear: bool = False) -> PretrainResult:
    torch.manual_seed(cfg.train.seed)
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
    cache = cache.to(cache_placement(cache.nbytes, dev, cfg.data.cache_device, cfg.data.gpu_fraction))

    model, optimizer, criterion, augment = build_training(cfg, dev, info.world)
    pre = cfg.preprocessing
    metrics_path = run_dir / METRICS_FILE

    epoch, step, metrics = 0, 0, []
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"], strict=True)
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{run_dir / TRAIN_CHECKPOINT}: does not fit this config: {str(e).splitlines()[0]}") from None
        epoch, step, metrics = ckpt["epoch"], ckpt["step"], list(ckpt["metrics"])
        if len(ckpt["rng"]) == info.world:
            set_rng_state(ckpt["rng"][info.rank], dev)
        else:
            # Another process count: the data shards differ anyway, so exact continuation is impossible.
            torch.manual_seed(cfg.train.seed + 1000 * info.rank + step)
        if info.main:
            _truncate_metrics(metrics_path, epoch)
    else:
        torch.manual_seed(cfg.train.seed + 1000 * info.rank)  # each process augments differently
    if info.main:
        _start_run_dir(run_dir, clear)

    train_model: nn.Module = model
    if info.world > 1:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    if cfg.model.compile:
        train_model = torch.compile(train_model)

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
            "loss": _mean_over_ranks(loss, dev, info),
            "lr": lr_at(step - 1, cfg.train, steps_per_epoch),
            "proxy_top1": retrieval_proxy(model.encoder, pre, cache, proxy, dev, cfg.eval.batch_size),
            "images_per_s": steps_per_epoch * cfg.train.batch_size * info.world / seconds,
            "seconds": seconds,
        }
        metrics.append(row)
        if info.main:
            _append_metrics(metrics_path, row)
        if epoch % cfg.train.checkpoint_every == 0 or epoch == last:
            rng = _all_ranks(rng_state(dev), info)
            if info.main:
                save_training_checkpoint(run_dir / TRAIN_CHECKPOINT, model, optimizer, config=to_dict(cfg), epoch=epoch,
                                         step=step, rng=rng, metrics=metrics)
                save_encoder(run_dir / ENCODER_FILE, model.encoder, pre,
                             meta={"config": to_dict(cfg), "epochs": epoch, "step": step, "metrics": metrics,
                                   "catalog": str(catalog), "images": len(full)})
    return PretrainResult(run_dir, model, metrics, epoch)


def write_augment_preview(catalog: Path | str, out: Path | str, cfg: PretrainConfig, n: int = 8, seed: int = 0,
                          force: bool = False) -> Path:
    """Writes a PNG grid of ``n`` catalog photos with two augmented views each (CPU).

    Args:
        force: replace a PNG that this program wrote earlier.

    Raises:
        SimclrWatchesError: ``out`` may not be written (checked before the catalog is read).
    """
    out = Path(out)
    prepare_output(out, PNG, force=force, inputs=[catalog])
    cache = build_cache(catalog, cfg.data.cache_size, progress=False, limit=n)
    torch.manual_seed(seed)
    grid = preview_grid(cache.images, cache.masks, SimCLRAugment(cfg.augment))
    with atomic_path(out) as tmp:
        grid.save(tmp, format="PNG", pnginfo=png_info())
    return out
