"""What a server allows: limits on uploads and concurrency, and whether clients may write."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.core.files import MiB

# The environment variable ``serve --enable-writes`` reads its token from when --token is not given.
TOKEN_ENV = "SIMCLR_WATCHES_TOKEN"
MIN_TOKEN_CHARS = 16  # a shorter token is guessable


@dataclass(frozen=True)
class ServeSettings:
    """Limits and switches of one server.

    Attributes:
        max_upload_bytes: largest photo accepted, in bytes (larger: 413, refused while reading).
        max_pixels: largest photo accepted, in decoded pixels (larger: 413, refused before decoding).
        max_concurrent: requests that read or search photos at once; one more is answered 503 at once.
            Catalog photos for images and thumbnails are read at most ``max_concurrent`` at a time too.
            Memory is bounded by about ``max_concurrent * (max_add_files * max_upload_bytes + 3 * max_pixels)``
            for photo requests (an add holds all its photos; a search one), plus
            ``max_concurrent * (MAX_FILE_BYTES + 3 * max_pixels)`` for catalog photos being read.
        max_top_k: largest ``k`` a search may ask for.
        max_add_files: photos one ``POST /api/items`` may add.
        enable_writes: whether add, delete and feedback are allowed at all (else 403).
        token: the secret the write endpoints require (``Authorization: Bearer TOKEN``).
        localize: find the watch in query photos (with the learnt box, as ``search``); False: whole images.
        thumbnail_px: longest side of a thumbnail.
        thumbnail_cache: thumbnails kept in memory (least recently used dropped first).
        max_feedback_bytes: largest feedback request body.
        max_feedback_file_bytes: size at which ``feedback.jsonl`` stops growing (further feedback: 507).
        upload_timeout_s: seconds a request holding a place may take to send its photos (longer: 408),
            so clients trickling uploads cannot keep every place.
    """

    max_upload_bytes: int = 16 * MiB
    max_pixels: int = 40_000_000
    max_concurrent: int = 4
    max_top_k: int = 100
    max_add_files: int = 16
    enable_writes: bool = False
    token: str | None = None
    localize: bool = True
    thumbnail_px: int = 256
    thumbnail_cache: int = 512
    max_feedback_bytes: int = 4096
    max_feedback_file_bytes: int = 64 * MiB
    upload_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_concurrent", "max_top_k", "max_add_files",
                     "thumbnail_px", "thumbnail_cache", "max_feedback_bytes", "max_feedback_file_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SimclrWatchesError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if isinstance(self.upload_timeout_s, bool) or not isinstance(self.upload_timeout_s, (int, float)) \
                or not 0 < self.upload_timeout_s < float("inf"):
            raise SimclrWatchesError(f"upload-timeout must be a positive number of seconds, got {self.upload_timeout_s!r}")
        if self.enable_writes and (self.token is None or len(self.token) < MIN_TOKEN_CHARS):
            raise SimclrWatchesError(f"writes need a token of at least {MIN_TOKEN_CHARS} characters "
                                     f"(--token or ${TOKEN_ENV}; none: one is generated)")


def new_token() -> str:
    """A fresh random token for the write endpoints (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)
