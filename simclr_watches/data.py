"""Image ingest: find catalog images, decode them robustly, report what cannot be used.

Every decoded image is RGB on white. A transparent image's alpha is kept as the
foreground mask that pretraining's background swap cuts the watch out with.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from simclr_watches.errors import ImageReadError, SimclrWatchesError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})

# A decompression bomb is a small file that decodes to billions of pixels. 64 MP is
# far above any catalog photo and far below what would exhaust memory.
MAX_PIXELS = 64_000_000

# Decoding must fail on a truncated file, not pad it with grey and carry on.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class Photo:
    """A decoded image.

    Attributes:
        path: the file it came from.
        rgb: the image in mode RGB, transparent parts composited on white.
        alpha: mode L foreground mask (255 = opaque) when the file had transparency, else None.
        sha256: hex digest of the file's bytes.
        nbytes: the file's size in bytes.
    """

    path: Path
    rgb: Image.Image
    alpha: Image.Image | None
    sha256: str
    nbytes: int


def scan_images(root: Path | str) -> list[Path]:
    """Lists the image files under ``root`` (recursively), sorted by relative path.

    Hidden files and folders (name starting with '.') are skipped.

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
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def expand_inputs(inputs: Iterable[Path | str]) -> list[tuple[str, Path]]:
    """Expands files and folders given by a user into ``(label, path)`` pairs.

    A file keeps the label it was given with; a folder contributes its images,
    labelled by their own paths.

    Raises:
        SimclrWatchesError: an input does not exist.
    """
    out: list[tuple[str, Path]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend((str(f), f) for f in scan_images(p))
        elif p.exists():
            out.append((str(item), p))
        else:
            raise SimclrWatchesError(f"{item}: no such file or folder")
    return out


def _to_rgb(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """Converts any Pillow mode to RGB on white, returning the alpha if there was one."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit and float greyscale: scale the full range to 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
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


def decode_image(data: bytes, path: Path | str, max_pixels: int = MAX_PIXELS) -> Photo:
    """Decodes image bytes read from ``path``.

    Raises:
        ImageReadError: the bytes are empty, not an image, too large, truncated or corrupt.
    """
    path = Path(path)
    if not data:
        raise ImageReadError(path, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageReadError(
                    path, f"too large: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}"
                )
            img.load()
            img = ImageOps.exif_transpose(img)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image (format not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(path, f"too large: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(path, f"truncated or corrupt image data ({e})") from None
    if img.width < 1 or img.height < 1:
        raise ImageReadError(path, "image has no pixels")
    rgb, alpha = _to_rgb(img)
    return Photo(path, rgb, alpha, hashlib.sha256(data).hexdigest(), len(data))


def load_image(path: Path | str, max_pixels: int = MAX_PIXELS) -> Photo:
    """Reads and decodes one image file.

    Raises:
        ImageReadError: the file cannot be read or is not a usable image.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageReadError(path, f"cannot read file ({e.strerror or e})") from None
    return decode_image(data, path, max_pixels)


def try_load_image(path: Path | str) -> Photo | ImageReadError:
    """The Photo, or the ImageReadError that explains why the file is unusable (returned, not raised)."""
    try:
        return load_image(path)
    except ImageReadError as e:
        return e


def iter_images(paths: Iterable[Path]) -> Iterator[Photo | ImageReadError]:
    """Yields a Photo per path, or the ImageReadError that explains why it is unusable."""
    return map(try_load_image, paths)
