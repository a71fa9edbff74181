"""Small copies of a catalog's images, for moving the training data to a machine with a size limit.

A lent GPU machine receives at most 64 MiB with each call (docs/PRETRAINING.md, "Running on a
lent GPU"); watches-dev's 793 packshots are about 50 MB as stored and a few MB as 256 px JPEGs,
which is all ``pretrain`` keeps of them anyway (its cache is ``data.cache_size`` px squares). The
copies keep the catalog's folder layout (relative paths, with ``.jpg`` or ``.png`` as suffix), so a
copy is a catalog folder like its source; ``pack.json`` in it says where each file came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from PIL import Image

from simclr_watches.core.atomic import atomic_dir
from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.core.outputs import OutputKind, json_format_owned, owned_folder, prepare_output
from simclr_watches.data.images import Photo, load_image

PACK_FILE = "pack.json"
PACK_FORMAT = "simclr-watches-pack"
PACK_SUFFIXES = (".jpg", ".png")
MIN_SIDE = 16


def _copy_owned(path: Path) -> bool:
    """A sub-folder or an image of an earlier pack (its marker file is tested apart)."""
    return path.is_dir() or path.suffix in PACK_SUFFIXES


PACK_OUTPUT = OutputKind(
    "packed catalog",
    folder=True,
    owned=owned_folder({PACK_FILE: json_format_owned(PACK_FORMAT)}, required=PACK_FILE, others=_copy_owned),
    taken="already holds a packed catalog; pass --force to replace it",
)


def small_copy(photo: Photo, side: int) -> Image.Image:
    """The photo with its longer side at most ``side`` px (never enlarged); RGBA where it had transparency.

    Returns:
        An RGB image, or RGBA when ``photo.alpha`` is set (the mask the cache reads from the alpha).
    """
    img = photo.rgb if photo.alpha is None else Image.merge("RGBA", (*photo.rgb.split(), photo.alpha))
    w, h = img.size
    scale = side / max(w, h)
    if scale < 1:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    return img


def copy_name(relative: Path, photo: Photo) -> Path:
    """Where a copy goes: the source's relative path, suffix ``.png`` with transparency, else ``.jpg``."""
    return relative.with_suffix(".jpg" if photo.alpha is None else ".png")


def pack_images(paths: Sequence[Path], root: Path | str, out: Path | str, *, side: int = 256, quality: int = 85,
                force: bool = False) -> dict:
    """Writes small copies of ``paths`` (files under ``root``) into the folder ``out``, atomically.

    Args:
        paths: the images, each under ``root``; their paths relative to ``root`` are kept.
        side: longest side of a copy, px.
        quality: JPEG quality of the copies without transparency.
        force: replace an earlier pack at ``out`` (never anything else).

    Returns:
        What ``pack.json`` holds: format, side, quality, root, count, bytes and ``files``
        (copy -> source, relative to ``root``).

    Raises:
        SimclrWatchesError: a side below 16, no paths, a path outside ``root``, two sources
            with the same copy name, an output that is not ours or overlaps ``root``.
        ImageReadError: an unreadable image (naming it); nothing is written then.
    """
    root, out = Path(root), Path(out)
    if side < MIN_SIDE:
        raise SimclrWatchesError(f"{out}: side must be at least {MIN_SIDE} px, got {side}")
    if not paths:
        raise SimclrWatchesError(f"{root}: no images to pack")
    replace = prepare_output(out, PACK_OUTPUT, force=force, inputs=[root])
    files: dict[str, str] = {}
    with atomic_dir(out, replace=replace) as tmp:
        for path in paths:
            try:
                relative = Path(path).relative_to(root)
            except ValueError:
                raise SimclrWatchesError(f"{path}: not under {root}") from None
            photo = load_image(path, hash=False)
            name = copy_name(relative, photo)
            if name.as_posix() in files:
                raise SimclrWatchesError(f"{path}: its copy {name} would replace that of {files[name.as_posix()]}")
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            img = small_copy(photo, side)
            if name.suffix == ".jpg":
                img.save(target, "JPEG", quality=quality)
            else:
                img.save(target, "PNG", optimize=True)
            files[name.as_posix()] = relative.as_posix()
        nbytes = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        desc = {"format": PACK_FORMAT, "side": side, "quality": quality, "root": str(root), "count": len(files),
                "bytes": nbytes, "files": files}
        (tmp / PACK_FILE).write_text(json.dumps(desc, indent=1) + "\n", encoding="utf-8")
    return desc
