import io
import os
import struct
import threading

import numpy as np
import pytest
from PIL import Image

from helpers import assert_user_error, run_cli
from simclr_watches.data.images import MAX_FILE_BYTES, MAX_PIXELS, decode_image, expand_inputs, iter_images, load_image, scan_images
from simclr_watches.core.errors import ImageReadError, ImageTooLargeError, NotAnImageError, SimclrWatchesError


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
    with pytest.raises(ImageTooLargeError, match="too large"):
        load_image(png)
    assert 20000 * 20000 > MAX_PIXELS


def test_not_an_image_and_too_many_pixels_have_their_own_types(tmp_path):
    """A server tells them apart (415, 413) from a corrupt image (400) by type, not by message."""
    with pytest.raises(NotAnImageError, match="up.bin: not an image"):
        decode_image(b"plain text", "up.bin")
    buf = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, "PNG")
    with pytest.raises(ImageTooLargeError, match="40x30 = 1200 pixels exceeds the limit of 1000"):
        decode_image(buf.getvalue(), "up.png", max_pixels=1000)
    with pytest.raises(ImageReadError) as info:
        decode_image(buf.getvalue()[:60], "up.png")
    assert type(info.value) is ImageReadError and "truncated or corrupt" in str(info.value)


def test_iter_images_reports_and_continues(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"")
    Image.new("RGB", (4, 4)).save(tmp_path / "c.png")
    out = list(iter_images(scan_images(tmp_path)))
    assert [type(o).__name__ for o in out] == ["Photo", "ImageReadError", "Photo"]
    assert out[0].sha256 != "" and out[0].nbytes == (tmp_path / "a.png").stat().st_size


# Issue 12: nothing a file contains or is may end in a traceback, hang, exhaust memory or vanish silently.


def _with_exif(fmt: str, renumber: dict[int, int]) -> bytes:
    """A 40x20 image whose EXIF says "rotate 90" and names a model, with tag ids renumbered as a corrupt file has them."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x0110] = "model"
    buf = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 30, 30)).save(buf, fmt, exif=exif)
    data = bytearray(buf.getvalue())
    for old, new in renumber.items():  # Pillow writes EXIF big-endian; a tag id leads its 12-byte entry
        i = data.find(struct.pack(">HH", old, 2))
        data[i : i + 2] = struct.pack(">H", new)
    return bytes(data)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_corrupt_exif_tag_still_decodes_upright(tmp_path, fmt):
    """A text tag renumbered as ImageWidth made Pillow's exif_transpose raise struct.error."""
    (tmp_path / "x.img").write_bytes(_with_exif(fmt, {0x0110: 0x0100}))
    assert load_image(tmp_path / "x.img").rgb.size == (20, 40)


def test_broken_symlink_is_listed_and_says_why(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "gone.png")
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    assert [p.name for p in scan_images(tmp_path)] == ["a.png", "b.png", "loop.jpg"]
    with pytest.raises(ImageReadError, match=r"b.png: broken symbolic link \(its target .*gone.png does not exist\)"):
        load_image(tmp_path / "b.png")
    with pytest.raises(ImageReadError, match="loop.jpg: cannot read file .*symbolic links"):
        load_image(tmp_path / "loop.jpg")


def _finishes(fn, seconds: float = 10.0):
    """fn() run in a daemon thread; fails the test if it is still blocked after ``seconds``."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except Exception as e:  # the test inspects it
            box["value"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked"
    return box["value"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_files_are_refused_without_reading(tmp_path):
    """A FIFO would block a reader forever; a device is no photo. Both are listed and refused at once."""
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "dev.png").symlink_to("/dev/null")
    assert [p.name for p in scan_images(tmp_path)] == ["dev.png", "pipe.jpg"]
    err = _finishes(lambda: load_image(tmp_path / "pipe.jpg"))
    assert isinstance(err, ImageReadError) and err.reason == "a FIFO (named pipe), not a file"
    with pytest.raises(ImageReadError, match="dev.png: a character device, not a file"):
        load_image(tmp_path / "dev.png")


def test_file_above_the_byte_limit_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.jpg"
    with open(big, "wb") as f:  # sparse: no disk used, and nothing may read it
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(ImageReadError, match=f"big.jpg: too large: {MAX_FILE_BYTES + 1} bytes exceeds the limit"):
        load_image(big)
    (tmp_path / "small.png").write_bytes(_jpeg_bytes())
    with pytest.raises(ImageReadError, match="too large"):
        load_image(tmp_path / "small.png", max_bytes=100)


def test_only_photo_formats_are_opened(tmp_path):
    """An EPS (Pillow hands it to Ghostscript) named .jpg is not opened at all."""
    (tmp_path / "x.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    with pytest.raises(ImageReadError, match=r"x.jpg: not an image \(format not recognised; read are JPEG, PNG"):
        load_image(tmp_path / "x.jpg")


def test_a_view_that_fails_on_the_image_skips_it_with_a_reason(tmp_path):
    from simclr_watches.retrieval.embed import embed_paths
    from simclr_watches.model import Encoder, Preprocessing

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    emb = embed_paths(Encoder("resnet18"), Preprocessing(size=32), [tmp_path / "a.png"], progress=False,
                      view=lambda photo: photo.rgb.crop((4, 4, 0, 0)))  # a box that a bad mask could give
    assert emb.items == [] and "cannot prepare the decoded image" in emb.skipped[0].reason


def test_expand_inputs_refuses_a_folder_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SimclrWatchesError, match="empty: no image files .* in this folder"):
        expand_inputs([tmp_path / "empty"])


@pytest.mark.slow
def test_cli_search_of_an_empty_folder_is_a_one_line_error(make_catalog, small_checkpoint, tmp_path):
    from simclr_watches.retrieval.index import build_index

    build_index(make_catalog(2), tmp_path / "idx", checkpoint=str(small_checkpoint), progress=False, n_trees=2)
    (tmp_path / "empty").mkdir()
    assert_user_error(run_cli("search", tmp_path / "empty", "--index", tmp_path / "idx"), f"{tmp_path / 'empty'}: no image files")


@pytest.mark.slow
def test_cli_build_index_reports_a_broken_symlink(make_catalog, small_checkpoint, tmp_path):
    root = make_catalog(2)
    (root / "gone.png").symlink_to(tmp_path / "nowhere.png")
    proc = run_cli("build-index", root, "--out", tmp_path / "idx", "--checkpoint", small_checkpoint, "--n-trees", 2)
    assert proc.returncode == 0, proc.stderr
    assert f"skipped {root / 'gone.png'}: broken symbolic link" in proc.stderr
    assert "indexed 2 images" in proc.stderr and "skipped 1 unreadable file" in proc.stderr


@pytest.mark.slow
def test_cli_catalog_of_unreadable_files_lists_each_reason_then_fails(tmp_path, small_checkpoint):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "a.png").write_bytes(b"not a png")
    (root / "b.jpg").write_bytes(b"")
    proc = run_cli("build-index", root, "--out", tmp_path / "idx", "--checkpoint", small_checkpoint)
    assert_user_error(proc, f"{root}: none of the 2 image files could be read")
    assert f"skipped {root / 'a.png'}: not an image" in proc.stderr
    assert f"skipped {root / 'b.jpg'}: empty file" in proc.stderr
    assert not (tmp_path / "idx").exists()
