"""Stopping a run whose loss or weights became NaN or infinite, before it saves anything from them.

A diverged run (too high a learning rate, an exploding gradient) would otherwise train
on, log ``nan`` and overwrite its last good checkpoint with useless weights.
"""

from __future__ import annotations

import torch
from torch import nn

from simclr_watches.core.errors import SimclrWatchesError


class TrainingDivergedError(SimclrWatchesError):
    """The loss or the weights became NaN or infinite: the run stopped before saving anything from them."""

    def __init__(self, what: str, epoch: int, step: str):
        self.epoch = epoch
        super().__init__(
            f"{what} at epoch {epoch}, {step}: training diverged and stopped; nothing from this epoch was saved. "
            "Lower train.lr or set train.grad_clip (e.g. --set train.grad_clip=1.0); --resume continues from the "
            "last checkpoint"
        )


class NonFiniteWatch:
    """The first optimiser step of an epoch whose loss was NaN or infinite, remembered on the device.

    Testing the loss on the host after every step would make the host wait for the
    device every step and stall the GPU's queue. Instead :meth:`record` updates two
    device tensors (no wait), and :meth:`check` reads them where the loss is read
    anyway: every few steps (``loop.READ_EVERY``) and at the end of the epoch. The run
    may take a few more steps on weights that are then thrown away, but the error
    names the exact step. Under DDP the processes may notice it a read apart (a NaN
    gradient reaches every process through the all-reduce); the first to raise ends
    the job, as torchrun then stops the others.
    """

    def __init__(self, device: torch.device):
        self.step = torch.full((), -1, dtype=torch.int64, device=device)  # -1: none yet
        self.loss = torch.zeros((), device=device)

    def record(self, loss: torch.Tensor, step: int) -> None:
        """Notes ``step`` (global, 1-based) if its ``loss`` (a scalar tensor) is the first non-finite one."""
        first = ~torch.isfinite(loss) & (self.step < 0)
        self.step = torch.where(first, step, self.step)
        self.loss = torch.where(first, loss, self.loss)

    def check(self, epoch: int) -> None:
        """Raises if a non-finite loss was recorded (reading waits for the device).

        Raises:
            TrainingDivergedError: naming ``epoch`` (1-based), the step and the loss.
        """
        step = int(self.step)
        if step >= 0:
            raise TrainingDivergedError(f"the loss became {float(self.loss)}", epoch, f"step {step}")


def check_finite_weights(model: nn.Module, epoch: int, step: int) -> None:
    """Raises if a weight is NaN or infinite (one device wait), e.g. after an update whose loss was still finite.

    Raises:
        TrainingDivergedError: naming ``epoch`` (1-based) and the step by which it happened.
    """
    if not torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all():
        raise TrainingDivergedError("the weights became non-finite", epoch, f"by step {step}")
