"""Full-file checks of immutable index files, run once per file and remembered in the user's cache.

Opening an index must not read a million rows each time, but its files are untrusted (a
crafted forest crashes Annoy), so the O(N) checks of docs/INDEX_FORMAT.md still run, once:
a check that passed is remembered as an empty file in ``$SIMCLR_WATCHES_HOME/verified/``
(default ``~/.cache/simclr-watches/verified/``, never the index folder, which is untrusted)
named by the sha256 of the check's name and version, its parameters, and each file's
``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``. Any change to a file changes its
ctime, which no user can set back, so a remembered check never vouches for other bytes.

Timestamps have a coarse clock tick: a file written again within the tick of its check
could keep its ctime. As git does with its "racily clean" index entries, a check is not
remembered while a file's mtime or ctime is under RACY_S old; and not at all if a file's
identity changed while it was checked.

The writer of an index vouches for the files it has just written and renamed into place
(:func:`vouching`): their checks are remembered without being run, so the first opening of a
fresh index is as cheap as any later one. Files from anywhere else (an index copied in,
another user's build) are checked at their first opening. What is left is git's race: a
process that rewrites a file with the same size within one clock tick (milliseconds) of its
writer's vouching would go unchecked; it needs write access to the folder while it is built.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from simclr_watches.core.atomic import write_text_atomic
from simclr_watches.weights import cache_dir

CHECKS_VERSION = 1  # bump when any check gets stricter: older verdicts are then ignored
RACY_S = 2.0
_VOUCHING: ContextVar[bool] = ContextVar("vouching", default=False)


def verified_dir() -> Path:
    """Where passed checks are remembered: ``<cache home>/verified``."""
    return cache_dir() / "verified"


def _identity(fd: int) -> tuple[int, int, int, int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _key(name: str, fds: Sequence[int], params: Any) -> tuple[str, bool]:
    """The check's cache name, and whether its files are old enough to remember it."""
    ids = [_identity(fd) for fd in fds]
    material = json.dumps([name, CHECKS_VERSION, params, ids], sort_keys=True)
    newest = max(max(i[3], i[4]) for i in ids)
    return hashlib.sha256(material.encode()).hexdigest(), time.time_ns() - newest >= RACY_S * 1e9


def once(name: str, fds: Sequence[int], params: Any, check: Callable[[], None]) -> bool:
    """Runs ``check`` unless it passed before on these very files; remembers a pass.

    Args:
        name: what is checked (part of the key).
        fds: the open files the check reads.
        params: everything else the verdict depends on (shapes, counts), JSON-serialisable.
        check: raises when the files are unusable.

    Returns:
        Whether the check ran (False: it had passed before).
    """
    key, settled = _key(name, fds, params)
    marker = verified_dir() / key
    if _VOUCHING.get():
        _remember(marker)
        return False
    if marker.is_file():  # a reader remembers only settled files: a match is these bytes, or the writer's
        return False
    check()
    if settled and _key(name, fds, params)[0] == key:
        _remember(marker)
    return True


@contextlib.contextmanager
def vouching() -> Iterator[None]:
    """Within it, :func:`once` remembers every check as passed without running it.

    Only for the writer of the files, right after it wrote them: it knows their bytes.
    """
    token = _VOUCHING.set(True)
    try:
        yield
    finally:
        _VOUCHING.reset(token)


def _remember(marker: Path) -> None:
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(marker, "")
    except OSError:
        pass  # a read-only cache only costs the check again next time
