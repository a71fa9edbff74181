"""Image ingest: find catalog images, decode them robustly, report what cannot be used.

Every decoded image is RGB on white. A transparent image's alpha is kept as the
foreground mask that pretraining's background swap cuts the watch out with.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from simclr_watches.core.errors import ImageReadError, ImageTooLargeError, NotAnImageError, SimclrWatchesError
from simclr_watches.core.files import MiB, read_limited, sha256_limited

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})

# Pillow formats decoded, whatever a file's extension: those of IMAGE_EXTENSIONS (JPEG
# includes the multi-picture JPEG of phone cameras) and GIF. Nothing else is opened:
# Pillow's other plugins (EPS runs Ghostscript, for one) are no business of a photo search.
DECODE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "DIB", "TIFF", "GIF")

# A decompression bomb is a small file that decodes to billions of pixels. 64 MP is
# far above any catalog photo and far below what would exhaust memory.
MAX_PIXELS = 64_000_000

# A file is read whole before decoding; a 64 MP photo compresses far below this.
MAX_FILE_BYTES = 256 * MiB

# What Pillow raises for a corrupt file (by design or through a parser's bug): struct
# errors, lookups and arithmetic on lying header fields, a decoder's RuntimeError or
# MemoryError. Errors that only a bug of ours can cause (NameError, AttributeError,
# AssertionError) are not in the list: they must surface, not become "corrupt file".
PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, TypeError, LookupError, ArithmeticError,
                 RuntimeError, MemoryError, struct.error)

# Decoding must fail on a truncated file, not pad it with grey and carry on.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Pillow warns (on stderr) about corrupt metadata it skips, and about large images that
# the pixel limit above refuses anyway. A filter here rather than warnings.catch_warnings
# around each decode: that one is not thread-safe, and decoding runs in threads.
warnings.filterwarnings("ignore", module=r"PIL\.")

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class Photo:
    """A decoded image.

    Attributes:
        path: the file it came from.
        rgb: the image in mode RGB, transparent parts composited on white.
        alpha: mode L foreground mask (255 = opaque) when the file had transparency, else None.
        sha256: hex digest of the file's bytes; None when decoded with ``hash=False``.
        nbytes: the file's size in bytes.
    """

    path: Path
    rgb: Image.Image
    alpha: Image.Image | None
    sha256: str | None
    nbytes: int


def scan_images(root: Path | str) -> list[Path]:
    """Lists the image files under ``root`` (recursively), sorted by relative path.

    Hidden files and folders (name starting with '.') are skipped. Every other entry
    with an image extension that is not a folder is listed, including broken symbolic
    links and special files, so that reading it reports why it is unusable instead of
    the file vanishing silently.

    Raises:
        SimclrWatchesError: ``root`` does not exist or is not a folder.
    """
    root = Path(root)
    if not root.exists():
        raise SimclrWatchesError(f"{root}: no such folder")
    if not root.is_dir():
        raise SimclrWatchesError(f"{root}: not a folder")
    found = [
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not p.is_dir()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def expand_inputs(inputs: Iterable[Path | str]) -> list[tuple[str, Path]]:
    """Expands files and folders given by a user into ``(label, path)`` pairs.

    A file keeps the label it was given with; a folder contributes its images,
    labelled by their own paths.

    Raises:
        SimclrWatchesError: an input does not exist, or a folder holds no image file.
    """
    out: list[tuple[str, Path]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = scan_images(p)
            if not found:
                raise SimclrWatchesError(f"{item}: no image files ({_extensions()}) in this folder")
            out.extend((str(f), f) for f in found)
        elif p.exists() or p.is_symlink():
            out.append((str(item), p))
        else:
            raise SimclrWatchesError(f"{item}: no such file or folder")
    return out


def _extensions() -> str:
    """The image extensions looked for, in words: ``bmp, jpeg, ...``."""
    return ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))


def _to_rgb(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """Converts any Pillow mode to RGB on white, returning the alpha if there was one."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit and float greyscale: scale the full range to 8 bits instead of clipping at 255.
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        top = 65535.0 if img.mode != "F" and arr.max() > 255 else max(float(arr.max()), 1.0)
        if img.mode == "F" and arr.max() <= 1.0:
            top = 1.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode in ("LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
    elif img.mode == "L" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif img.mode == "RGB" and "transparency" in img.info:
        img = img.convert("RGBA")

    if img.mode == "RGBA":
        alpha = img.getchannel("A")
        white = Image.new("RGB", img.size, (255, 255, 255))
        white.paste(img.convert("RGB"), mask=alpha)
        # A fully opaque alpha carries no mask information.
        return white, (alpha if alpha.getextrema()[0] < 255 else None)
    return img.convert("RGB"), None


def _open(data: bytes, path: Path, max_pixels: int) -> Image.Image:
    """Opens and fully decodes ``data``, refusing more than ``max_pixels`` before decoding."""
    img = Image.open(io.BytesIO(data), formats=DECODE_FORMATS)
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageReadError(path, f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageTooLargeError(path, f"too large: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
    img.load()
    return img


def _upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says.

    The pixels ``ImageOps.exif_transpose`` gives, without re-writing the metadata (which
    fails on a corrupt tag); unreadable metadata leaves the pixels as stored.
    """
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    except PILLOW_ERRORS:
        return img
    method = _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    return img if method is None else img.transpose(method)


def decode_image(data: bytes, path: Path | str, max_pixels: int = MAX_PIXELS, hash: bool = True) -> Photo:
    """Decodes image bytes read from ``path``.

    Args:
        hash: compute the sha256 of ``data`` (an index records it; a query never needs it).

    Raises:
        ImageReadError: the bytes are empty, truncated or corrupt; its subclasses
            NotAnImageError: not an image of DECODE_FORMATS, and ImageTooLargeError: more
            than ``max_pixels``.
    """
    path = Path(path)
    if not data:
        raise ImageReadError(path, "empty file")
    try:
        rgb, alpha = _to_rgb(_upright(_open(data, path, max_pixels)))
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise NotAnImageError(path, f"not an image (format not recognised; read are {', '.join(DECODE_FORMATS)})") from None
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(path, f"too large: {e}") from None
    except PILLOW_ERRORS as e:
        raise ImageReadError(path, f"truncated or corrupt image data ({e or type(e).__name__})") from None
    return Photo(path, rgb, alpha, hashlib.sha256(data).hexdigest() if hash else None, len(data))


def load_image(path: Path | str, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_FILE_BYTES,
               hash: bool = True) -> Photo:
    """Reads and decodes one image file of at most ``max_bytes`` bytes (checked before reading).

    Args:
        hash: compute the file's sha256 (``Photo.sha256``; None without).

    Raises:
        ImageReadError: the file cannot be read (missing, a broken link, not a regular
            file, too large) or is not a usable image.
    """
    path = Path(path)
    return decode_image(read_limited(path, max_bytes, ImageReadError), path, max_pixels, hash)


def file_digest(path: Path | str, max_bytes: int = MAX_FILE_BYTES) -> tuple[str, int] | ImageReadError:
    """The sha256 and byte size of an image file, read in 1 MiB chunks without decoding, or why it is unusable.

    The file is opened as :func:`load_image` opens it (a regular file only, at most ``max_bytes``):
    what tells an index update which files are new or changed, before any is decoded.
    """
    try:
        return sha256_limited(path, max_bytes, ImageReadError)
    except ImageReadError as e:
        return e


def try_load_image(path: Path | str, hash: bool = True) -> Photo | ImageReadError:
    """The Photo, or the ImageReadError that explains why the file is unusable (returned, not raised)."""
    try:
        return load_image(path, hash=hash)
    except ImageReadError as e:
        return e


def iter_images(paths: Iterable[Path]) -> Iterator[Photo | ImageReadError]:
    """Yields a Photo per path, or the ImageReadError that explains why it is unusable."""
    return map(try_load_image, paths)
