import io

from PIL import Image

from helpers import draw_watch
from simclr_watches.data.images import decode_image
from simclr_watches.serve.thumbnails import ThumbnailCache, make_thumbnail


def test_a_thumbnail_is_a_small_jpeg_and_never_enlarged():
    buf = io.BytesIO()
    draw_watch(0, 400).resize((400, 300)).save(buf, "PNG")
    thumb = Image.open(io.BytesIO(make_thumbnail(decode_image(buf.getvalue(), "w.png"), 128)))
    assert thumb.format == "JPEG" and thumb.size == (128, 96)
    buf = io.BytesIO()
    draw_watch(1, 50).save(buf, "PNG")
    assert Image.open(io.BytesIO(make_thumbnail(decode_image(buf.getvalue(), "s.png"), 128))).size == (50, 50)


def test_the_cache_keeps_its_capacity_and_drops_the_least_recently_used():
    made = []
    cache = ThumbnailCache(2)

    def maker(key):
        return lambda: made.append(key) or key.encode()

    assert cache.get("a", maker("a")) == b"a" and cache.get("b", maker("b")) == b"b"
    assert cache.get("a", maker("a")) == b"a"  # a hit: not made again, now the most recent
    cache.get("c", maker("c"))  # drops b
    assert len(cache) == 2 and made == ["a", "b", "c"]
    cache.get("a", maker("a"))
    cache.get("b", maker("b"))
    assert made == ["a", "b", "c", "b"]
