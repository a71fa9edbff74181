"""A seeded simulator of user photos made from catalog packshots, for evaluation only.

It is deliberately separate from pretraining's augmentation (kornia, in the
training code): a benchmark whose queries come from the same transform family
the encoder was trained to ignore would flatter it. This one is plain PIL and
numpy and draws its own backgrounds and camera effects.

Steps: cut the watch from its white background, place it (scale, rotation,
perspective, position) on a procedural background (gradient, wood, fabric or
blurred clutter), then dim the light, add a colour cast, blur, sensor noise and
JPEG compression. The same (image, seed, severity) gives identical bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from simclr_watches.core.errors import SimclrWatchesError

SEVERITIES = ("mild", "medium", "hard")

# Pixels at or above this in every channel count as the packshot's white background.
WHITE_THRESHOLD = 235


@dataclass(frozen=True)
class Severity:
    """Ranges each effect is drawn from (uniformly) at one severity level."""

    scale: tuple[float, float]  # watch's longest side / frame side
    rotation: float  # max |degrees|
    perspective: float  # max corner shift, as a share of the watch's side
    light: tuple[float, float]  # brightness gain
    cast: float  # max per-channel gain deviation from 1
    blur: tuple[float, float]  # Gaussian radius in pixels at 384 px
    noise: tuple[float, float]  # sensor noise std on a 0..255 scale
    jpeg: tuple[int, int]  # JPEG quality


LEVELS = {
    "mild": Severity((0.75, 0.9), 8, 0.03, (0.85, 1.0), 0.05, (0.0, 0.6), (1, 4), (80, 92)),
    "medium": Severity((0.5, 0.75), 25, 0.08, (0.6, 0.85), 0.12, (0.5, 1.5), (4, 10), (55, 80)),
    "hard": Severity((0.3, 0.55), 60, 0.15, (0.35, 0.6), 0.25, (1.2, 3.0), (10, 20), (25, 50)),
}


def cutout_mask(rgb: Image.Image, threshold: int = WHITE_THRESHOLD) -> Image.Image:
    """Foreground mask (mode L, 255 = watch) of a packshot on white.

    Near-white pixels connected to the border are background; enclosed white
    (a white dial) stays foreground. A 3x3 opening removes specks, and a small
    blur softens the edge so the paste does not leave a white halo. When the
    threshold finds almost nothing (not a white-background photo), the whole
    frame is foreground.
    """
    arr = np.asarray(rgb.convert("RGB"))
    white = np.all(arr >= threshold, axis=2)
    # Pad with a white ring so every border pixel joins one region a single flood fill reaches.
    # .copy(): an image made by fromarray may share the read-only numpy buffer, and floodfill then draws nowhere.
    padded = Image.fromarray(np.pad(white, 1, constant_values=True).astype(np.uint8) * 255, "L").copy()
    ImageDraw.floodfill(padded, (0, 0), 128)
    background = np.asarray(padded)[1:-1, 1:-1] == 128
    mask = Image.fromarray((~background).astype(np.uint8) * 255, "L")
    mask = mask.filter(ImageFilter.MinFilter(3)).filter(ImageFilter.MaxFilter(3))
    share = np.asarray(mask).mean() / 255.0
    if share < 0.02:
        return Image.new("L", rgb.size, 255)
    return mask.filter(ImageFilter.GaussianBlur(1.0))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) value noise in [0, 1]: a random coarse grid, bicubically upscaled."""
    coarse = (rng.random((cells, cells)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255.0


def _colour(rng: np.random.Generator, lo: int = 30, hi: int = 230) -> np.ndarray:
    return rng.integers(lo, hi, 3).astype(np.float32)


def background(rng: np.random.Generator, size: int) -> Image.Image:
    """A procedural scene background: gradient, wood, fabric or blurred clutter (chosen by ``rng``)."""
    kind = rng.choice(["gradient", "wood", "fabric", "clutter"])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a, b = _colour(rng), _colour(rng)
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        t = np.clip((np.cos(angle) * xx + np.sin(angle) * yy + 1) / 2, 0, 1)[..., None]
        img = a * (1 - t) + b * t
    elif kind == "wood":
        # Rings around a far-off centre, warped by smooth noise, read as planks' grain.
        cx, cy = rng.uniform(-2, 3, 2)
        warp = _smooth_noise(rng, size, 6) * rng.uniform(2, 6)
        rings = np.sin((np.hypot(xx - cx, yy - cy) * rng.uniform(30, 80) + warp) * 2 * np.pi) * 0.5 + 0.5
        base = np.array([rng.uniform(90, 170), rng.uniform(55, 110), rng.uniform(25, 70)], np.float32)
        img = base * (0.7 + 0.45 * rings[..., None])
    elif kind == "fabric":
        period = rng.uniform(3, 8)
        weave = (np.sin(xx * size / period * 2 * np.pi) * np.sin(yy * size / period * 2 * np.pi)) * 0.5 + 0.5
        img = a * (0.75 + 0.25 * weave[..., None]) * (0.85 + 0.3 * _smooth_noise(rng, size, 8)[..., None])
    else:
        canvas = Image.new("RGB", (size, size), tuple(int(v) for v in a))
        d = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(8, 20))):
            x0, y0 = rng.integers(-size // 4, size, 2)
            w, h = rng.integers(size // 10, size // 2, 2)
            fill = tuple(int(v) for v in _colour(rng, 0, 256))
            (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x0 + w, y0 + h], fill=fill)
        return canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(4, 10))))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _perspective_coeffs(src: list[tuple[float, float]], dst: list[tuple[float, float]]) -> list[float]:
    """PIL's 8 perspective coefficients mapping output points ``dst`` to input points ``src``."""
    rows = []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return np.linalg.solve(np.array(rows, np.float64), np.array(src, np.float64).reshape(8)).tolist()


