"""Where weights files are on this machine: the download cache, the repository's ``artifacts/``.

:func:`download` fetches a registered (or any verified) file into the cache with
:func:`simclr_watches.weights.fetch.fetch`; :func:`local_copy` finds the copy a
registry entry loads from.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from pathlib import Path

from simclr_watches.core.errors import CheckpointError
from simclr_watches.weights._registry import REPO_ROOT, WeightsEntry, load_registry

ARTIFACTS_DIR = REPO_ROOT / "artifacts"
UNREGISTERED_DIR = "unregistered"


def cache_dir() -> Path:
    """Where downloaded weights live: ``$SIMCLR_WATCHES_HOME``, default ``~/.cache/simclr-watches``."""
    return Path(os.environ.get("SIMCLR_WATCHES_HOME") or Path.home() / ".cache" / "simclr-watches")


def local_copy(entry: WeightsEntry) -> Path:
    """Where the file of a url/artifact entry is: the download cache first, then ``artifacts/`` (not verified here).

    Raises:
        CheckpointError: no copy at all.
    """
    candidates = [cache_dir() / f"{entry.name}.safetensors"]
    if entry.artifact:
        candidates.append(ARTIFACTS_DIR / entry.artifact)
    for path in candidates:
        if path.is_file():
            return path
    raise CheckpointError(f"{entry.name}: registered, but not downloaded; run `simclr-watches download {entry.name}`")


def unregistered_path(url: str, sha256: str, name: str | None = None) -> Path:
    """Where a download without a registry entry is kept: ``cache_dir()/unregistered/TAG-FILE``.

    Apart from the registered files (``cache_dir()/NAME.safetensors``), so it can neither
    replace nor shadow one. ``TAG`` is derived from the URL and the digest, so two URLs
    (or two versions behind one URL) never share a file; ``FILE`` is ``NAME.safetensors``
    or the URL's file name, reduced to safe characters.
    """
    base = f"{name}.safetensors" if name else Path(urllib.parse.urlsplit(url).path).name
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".") or "weights"
    tag = hashlib.sha256(f"{url}\n{sha256.lower()}".encode()).hexdigest()[:16]
    return cache_dir() / UNREGISTERED_DIR / f"{tag}-{safe}"


def download(name: str | None = None, url: str | None = None, sha256: str | None = None,
             timeout: float | None = None, progress: bool = True) -> Path:
    """Fetches registered (or, with ``url`` and ``sha256``, any) weights into :func:`cache_dir`.

    Args:
        name: a registry name; its url, sha256 and size are used. ``url`` may name a
            mirror, whose bytes must still be the registered ones.
        url: download address; for an unregistered file ``sha256`` is required too.
        sha256: expected hex digest; for a registered name it must be the registry's.
        timeout: seconds without data before the server counts as stalled.
        progress: show a progress bar on stderr.

    Returns:
        The verified file: ``cache_dir()/NAME.safetensors`` for a registered name, else
        :func:`unregistered_path`, which can never be a registered file's.

    Raises:
        CheckpointError: nothing to download, a bad or non-registry digest, or any
            transport or verification failure.
    """
    from simclr_watches.weights.fetch import DEFAULT_TIMEOUT, fetch, is_sha256  # http.client: only when downloading

    entry = load_registry().get(name) if name else None
    if name and entry is None and not url:
        raise CheckpointError(f"{name}: not a registered model name; pass --url and --sha256 for another file")
    if entry and entry.members:
        raise CheckpointError(f"{name}: an ensemble of {', '.join(entry.members)}, with no file of its own; "
                              "download those members that have a url")
    if entry and sha256 and sha256.lower() != entry.sha256:
        raise CheckpointError(f"{name}: --sha256 {sha256} is not the registered {entry.sha256}; a registered name only "
                              f"holds its registered file (drop NAME to download another file)")
    url = url or (entry.url if entry else None)
    sha256 = sha256 or (entry.sha256 if entry else None)
    if not url:
        if entry and entry.package:
            source = f"ships in the package {entry.package}"
        elif entry and entry.artifact:
            source = f"ships in the repository as artifacts/{entry.artifact} and has no url (pass --url to fetch a mirror)"
        else:
            source = "has no url"
        raise CheckpointError(f"{name}: {source}; nothing to download")
    if not sha256 or not is_sha256(sha256):
        raise CheckpointError(f"{url}: a sha256 (64 hex digits) is required to verify the download, got {sha256!r}")
    dest = cache_dir() / f"{name}.safetensors" if entry else unregistered_path(url, sha256, name)
    return fetch(url, dest, sha256, size=entry.size if entry else None,
                 timeout=DEFAULT_TIMEOUT if timeout is None else timeout, progress=progress)
