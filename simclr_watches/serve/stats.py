"""What a running server has done: searches served, their latency, uptime (``GET /api/stats``)."""

from __future__ import annotations

import collections
import threading
import time

import numpy as np

LATENCY_WINDOW = 1000  # percentiles are over the last this many searches


class Stats:
    """Counters of one server, safe to update from several threads."""

    def __init__(self, window: int = LATENCY_WINDOW):
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._latencies: collections.deque[float] = collections.deque(maxlen=window)
        self.searches = 0
        self.busy = 0  # requests refused with 503

    def searched(self, ms: float) -> None:
        """Counts one answered search that took ``ms`` milliseconds."""
        with self._lock:
            self.searches += 1
            self._latencies.append(ms)

    def refused(self) -> None:
        """Counts one request refused because the server was busy."""
        with self._lock:
            self.busy += 1

    def snapshot(self) -> dict[str, float | int | None]:
        """``uptime_s``, ``searches``, ``busy_refused`` and ``p50_ms``/``p99_ms`` over the last searches (None before any)."""
        with self._lock:
            lat = np.array(self._latencies, dtype=np.float64)
            searches, busy = self.searches, self.busy
        p50, p99 = (None, None) if lat.size == 0 else (round(float(np.percentile(lat, q)), 1) for q in (50, 99))
        return {"uptime_s": round(time.monotonic() - self.started, 1), "searches": searches, "busy_refused": busy,
                "p50_ms": p50, "p99_ms": p99}
