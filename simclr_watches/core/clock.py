"""The time outputs record: UTC, to the second, ISO 8601."""

from __future__ import annotations

import datetime as dt


def utc_now() -> str:
    """Now in UTC as ``2025-01-01T12:00:00+00:00`` (what manifests and feedback lines record)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
