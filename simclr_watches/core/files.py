"""Reading files a user hands in: regular files only, bounded in size, every failure a FileReadError.

A path typed by a user may name anything: a folder, a FIFO that blocks forever, a
device like ``/dev/zero`` that never ends, a broken symbolic link or a 40 GB file.
:func:`open_regular` opens only a regular file, decided by ``fstat`` on the opened
file before a byte is read, and :func:`read_limited` reads one no larger than a
limit, so none of these can hang the program or exhaust its memory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from simclr_watches.core.errors import FileReadError

MiB = 1 << 20

# Text files a user hands in (a config TOML, a --metrics JSON) are a few KB; this is far above.
MAX_TEXT_BYTES = 8 * MiB

_KINDS = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISSOCK: "a socket",
          stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    return next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")


def _open_failure(path: Path, e: OSError) -> str:
    """Why ``path`` could not be opened, in words (a broken symbolic link names its target)."""
    if isinstance(e, FileNotFoundError) and path.is_symlink():
        return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
    return f"cannot read file ({e.strerror or e})"


def open_regular(path: Path | str, error: Callable[[Path, str], FileReadError] = FileReadError) -> BinaryIO:
    """``path`` opened for binary reading, if it is a regular file.

    The file is opened without blocking (a FIFO is refused, not waited on) and its type
    is checked on the open file, so it cannot be swapped for another between the check
    and the read.

    Args:
        path: the file.
        error: the FileReadError subclass raised (e.g. ImageReadError).

    Raises:
        FileReadError (``error``): missing, a broken link, unreadable or not a regular
            file; the message names the file and the reason.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise error(path, _open_failure(path, e)) from None
    return os.fdopen(_regular(fd, path, error, "cannot read file"), "rb")


def _regular(fd: int, path: Path, error: Callable[[Path, str], Exception], failure: str) -> int:
    """``fd`` if the file it opens is a regular file; else it is closed and ``error`` raised."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        os.close(fd)
        raise error(path, f"{failure} ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise error(path, f"{_kind(mode)}, not a file")
    return fd


def open_in_folder(directory: Path | str, name: str, flags: int, error: Callable[[Path, str], Exception], *,
                   dir_fd: int | None = None, mode: int = 0o666) -> int:
    """A file descriptor of the regular file ``name`` in ``directory``, never reached through a symbolic link.

    For files inside a folder the user hands in (an index folder): a planted symbolic link
    (``feedback.jsonl -> ~/.bashrc``) is refused rather than followed, a FIFO never blocks
    (``O_NONBLOCK``), and the type is checked on the opened file (``fstat``), so it cannot be
    swapped between the check and the use.

    Args:
        directory: the folder, named in messages (and opened through unless ``dir_fd`` is given).
        name: a plain file name inside it.
        flags: ``os.open`` flags (``O_NOFOLLOW``, ``O_NONBLOCK`` and ``O_CLOEXEC`` are added).
        error: makes the exception raised from ``(path, reason)``.
        dir_fd: an open descriptor of ``directory`` to open ``name`` relative to.
        mode: permissions of a file ``O_CREAT`` makes.

    Raises:
        FileNotFoundError: no such file (and no ``O_CREAT``): the caller decides what that means.
        Exception (``error``): a symbolic link, not a regular file, or not openable; the reason says which.
    """
    path = Path(directory) / name
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path if dir_fd is None else name, flags, mode, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as e:
        link = e.errno == errno.ELOOP or (e.errno == errno.EMLINK and os.path.islink(path))
        raise error(path, "a symbolic link, not a file (refused)" if link
                    else f"cannot open ({e.strerror or e})") from None
    return _regular(fd, path, error, "cannot open")


@contextlib.contextmanager
def _open_limited(path: Path, max_bytes: int | None, error: Callable[[Path, str], FileReadError]) -> Iterator[BinaryIO]:
    """:func:`open_regular`, its size checked on the open file; a read failing in the block is ``error`` too."""
    with open_regular(path, error) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            if max_bytes is not None and size > max_bytes:
                raise error(path, f"too large: {size} bytes exceeds the limit of {max_bytes}")
            yield f
        except OSError as e:
            raise error(path, f"cannot read file ({e.strerror or e})") from None


def read_limited(path: Path | str, max_bytes: int,
                 error: Callable[[Path, str], FileReadError] = FileReadError) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` bytes.

    The file is opened with :func:`open_regular` and its size is checked on the open
    file before anything is read; at most ``max_bytes`` bytes are ever read, even from
    a file that grows meanwhile.

    Args:
        path: the file.
        max_bytes: largest size accepted.
        error: the FileReadError subclass raised (e.g. ImageReadError).

    Raises:
        FileReadError (``error``): missing, a broken link, unreadable, not a regular
            file, or larger than ``max_bytes``; the message names the file and the reason.
    """
    path = Path(path)
    with _open_limited(path, max_bytes, error) as f:
        data = read_fd_limited(f.fileno(), max_bytes)
    if len(data) > max_bytes:
        raise error(path, f"too large: more than the limit of {max_bytes} bytes")
    return data


