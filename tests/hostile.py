"""Helpers for tests of hostile input (issue 12): the CLI as a real process, the contract of a user error
(exit 2, one line on stderr, no traceback), and a pickle that would run code if loaded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import torch


def run_cli(*args, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs ``python -m simclr_watches ARGS`` (this interpreter, PYTHONPATH inherited); text output captured."""
    return subprocess.run([sys.executable, "-m", "simclr_watches", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=timeout)


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Asserts exit code 2 and a last stderr line ``error: ...`` holding every fragment; returns that line.

    Progress bars and ``skipped PATH: REASON`` reports may come before it; no other error line.
    """
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), proc.stderr[-3000:]
    assert [line for line in lines[:-1] if line.startswith("error")] == [], proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raises TimeoutError in the block once it has run ``seconds`` (POSIX): a test that would hang fails instead."""

    def expire(*_) -> None:
        raise TimeoutError(f"blocked for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class _Payload:
    """Unpickling this creates the folder ``marker``: proof that a file's code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def pickle_file(path: Path) -> Path:
    """A torch file holding an object whose unpickling would create ``path.with_name("ran")``; returns ``path``."""
    torch.save({"conv1.weight": torch.zeros(1), "x": _Payload(path.with_name("ran"))}, path)
    return path
