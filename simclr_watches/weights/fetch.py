"""Verified HTTP download: resumable ``.part`` file, size and sha256 check, atomic rename.

The final name only ever holds a file whose sha256 was checked. A ``.part``
file is a prefix of the real file (kept after a dropped connection so the next
run can resume it) or is deleted.
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from simclr_watches.core.errors import CheckpointError
from simclr_watches.core.files import sha256_file
from simclr_watches.core.progress import progress_bar

DEFAULT_TIMEOUT = 30.0
MAX_REDIRECTS = 5
CHUNK = 1 << 16


class _CappedRedirects(urllib.request.HTTPRedirectHandler):
    # urllib's own cap (10) is generous and its loop message is cryptic; ours is caught below.
    max_redirections = MAX_REDIRECTS
    max_repeats = 2


_opener = urllib.request.build_opener(_CappedRedirects)


def is_sha256(text: str) -> bool:
    """Whether ``text`` is a sha256 hex digest (64 hex digits)."""
    return re.fullmatch(r"[0-9a-fA-F]{64}", text) is not None


def fetch(url: str, dest: Path | str, sha256: str, size: int | None = None,
          timeout: float = DEFAULT_TIMEOUT, progress: bool = True) -> Path:
    """Downloads ``url`` to ``dest`` unless a verified copy is already there.

    Resumes ``dest.part`` with an HTTP Range request; a server that answers the
    whole file (200) instead restarts it from zero.

    Args:
        url: http(s) address of the file.
        dest: final path; written only after the checks pass.
        sha256: expected hex digest.
        size: expected byte size, if known.
        timeout: seconds without data before the server counts as stalled.
        progress: show a progress bar on stderr.

    Returns:
        ``dest``.

    Raises:
        CheckpointError: HTTP error, redirect loop, stalled or closed connection,
            wrong size or sha256. Names the URL and the problem.
    """
    dest = Path(dest)
    sha256 = sha256.lower()
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is None or have < size:
        _stream(url, part, have, size, timeout, progress)
    got = part.stat().st_size
    if size is not None and got != size:
        part.unlink()
        raise CheckpointError(f"{url}: received {got} bytes, expected {size}; deleted the download")
    digest = sha256_file(part)
    if digest != sha256:
        part.unlink()
        raise CheckpointError(f"{url}: sha256 {digest} does not match the expected {sha256}; deleted the download")
    os.replace(part, dest)
    return dest


def _stream(url: str, part: Path, have: int, size: int | None, timeout: float, progress: bool) -> None:
    """Appends the rest of ``url`` from byte ``have`` to ``part`` (or rewrites it if the server restarts)."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = _opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if 300 <= e.code < 400:
            raise CheckpointError(f"{url}: too many redirects (more than {MAX_REDIRECTS}, or a loop)") from None
        if have:  # e.g. 416: the partial file no longer fits the server's file
            part.unlink()
        raise CheckpointError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError):
            raise CheckpointError(f"{url}: stalled: no answer for {timeout:g} s") from None
        raise CheckpointError(f"{url}: cannot connect: {reason}") from None
    with response:
        resumed = response.status == 206 and (response.headers.get("Content-Range") or "").startswith(f"bytes {have}-")
        start = have if resumed else 0
        length = response.headers.get("Content-Length")
        expected = start + int(length) if length is not None else size
        with open(part, "ab" if resumed else "wb") as f, \
                progress_bar(f"download {part.name[:-5]}", expected or 0, enabled=progress) as advance:
            advance(start)
            try:
                while block := response.read1(CHUNK):  # read1: keep what arrived before a stall
                    f.write(block)
                    advance(len(block))
            except TimeoutError:
                raise CheckpointError(f"{url}: stalled: no data for {timeout:g} s; kept {part} to resume") from None
            except (http.client.IncompleteRead, OSError) as e:
                raise CheckpointError(f"{url}: connection lost ({e}); kept {part} to resume") from None
            got = f.tell()
    if expected is not None and got < expected:
        raise CheckpointError(f"{url}: truncated: the server closed after {got} of {expected} bytes; kept {part} to resume")
