"""Output-space ensembles: several encoders as one, every member's cosine weighing the same."""

from __future__ import annotations

import concurrent.futures as cf
import math
import threading
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from simclr_watches.core.errors import CheckpointError
from simclr_watches.model.encoder import Encoder, shared_stages


class EnsembleEncoder(nn.Module):
    """Output-space ensemble of encoders: their unit embeddings, concatenated, over sqrt(n).

    The cosine of two ensemble embeddings is then the mean of the members' cosines: every
    member votes equally. Ensembling a fine-tuned model with its initialisation this way
    keeps what the initial model knew about shifts the fine-tuning data never showed
    (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022, output-space
    ensembles): here, SimCLR on clean packshots with ImageNet, which has seen real scenes.

    All members see the same input. Leading stages the members share (see
    :func:`shared_stages`; a SimCLR run with ``frozen_stages`` keeps its init's) are
    computed once, by the first member.

    Attributes:
        parallel: run the later members' own stages in a worker thread (one torch thread)
            while the calling thread runs the first member's: a query's two members on
            two cores, with no OpenMP team waiting on a descheduled thread (what makes
            two intra-op threads slower than one on a busy machine). For inference;
            the result is the same.

    Shapes:
        input: (B, 3, H, W), normalised for the members (they must agree on normalisation).
        forward: (B, sum of the members' D), unit L2 norm.
    """

    def __init__(self, members: Sequence[Encoder]):
        super().__init__()
        if len(members) < 2:
            raise CheckpointError("an ensemble needs at least two encoders")
        self.members = nn.ModuleList(members)
        self.arch = "+".join(m.arch for m in members)
        self.dim = sum(m.dim for m in members)
        self.shared = shared_stages(members)
        self.parallel = False

    def run_members(self, h: torch.Tensor, first: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    start: int | None = None) -> list[torch.Tensor]:
        """Every member's features from ``h``, the output of stages ``0..start`` (B, D_i) each, in member order.

        Args:
            first: what computes the first member's features from ``h`` (default its stages
                from ``start`` on), e.g. keeping its feature maps on the way.
            start: at most ``shared`` (the default).
        """
        start = self.shared if start is None else min(start, self.shared)
        first = first or (lambda t: self.run_member(0, t, start))
        later = lambda t: [self.run_member(i, t, start) for i in range(1, len(self.members))]  # noqa: E731
        if not self.parallel:
            return [first(h), *later(h)]
        pending = _worker().submit(_in_caller_grad_mode(later), h)
        return [first(h), *pending.result()]

    def run_member(self, i: int, h: torch.Tensor, start: int) -> torch.Tensor:
        """Member ``i``'s features (B, D_i) from ``h``, the output of stages ``0..start``."""
        return self.members[i].run_stages(h, start)

    def combine(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The embedding (B, dim) from :meth:`run_members`' features: unit parts, concatenated, over sqrt(n)."""
        parts = [F.normalize(f.float(), dim=1) for f in features]
        return torch.cat(parts, dim=1) / math.sqrt(len(parts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(self.run_members(self.members[0].run_stages(x, 0, self.shared)))


_WORKER: cf.ThreadPoolExecutor | None = None
_WORKER_LOCK = threading.Lock()


def _worker() -> cf.ThreadPoolExecutor:
    """The process's one worker thread for :attr:`EnsembleEncoder.parallel`, with one torch thread."""
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None:
            _WORKER = cf.ThreadPoolExecutor(1, thread_name_prefix="ensemble-member",
                                            initializer=torch.set_num_threads, initargs=(1,))
        return _WORKER


def _in_caller_grad_mode(fn: Callable[[torch.Tensor], list[torch.Tensor]]) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """``fn`` run under the calling thread's grad and inference modes (both are thread-local)."""
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def run(t: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(t)

    return run