def _place(watch: Image.Image, rng: np.random.Generator, level: Severity, size: int) -> Image.Image:
    """Scales, tilts and rotates the RGBA watch and puts it on a transparent square canvas."""
    side = size * rng.uniform(*level.scale)
    watch = watch.copy()
    watch.thumbnail((int(side), int(side)), Image.Resampling.LANCZOS)
    w, h = watch.size
    j = level.perspective * max(w, h)
    corners = [(0, 0), (w, 0), (w, h), (0, h)]
    moved = [(x + rng.uniform(-j, j), y + rng.uniform(-j, j)) for x, y in corners]
    watch = watch.transform((w, h), Image.Transform.PERSPECTIVE, _perspective_coeffs(corners, moved),
                            Image.Resampling.BICUBIC)
    watch = watch.rotate(rng.uniform(-level.rotation, level.rotation), Image.Resampling.BICUBIC, expand=True)
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    # Keep the watch's centre inside the frame; part of it may fall outside, as in a careless photo.
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    layer.paste(watch, (int(cx - watch.width / 2), int(cy - watch.height / 2)), watch)
    return layer


def simulate_photo(rgb: Image.Image, alpha: Image.Image | None, seed: int | tuple[int, ...], severity: str,
                   size: int = 384) -> bytes:
    """Turns a packshot into a simulated user photo.

    Args:
        rgb: the packshot, RGB on white.
        alpha: its own foreground mask if the file had one, else None (cut out by threshold).
        seed: makes the result reproducible; another seed gives another scene. A tuple
            (e.g. run seed, item key) gives each item its own scene under one run seed.
        severity: one of ``SEVERITIES``.
        size: side of the square output in pixels.

    Returns:
        The JPEG file's bytes (identical for identical arguments).

    Raises:
        SimclrWatchesError: unknown severity.
    """
    if severity not in LEVELS:
        raise SimclrWatchesError(f"unknown severity {severity!r}; known: {', '.join(SEVERITIES)}")
    level, rng = LEVELS[severity], _rng(seed, severity)
    watch = rgb.convert("RGBA")
    watch.putalpha(alpha if alpha is not None else cutout_mask(rgb))
    scene = background(rng, size).convert("RGBA")
    scene.alpha_composite(_place(watch, rng, level, size))
    return camera(scene.convert("RGB"), rng, level)


def camera(rgb: Image.Image, rng: np.random.Generator, level: Severity) -> bytes:
    """A photo taken by a worse camera: dimmer light with a colour cast, blur, sensor noise, JPEG.

    The blur's radius scales with the photo's longer side (``level.blur`` is in pixels at 384 px).
    :func:`simulate_photo`'s last step; alone, it degrades a real photo without changing its scene.

    Returns:
        The JPEG file's bytes.
    """
    arr = np.asarray(rgb, np.float32)
    gain = rng.uniform(*level.light) * (1 + rng.uniform(-level.cast, level.cast, 3))
    arr = arr * gain.astype(np.float32)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(*level.blur) * max(img.size) / 384))
    noisy = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(*level.noise), arr.shape)
    img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(level.jpeg[0], level.jpeg[1] + 1)))
    return buf.getvalue()


def _rng(seed: int | tuple[int, ...], severity: str) -> np.random.Generator:
    """The generator of one simulated photo: its seed (or seeds) and its severity (a known one)."""
    seeds = list(seed) if isinstance(seed, tuple) else [seed]
    return np.random.default_rng([*seeds, SEVERITIES.index(severity)])


def degrade_file(source: Path, out: Path, seed: int | tuple[int, ...], severity: str) -> Path:
    """Reads a real photo, writes it as taken by :func:`camera` at ``severity`` (JPEG, same size) at ``out``.

    Raises:
        SimclrWatchesError: unknown severity.
        ImageReadError: the source is not a usable image.
    """
    from simclr_watches.data.images import load_image

    if severity not in LEVELS:
        raise SimclrWatchesError(f"unknown severity {severity!r}; known: {', '.join(SEVERITIES)}")
    shot = camera(load_image(source).rgb, _rng(seed, severity), LEVELS[severity])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(shot)
    return out


def simulate_file(source: Path, out: Path, seed: int | tuple[int, ...], severity: str, size: int = 384) -> Path:
    """Reads a packshot, writes its simulated photo as JPEG at ``out``, returns ``out``.

    Raises:
        ImageReadError: the source is not a usable image.
    """
    from simclr_watches.data.images import load_image

    photo = load_image(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(simulate_photo(photo.rgb, photo.alpha, seed, severity, size))
    return out
