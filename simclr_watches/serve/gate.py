"""Admission of requests that hold photos in memory: at most N at once, the next one refused at once.

A queue that grows with the clients would let many slow uploads exhaust memory; a
refusal (503, "busy") lets a client retry while the server keeps its bound.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

from simclr_watches.serve.errors import ApiError


class Gate:
    """Admits at most ``limit`` holders at once; one more gets ApiError 503 without waiting.

    Args:
        limit: holders at once.
        on_refuse: called for each refusal (to count it).
    """

    def __init__(self, limit: int, on_refuse: Callable[[], None] = lambda: None):
        self.limit, self.on_refuse = limit, on_refuse
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """Holders now."""
        return self._held

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Holds one place for the block.

        Raises:
            ApiError: 503 when all ``limit`` places are held.
        """
        with self._lock:
            if self._held >= self.limit:
                self.on_refuse()
                raise ApiError(503, f"busy: {self.limit} requests are being served; try again shortly")
            self._held += 1
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1
