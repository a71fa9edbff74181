"""Atomic writes: build under a temporary name in the same folder, then rename.

A crash or Ctrl-C mid-write leaves the temporary behind, never a half-written
file or folder under the real name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yields a temporary file path next to ``target``; renames it onto ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: Path | str, replace: bool = False) -> Iterator[Path]:
    """Yields an empty temporary folder; on success it becomes ``target``.

    With ``replace``, an existing ``target`` is swapped out only after the new
    folder is complete, so a failed rebuild keeps the old one.

    Raises:
        FileExistsError: ``target`` exists and ``replace`` is False.
    """
    target = Path(target)
    if target.exists() and not replace:
        raise FileExistsError(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = target.with_name(f".{target.name}.tmp-{tag}")
    tmp.mkdir()
    try:
        yield tmp
        old = target.with_name(f".{target.name}.old-{tag}")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
