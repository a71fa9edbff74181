"""Thumbnails of catalog items, made in memory and kept in a bounded least-recently-used cache."""

from __future__ import annotations

import collections
import io
import threading
from typing import Callable, Hashable

from PIL import Image

from simclr_watches.data.images import Photo

JPEG_QUALITY = 85


def make_thumbnail(photo: Photo, px: int) -> bytes:
    """JPEG bytes of ``photo`` shrunk to at most ``px`` pixels on its longest side (never enlarged)."""
    img = photo.rgb.copy()
    img.thumbnail((px, px), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


class ThumbnailCache:
    """At most ``capacity`` thumbnails; the least recently used is dropped first.

    Keys should name the content (an item's id and sha256), so a replaced file never
    gets a stale thumbnail. Making a thumbnail runs outside the lock: two threads may make
    the same one at once; both get it, one is kept.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: collections.OrderedDict[Hashable, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable, make: Callable[[], bytes]) -> bytes:
        """The cached thumbnail for ``key``, made with ``make()`` when missing."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = make()
        with self._lock:
            self._items[key] = data
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return data
