"""The training loop: the learning-rate schedule, the data order, one SimCLR step, one epoch.

Every collaborator (model, loss, optimiser, augmentation, catalog cache) is an argument,
so the loop runs the same for ``simclr-watches pretrain``, under DDP and in benchmarks.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from simclr_watches.model import Preprocessing
from simclr_watches.train.augment import SimCLRAugment
from simclr_watches.train.catalog_cache import CatalogCache
from simclr_watches.train.config import PretrainConfig, TrainConfig
from simclr_watches.train.divergence import NonFiniteWatch, check_finite_weights
from simclr_watches.train.simclr import memory_format

READ_EVERY = 20  # steps between reads of the loss on the host (each waits for the device)


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


def batch_order(n: int, batch_size: int, epoch: int, seed: int) -> list[torch.Tensor]:
    """Index batches of one epoch; the incomplete last batch is dropped (NT-Xent wants full batches).

    The order depends only on (seed, epoch), not on the global RNG, so it is the same
    after a resume.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen)
    return [perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def simclr_step(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                device: torch.device, grad_clip: float = 0.0) -> torch.Tensor:
    """One optimiser step on a batch of view pairs.

    Args:
        x: (2B, 3, S, S) normalised; rows i and B + i are the two views of photo i. Both
            views go through one forward pass, so batch norm sees the whole batch.
        grad_clip: when > 0, the gradients of all parameters are scaled down together so that
            their global L2 norm is at most this (Pascanu et al. 2013, arXiv:1211.5063); on the
            device, without waiting for it. Under DDP they are the all-reduced gradients, so
            every process scales alike.

    Returns:
        the loss, a detached scalar tensor (reading it waits for the device).
    """
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        z = model(x)
    z1, z2 = z.float().chunk(2)
    loss = criterion(z1, z2)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()


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
    """One pass over ``cache``: augment, embed both views, NT-Xent, gradient clipping (``train.grad_clip``), AdamW step.

    Args:
        model: the training model (possibly DDP- or compile-wrapped); maps views to projections.
        epoch: 0-based epoch (with ``cfg.train.seed``, it fixes the order of the batches).
        step: global optimiser step at the start of the epoch (drives ``lr_at``).

    Returns:
        (global step at the end, mean loss of the epoch).

    Raises:
        TrainingDivergedError: the loss or the weights became NaN or infinite. It is noticed
            within ``READ_EVERY`` steps, and at the latest at the end of the epoch, so an epoch
            never ends with such weights.
    """
    model.train()
    batches = batch_order(len(cache), cfg.train.batch_size, epoch, cfg.train.seed)
    memory = memory_format(cfg.model, device)
    total = torch.zeros((), device=device)
    watch = NonFiniteWatch(device)
    for idx in batches:
        lr = lr_at(step, cfg.train, len(batches))
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, masks = cache.batch(idx, device)
        v1, v2 = augment(images, masks)
        x = preprocessing.normalize(torch.cat([v1, v2])).contiguous(memory_format=memory)
        loss = simclr_step(model, criterion, optimizer, x, device, cfg.train.grad_clip)
        total += loss
        step += 1
        watch.record(loss, step)
        # Reading the loss waits for the GPU; do it rarely so the host keeps queueing work ahead.
        if step % READ_EVERY == 1:
            advance(1, loss=float(loss))
            watch.check(epoch + 1)  # the device is idle now: this read costs no further wait
        else:
            advance(1)
    mean = float(total) / max(1, len(batches))
    watch.check(epoch + 1)
    check_finite_weights(model, epoch + 1, step)
    return step, mean
