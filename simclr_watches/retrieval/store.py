"""The index folder on disk (format 3): file names, the writers' lock, and committing a new state.

A folder holds one mutable name, the manifest ``index.json``, and immutable data files it
names (``forest-G.ann``, ``vectors-G.npy``, the item columns ``ids-G.npy`` ..., optionally
``projection-G.npy`` and ``added-G.npy``; G is the manifest's ``generation`` when the file
was written). A writer never modifies a file: under the lock
(:func:`writer_lock`) it writes new data files under fresh names, swaps the manifest
(temp, fsync, rename, fsync the folder), then deletes the files the new manifest does
not name (:func:`commit`). Killed at any moment, it leaves the old manifest with all of
its files, or the new one with all of its files, plus leftovers the next writer removes.

Readers take no lock (:func:`simclr_watches.retrieval.index.load_index`): they read the
manifest, then open the files it names from the same folder; a file deleted in between
means a writer committed meanwhile, and they start over.

Test hook: with the environment variable ``SIMCLR_WATCHES_CRASH_AT=N`` set, a writer
kills itself (SIGKILL) at the N-th :func:`crash_point` of its process: before each data
file's rename, after it, after the manifest swap and after each deletion. Unset (always,
outside the crash tests) it does nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from simclr_watches.core.atomic import atomic_path, clean_stale, temp_target, write_text_atomic
from simclr_watches.core.errors import IndexFormatError
from simclr_watches.core.files import open_in_folder

SIDECAR_FILE = "index.json"  # the manifest: the only name whose content changes
LOCK_FILE = ".lock"  # writers hold an exclusive flock on it
# Data files a manifest may name, by role: the forest, its rows and its items' columns (written together),
# the PCA that made the rows, the rows added since the forest was built.
FOREST_ROLES = ("forest", "vectors", "ids", "sha256", "sizes", "offsets", "paths")
FILE_KINDS = {**{role: ".npy" for role in FOREST_ROLES}, "forest": ".ann", "projection": ".npy", "added": ".npy"}
_DATA_NAME = re.compile(rf"^(?P<kind>{'|'.join(FILE_KINDS)})-(?P<gen>[0-9]{{1,15}})\.(?P<ext>ann|npy)$")
MAX_GENERATION = 10**15 - 1
# Format 1 (before issue 14) names, recognised so that --force can replace such a folder.
V1_FILES = ("index.ann", "embeddings.npy")

LOCK_TIMEOUT_S = 60.0  # a second writer waits this long for the first, then fails
LOCK_POLL_S = 0.02
CRASH_ENV = "SIMCLR_WATCHES_CRASH_AT"
_crash_points = 0


def data_name(kind: str, generation: int) -> str:
    """The file name of a ``kind`` data file (``forest``, ``vectors``, ``added``) written at ``generation``."""
    return f"{kind}-{generation}{FILE_KINDS[kind]}"


def name_generation(kind: str, name: Any) -> int | None:
    """The generation in a data file name of role ``kind``; None if ``name`` is not such a name.

    Names come from a file that may be hostile: only ``KIND-DIGITS.EXT`` passes, never a
    path, so a manifest can name nothing outside its folder.
    """
    m = _DATA_NAME.match(name) if isinstance(name, str) else None
    if m is None or m["kind"] != kind or f".{m['ext']}" != FILE_KINDS[kind]:
        return None
    return int(m["gen"])


def is_data_name(name: str) -> bool:
    """Whether ``name`` is the name of a data file of some role."""
    return any(name_generation(kind, name) is not None for kind in FILE_KINDS)


def crash_point() -> None:
    """The test hook of the module docstring: SIGKILLs this process at the N-th call when asked to."""
    global _crash_points
    target = os.environ.get(CRASH_ENV)
    if not target:
        return
    _crash_points += 1
    if str(_crash_points) == target.strip():
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def writer_lock(directory: Path | str, timeout: float | None = None) -> Iterator[None]:
    """Holds the exclusive writer lock of an index folder (``.lock``, flock) for the block.

    Call it on a folder already known to be an index: it creates the lock file. If the
    folder was replaced while waiting (``build-index --force``), the new one is locked.

    Args:
        timeout: seconds to wait for another writer; default LOCK_TIMEOUT_S.

    Raises:
        IndexFormatError: another writer held the lock for ``timeout`` seconds, or the
            lock file cannot be made.
    """
    directory = Path(directory)
    timeout = LOCK_TIMEOUT_S if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while True:
        fd = _open_lock(directory)
        try:
            while not _try_flock(fd):
                if time.monotonic() >= deadline:
                    raise IndexFormatError(f"{directory}: another simclr-watches process is updating this index "
                                           f"(waited {timeout:g} s); try again when it is done")
                time.sleep(LOCK_POLL_S)
            if _same_file(directory / LOCK_FILE, fd):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # we locked a folder that has been replaced meanwhile: lock the new one
    try:
        yield
    finally:
        os.close(fd)


def _open_lock(directory: Path) -> int:
    return open_in_folder(directory, LOCK_FILE, os.O_RDWR | os.O_CREAT,
                          lambda path, why: IndexFormatError(f"{path}: cannot open the writers' lock: {why}"))


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _same_file(path: Path, fd: int) -> bool:
    try:
        now = os.stat(path)
    except OSError:
        return False
    opened = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


def named_files(meta: Mapping[str, Any]) -> set[str]:
    """The data file names a (validated) manifest refers to."""
    return set(meta["files"].values())


def commit(directory: Path, meta: Mapping[str, Any], writes: Mapping[str, Callable[[Path], None]]) -> None:
    """Writes new data files, then swaps in the manifest naming them, then removes what it no longer names.

    Call it holding :func:`writer_lock`. Each data file and the manifest are written to a
    temporary, flushed to the disk and renamed; the folder is flushed after each rename.

    Args:
        meta: the new manifest (its ``files`` name the new files and the kept ones).
        writes: new data file name -> a function writing that file's content to the path given.
    """
    for name, write in writes.items():
        with atomic_path(directory / name, durable=True) as tmp:
            write(tmp)
            crash_point()
        crash_point()
    write_text_atomic(directory / SIDECAR_FILE, json.dumps(meta, indent=1), durable=True)
    crash_point()
    clean(directory, meta)


def clean(directory: Path, meta: Mapping[str, Any]) -> list[str]:
    """Removes the data files ``meta`` does not name and the temporaries of dead writers (and any v1 files).

    Returns:
        The names removed.
    """
    keep = named_files(meta)
    removed = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        name = entry.name
        if (is_data_name(name) or name in V1_FILES) and name not in keep and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / name)
            removed.append(name)
            crash_point()
        elif (target := temp_target(name)) is not None and (target == SIDECAR_FILE or is_data_name(target)):
            removed += [p.name for p in clean_stale(directory / target)]
    return removed
