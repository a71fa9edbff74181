import io
import struct

import numpy as np
import pytest
from PIL import Image

from simclr_watches.data import MAX_PIXELS, expand_inputs, iter_images, load_image, scan_images
from simclr_watches.errors import ImageReadError, SimclrWatchesError


def test_scan_is_recursive_sorted_and_filtered(tmp_path):
    for rel in ["b/2.JPG", "b/10.png", "a.webp", "c/d/e.tiff", "notes.txt", ".hidden/x.png", "b/.x.png"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    names = [p.relative_to(tmp_path).as_posix() for p in scan_images(tmp_path)]
    assert names == ["a.webp", "b/10.png", "b/2.JPG", "c/d/e.tiff"]


def test_scan_missing_or_file(tmp_path):
    with pytest.raises(SimclrWatchesError, match="no such folder"):
        scan_images(tmp_path / "nope")
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(SimclrWatchesError, match="not a folder"):
        scan_images(tmp_path / "f.png")


def test_expand_inputs_keeps_given_labels(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "sub" / "b.png")
    out = expand_inputs([str(tmp_path / "a.png"), tmp_path / "sub"])
    assert [label for label, _ in out] == [str(tmp_path / "a.png"), str(tmp_path / "sub" / "b.png")]
    with pytest.raises(SimclrWatchesError, match="missing.png: no such file or folder"):
        expand_inputs([tmp_path / "missing.png"])


def test_rgba_composited_on_white_and_alpha_kept(tmp_path):
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    img.paste((200, 10, 10, 255), (2, 2, 6, 6))
    img.save(tmp_path / "t.png")
    photo = load_image(tmp_path / "t.png")
    assert photo.rgb.mode == "RGB"
    assert photo.rgb.getpixel((0, 0)) == (255, 255, 255)
    assert photo.rgb.getpixel((3, 3)) == (200, 10, 10)
    assert photo.alpha is not None and photo.alpha.getpixel((0, 0)) == 0 and photo.alpha.getpixel((3, 3)) == 255


def test_la_and_palette_transparency(tmp_path):
    Image.new("LA", (4, 4), (0, 0)).save(tmp_path / "la.png")
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.save(tmp_path / "p.png", transparency=1)
    for name in ("la.png", "p.png"):
        photo = load_image(tmp_path / name)
        assert photo.rgb.mode == "RGB" and photo.rgb.getpixel((1, 1)) == (255, 255, 255)
        assert photo.alpha is not None


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "1"])
def test_other_modes_become_rgb(tmp_path, mode):
    Image.new(mode, (5, 3)).save(tmp_path / "x.tif")
    photo = load_image(tmp_path / "x.tif")
    assert photo.rgb.mode == "RGB" and photo.rgb.size == (5, 3) and photo.alpha is None


def test_16_bit_grey_uses_full_range(tmp_path):
    arr = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    rgb = np.asarray(load_image(tmp_path / "g16.png").rgb)
    assert rgb[0, 0, 0] == 0 and rgb[0, 1, 0] == 255 and 126 <= rgb[1, 0, 0] <= 129


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "o.jpg", exif=exif)
    assert load_image(tmp_path / "o.jpg").rgb.size == (20, 40)


def _jpeg_bytes(size=(64, 64)):
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("text.png", b"this is not an image at all", "not an image"),
        ("trunc.jpg", _jpeg_bytes()[:300], "truncated or corrupt"),
    ],
)
def test_bad_files_raise_with_path_and_reason(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        load_image(tmp_path / name)
    assert info.value.path == tmp_path / name and name in str(info.value)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    # A valid PNG header claiming 20000 x 20000 pixels; the pixel data is never read.
    png = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(png)
    with pytest.raises(ImageReadError, match="too large"):
        load_image(png)
    assert 20000 * 20000 > MAX_PIXELS


def test_iter_images_reports_and_continues(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"")
    Image.new("RGB", (4, 4)).save(tmp_path / "c.png")
    out = list(iter_images(scan_images(tmp_path)))
    assert [type(o).__name__ for o in out] == ["Photo", "ImageReadError", "Photo"]
    assert out[0].sha256 != "" and out[0].nbytes == (tmp_path / "a.png").stat().st_size
