"""The catalog behind the API: one loaded model and index, searched and changed on one model thread.

Not tied to HTTP: each method takes plain values, returns JSON-ready dicts or bytes, and
raises :class:`simclr_watches.serve.errors.ApiError` with the status a client should get.
The encoder runs on one thread of its own, one search or add at a time: a single thread
also keeps torch's working memory in one allocator arena (spread over the request threads,
each thread's arena kept its own copy: +390 MiB under 8 clients, against +23 MiB;
docs/BENCHMARKS.md). The index is re-read
when another process changed it (``Searcher.refresh`` before each use); the index folder's
own writer lock orders adds and removes with other processes'.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

from PIL import Image

from simclr_watches.core.atomic import atomic_path
from simclr_watches.core.errors import ImageReadError, SimclrWatchesError
from simclr_watches.core.files import read_limited
from simclr_watches.data.images import DECODE_FORMATS, MAX_FILE_BYTES, PILLOW_ERRORS, Photo, decode_image
from simclr_watches.retrieval.index import FEEDBACK_FILE, UPLOADS_DIR
from simclr_watches.retrieval.boxes import BoxSearchConfig
from simclr_watches.retrieval.search import Searcher
from simclr_watches.retrieval.update import add_items, remove_items
from simclr_watches.serve.errors import ApiError, image_error
from simclr_watches.serve.feedback import FeedbackLog, parse_feedback
from simclr_watches.serve.gate import Gate
from simclr_watches.serve.settings import ServeSettings
from simclr_watches.serve.stats import Stats
from simclr_watches.serve.thumbnails import ThumbnailCache, make_thumbnail


# Decoded format -> (file extension, media type) of the bytes as served or stored. A multi-picture JPEG
# (MPO, written by many phone cameras) is a JPEG whose first picture is what is decoded.
FORMATS = {"JPEG": ("jpg", "image/jpeg"), "MPO": ("jpg", "image/jpeg"), "PNG": ("png", "image/png"), "WEBP": ("webp", "image/webp"),
           "BMP": ("bmp", "image/bmp"), "DIB": ("bmp", "image/bmp"), "TIFF": ("tif", "image/tiff"),
           "GIF": ("gif", "image/gif")}

T = TypeVar("T")


def image_format(data: bytes) -> str:
    """The Pillow format of image bytes that decode (``JPEG``, ``PNG``, ...), read from their header."""
    with Image.open(io.BytesIO(data), formats=DECODE_FORMATS) as img:
        return img.format


class CatalogService:
    """An index folder served: searches, items, thumbnails, updates and feedback.

    Args:
        index_dir: the index folder.
        settings: limits and switches.
        checkpoint: the model to embed with; default: the index's own.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.

    Raises:
        IndexFormatError, CheckpointError: as :class:`simclr_watches.retrieval.search.Searcher`.
    """

    def __init__(self, index_dir: Path | str, settings: ServeSettings, checkpoint: str | None = None,
                 device: str = "auto"):
        self.index_dir, self.settings = Path(index_dir), settings
        self.searcher = Searcher(index_dir, checkpoint=checkpoint, device=device,
                                 localize=BoxSearchConfig() if settings.localize else None)
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="simclr-watches-model")
        self.stats = Stats()
        self.gate = Gate(settings.max_concurrent, self.stats.refused)
        self.thumbnails = ThumbnailCache(settings.thumbnail_cache)
        self._uploading = threading.Lock()
        self.feedback = FeedbackLog(self.index_dir / FEEDBACK_FILE, settings.max_feedback_file_bytes)

    # Searching

    def check_k(self, k: Any) -> int:
        """``k`` as an integer in [1, max_top_k].

        Raises:
            ApiError: 422 otherwise.
        """
        try:
            value = int(k)
        except (TypeError, ValueError):
            value = None
        if value is None or not 1 <= value <= self.settings.max_top_k:
            raise ApiError(422, f"k must be an integer in [1, {self.settings.max_top_k}], got {str(k)[:40]!r}")
        return value

    def decode(self, data: bytes, label: str) -> Photo:
        """Photo bytes decoded within the pixel limit (never written to disk).

        Raises:
            ApiError: 415 not an image, 413 too many pixels, 400 empty, truncated or corrupt.
        """
        try:
            return decode_image(data, label, max_pixels=self.settings.max_pixels, hash=False)
        except ImageReadError as e:
            raise image_error(e) from None

    def search_upload(self, data: bytes, k: int, started: float) -> dict[str, Any]:
        """The ``k`` catalog items nearest to an uploaded photo (``search --json``'s schema plus ``took_ms``).

        The query is labelled ``upload:sha256:HEX`` by its bytes (what feedback refers to).

        Args:
            started: ``time.perf_counter()`` when the request arrived: ``took_ms`` counts from it.
        """
        label = f"upload:sha256:{hashlib.sha256(data).hexdigest()}"
        return self._search(self.decode(data, "upload"), label, k, started)

    def similar(self, item_id: int, k: int, started: float) -> dict[str, Any]:
        """"More like this": the ``k`` items nearest to catalog item ``item_id`` (itself first), from its stored row.

        No file is read and nothing is embedded (:meth:`Searcher.search_item`): no ``box`` nor ``size``.

        Raises:
            ApiError: 404 no such live item.
        """
        self.searcher.refresh()
        result = self.searcher.search_item(item_id, top_k=k)
        if result is None:
            raise ApiError(404, f"no item {item_id} in the index")
        took_ms = (time.perf_counter() - started) * 1000
        self.stats.searched(took_ms)
        return {**result.to_json(), "took_ms": round(took_ms, 1)}

    def on_model_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs ``fn`` on the encoder's thread, after the work queued there before; returns its result."""
        return self._model_thread.submit(fn, *args, **kwargs).result()

    def _search(self, photo: Photo, label: str, k: int, started: float) -> dict[str, Any]:
        self.searcher.refresh()
        result = self.on_model_thread(self.searcher.search_photo, photo, label, top_k=k)
        took_ms = (time.perf_counter() - started) * 1000
        self.stats.searched(took_ms)
        return {**result.to_json(), "size": list(photo.rgb.size), "took_ms": round(took_ms, 1)}

    # Items

    def item(self, item_id: int) -> dict[str, Any]:
        """The live item ``item_id``: ``id``, ``path``, ``sha256``, ``bytes``.

        Raises:
            ApiError: 404 no such item (never was, or removed).
        """
        self.searcher.refresh()
        record = self.searcher.item(item_id)
        if record is None:
            raise ApiError(404, f"no item {item_id} in the index")
        return record

    def _read_item(self, record: dict[str, Any], decode: bool) -> Photo | bytes:
        """An item's file, read (bounded) from the path the index records; decoded when ``decode``.

        Raises:
            ApiError: 404 the file is gone, unreadable or no longer an image.
        """
        try:
            data = read_limited(record["path"], MAX_FILE_BYTES, ImageReadError)
            if not decode:
                return data
            return decode_image(data, record["path"], max_pixels=self.settings.max_pixels, hash=False)
        except ImageReadError as e:
            raise ApiError(404, f"item {record['id']}: its file cannot be read: {e.reason}") from None

    def image(self, item_id: int) -> tuple[bytes, str]:
        """Item ``item_id``'s file as indexed: its bytes and media type."""
        record = self.item(item_id)
        data = self._read_item(record, decode=False)
        try:
            fmt = image_format(data)
        except PILLOW_ERRORS:  # a file that changed since indexing
            raise ApiError(404, f"item {item_id}: its file is no longer an image") from None
        return data, FORMATS[fmt][1]

    def thumbnail(self, item_id: int) -> bytes:
        """A JPEG of item ``item_id`` at most ``thumbnail_px`` on its longest side (cached by id and content)."""
        record = self.item(item_id)
        return self.thumbnails.get((item_id, record["sha256"]),
                                   lambda: make_thumbnail(self._read_item(record, decode=True), self.settings.thumbnail_px))

    # Feedback and status

    def record_feedback(self, body: bytes) -> dict[str, Any]:
        """Validates a feedback body and appends it, with the item's path and sha256, to ``feedback.jsonl``.

        Raises:
            ApiError: 400/422 an invalid body, 404 an unknown item, 507 the file is full.
        """
        entry = parse_feedback(body)
        record = self.item(entry["item_id"])
        return self.feedback.append({**entry, "path": record["path"], "sha256": record["sha256"]})

    def health(self) -> dict[str, Any]:
        """``status`` ok, live ``items``, whether ``writes`` are on, the ``model``, and the limits a client needs."""
        self.searcher.refresh()
        return {"status": "ok", "items": self.searcher.index.live_count, "writes": self.settings.enable_writes,
                "model": self.searcher.model.id, "max_top_k": self.settings.max_top_k,
                "max_upload_bytes": self.settings.max_upload_bytes}

    def status(self) -> dict[str, Any]:
        """What ``GET /api/stats`` answers: the index's counts, the model, and :class:`Stats`' counters."""
        self.searcher.refresh()
        index = self.searcher.index
        return {"index": str(self.index_dir), "items": index.live_count, "added": index.added_count,
                "removed": index.removed_count, "model": self.searcher.model.id, "in_flight": self.gate.held,
                "max_concurrent": self.settings.max_concurrent, "thumbnails_cached": len(self.thumbnails),
                **self.stats.snapshot()}

    # Changes

    def add(self, files: list[bytes]) -> dict[str, Any]:
        """Adds uploaded photos to the index, embedded with the loaded model (no rebuild).

        Every photo is decoded first: one that is unusable refuses the whole request, before
        anything is written. Each is then stored as ``INDEX/uploads/SHA256.EXT`` (a name made
        from its content and decoded format, written atomically) and added with
        :func:`simclr_watches.retrieval.update.add_items`; a file this request wrote that no
        item was added from (a duplicate, or a refused add) is removed again.

        Returns:
            ``added`` (records of the new items), ``unchanged`` and ``skipped`` (``file``,
            ``reason``), whether the forest was ``compacted``, and the live ``items``.

        Raises:
            ApiError: 415/413/400 a photo is unusable; 409 the index cannot be changed now.
        """
        for i, data in enumerate(files, 1):
            self.decode(data, f"photo {i}")
        with self._uploading:  # what this request wrote is told apart from what others did
            written: list[Path] = []
            report = None
            try:
                stored = [self._store_upload(data, written) for data in files]
                report = self.on_model_thread(self._write, add_items, self.index_dir, stored,
                                              device=str(self.searcher.device),
                                              model=(self.searcher.encoder, self.searcher.model))
            finally:  # a duplicate, a skipped photo or a refused add leaves no file that no item refers to
                used = {a["path"] for a in report.added} if report else set()
                for path in written:
                    if str(path) not in used:
                        path.unlink(missing_ok=True)
        return {"added": report.added, "unchanged": _reasons(report.unchanged), "skipped": _reasons(report.skipped),
                "compacted": report.compacted, "items": report.live}

    def _store_upload(self, data: bytes, written: list[Path]) -> Path:
        """Writes an upload's bytes as ``uploads/SHA256.EXT`` (kept if already there); returns its path.

        A file written (not already there) is appended to ``written``.

        Raises:
            ApiError: 409 ``uploads`` is not a real folder (a symbolic link, a file): nothing is written.
        """
        folder = self.index_dir.resolve() / UPLOADS_DIR
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise ApiError(409, f"the index was not changed: {folder}: not a folder (a symbolic link or a file); "
                                    "photos are stored only in a real folder")
        path = folder / f"{hashlib.sha256(data).hexdigest()}.{FORMATS[image_format(data)][0]}"
        if os.path.islink(path) or not path.is_file():  # a planted link is replaced, never written through
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
            written.append(path)
        return path

    def remove(self, item_id: int) -> dict[str, Any]:
        """Removes item ``item_id`` from every result (its row goes at the next compaction).

        Raises:
            ApiError: 404 no such live item; 409 the index cannot be changed now.
        """
        report = self._write(remove_items, self.index_dir, [item_id])
        if not report.removed:
            raise ApiError(404, f"no item {item_id} in the index")
        return {"removed": report.removed, "compacted": report.compacted, "items": report.live}

    def _write(self, change, *args, **kwargs):
        """Runs an update of the index folder, then loads its result; a refused update is a 409."""
        try:
            report = change(*args, **kwargs)
        except SimclrWatchesError as e:
            raise ApiError(409, f"the index was not changed: {e}") from None
        self.searcher.refresh()
        return report


def _reasons(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"file": f, "reason": r} for f, r in pairs]
