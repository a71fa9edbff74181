"""Atomic writes: build under a temporary name in the same folder, then rename.

A crash or Ctrl-C mid-write leaves the temporary behind, never a half-written
file or folder under the real name. Temporaries are named
``.NAME.tmp-PID-XXXXXXXX`` (and a folder being swapped out ``.NAME.old-PID-XXXXXXXX``),
so a later write of the same target removes those of processes that no longer
run, and never those of a live concurrent one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterator

_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<role>tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$")


def temp_name(target: Path, role: str = "tmp") -> Path:
    """A fresh temporary path next to ``target`` that names this process.

    Args:
        role: ``tmp`` (being written) or ``old`` (the previous version being swapped out).
    """
    return target.with_name(f".{target.name}.{role}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def temp_target(name: str) -> str | None:
    """The target name a temporary of this module was made for, or None if ``name`` is not one."""
    m = _TEMP_NAME.match(name)
    return m["target"] if m else None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a process of another user counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, OSError):
        return True  # exists but is not ours, or cannot be told: keep its files
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_stale(target: Path | str) -> list[Path]:
    """Removes the temporaries that dead processes left next to ``target``.

    A ``.old-`` folder is kept while ``target`` itself is missing: a process killed
    between the two renames of a swap leaves the previous version only there.

    Returns:
        The paths removed.
    """
    target = Path(target)
    try:
        names = [e.name for e in os.scandir(target.parent) if e.name.startswith(f".{target.name}.")]
    except OSError:
        return []
    removed = []
    for name in names:
        m = _TEMP_NAME.match(name)
        if not m or m["target"] != target.name or pid_alive(int(m["pid"])):
            continue
        if m["role"] == "old" and not os.path.lexists(target):
            continue
        _remove(target.parent / name)
        removed.append(target.parent / name)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the umask."""
    return 0o666 & ~_umask()


def fsync_path(path: Path | str) -> None:
    """Flushes a file's or a folder's content to the disk (a folder: the names in it)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: Path | str, durable: bool = False) -> Iterator[Path]:
    """Yields a temporary file path next to ``target``; renames it onto ``target`` on success.

    The file gets the umask's default mode, whatever mode its writer created it with
    (some libraries write through private 0600 temporaries).

    Args:
        durable: also flush the file before the rename and the folder after it, so that
            the new content survives a power loss once this returns (temp, fsync, rename,
            fsync the folder).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    tmp = temp_name(target)
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, default_file_mode())
            if durable:
                fsync_path(tmp)
        os.replace(tmp, target)
        if durable:
            fsync_path(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(target: Path | str, text: str, durable: bool = False) -> Path:
    """Writes ``text`` (UTF-8) to ``target`` through :func:`atomic_path`; returns ``target``."""
    with atomic_path(target, durable=durable) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


@contextlib.contextmanager
def atomic_dir(target: Path | str, replace: bool = False) -> Iterator[Path]:
    """Yields an empty temporary folder; on success it becomes ``target``.

    With ``replace``, an existing ``target`` folder is swapped out only after the new
    folder is complete, so a failed rebuild keeps the old one. Deciding *whether* an
    existing folder may be replaced is the caller's job (see :mod:`simclr_watches.core.outputs`).

    Raises:
        FileExistsError: ``target`` exists and ``replace`` is False.
        NotADirectoryError: ``target`` exists and is not a folder (a file is never replaced by a folder).
    """
    target = Path(target)
    if os.path.lexists(target) and (target.is_symlink() or not target.is_dir()):
        raise NotADirectoryError(target)
    if target.exists() and not replace:
        raise FileExistsError(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    tmp = temp_name(target)
    tmp.mkdir()
    try:
        yield tmp
        old = temp_name(target, "old")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