def read_fd_limited(fd: int, max_bytes: int) -> bytes:
    """The bytes of the open file ``fd`` from its position to its end, or ``max_bytes + 1`` of them.

    A result longer than ``max_bytes`` means the file is too large. The size ``fstat``
    gives is read in one call, so the usual file is one allocation; a file that grew
    since is read on in chunks, never past the limit.
    """
    chunks, size, want = [], 0, min(os.fstat(fd).st_size, max_bytes) + 1
    while size <= max_bytes and (chunk := os.read(fd, want)):
        chunks.append(chunk)
        size += len(chunk)
        want = min(MiB, max_bytes + 1 - size)
    return b"".join(chunks)


def read_text_limited(path: Path | str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A UTF-8 text file of at most ``max_bytes`` bytes (see :func:`read_limited`).

    Raises:
        FileReadError: unreadable, not a regular file, too large, or not UTF-8 text.
    """
    data = read_limited(path, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileReadError(path, f"not UTF-8 text (byte {e.start})") from None


def read_json(path: Path | str, max_bytes: int = MAX_TEXT_BYTES) -> Any:
    """A JSON file of at most ``max_bytes`` bytes, parsed.

    Raises:
        FileReadError: unreadable, not a regular file, too large, or not JSON (the reason says which).
    """
    try:
        return json.loads(read_text_limited(path, max_bytes))
    except FileReadError as e:
        reason = e.reason
    except ValueError as e:
        reason = str(e)
    except RecursionError:
        reason = "nested too deeply"
    raise FileReadError(path, f"not a readable JSON file: {reason}")


def sha256_limited(path: Path | str, max_bytes: int | None = None,
                   error: Callable[[Path, str], FileReadError] = FileReadError, chunk: int = MiB) -> tuple[str, int]:
    """The sha256 hex digest and byte count of a regular file, hashed ``chunk`` bytes at a time (memory bounded).

    Opened as :func:`read_limited` opens a file (a regular file only, its size checked
    before reading); at most ``max_bytes + 1`` bytes are read, even from a file that grows.

    Args:
        max_bytes: largest size accepted; None: any.
        error: the FileReadError subclass raised (e.g. ImageReadError).

    Raises:
        FileReadError (``error``): missing, a broken link, unreadable, not a regular file,
            or larger than ``max_bytes``.
    """
    path = Path(path)
    h, n = hashlib.sha256(), 0
    with _open_limited(path, max_bytes, error) as f:
        while (max_bytes is None or n <= max_bytes) and (block := f.read(chunk)):
            h.update(block)
            n += len(block)
    if max_bytes is not None and n > max_bytes:
        raise error(path, f"too large: more than the limit of {max_bytes} bytes")
    return h.hexdigest(), n


def sha256_file(path: Path | str, chunk: int = MiB) -> str:
    """The sha256 hex digest of a regular file's bytes (:func:`sha256_limited`, any size).

    Raises:
        FileReadError: missing, unreadable or not a regular file.
    """
    return sha256_limited(path, chunk=chunk)[0]
