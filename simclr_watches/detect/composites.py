"""Training pictures for the box head: a cut-out watch pasted on another background, its box known.

Every composite is drawn from a catalog packshot (or a synthetic watch) and a background
that is not a watch photo: colour gradients, smooth noise, zoomed crops of other objects'
photos (COIL-100), a collage of objects. A skin-coloured band (an arm) often runs under the
watch along its strap, and other objects are pasted around it as distractors. The watch is
scaled, rotated and placed at random, then the light, colour cast, blur, sensor noise and
JPEG quality change: the box of the pasted watch's mask is the label, for free.

This code is apart from the evaluation's photo simulator (:mod:`simclr_watches.data.simulate`)
on purpose: the simulated ``photo`` queries must not be made by the code the head learnt from.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from simclr_watches.core.config import check_pair, check_range

# Skin tones (sRGB) the arm band is drawn in, light to dark; each is jittered.
SKIN = ((236, 197, 170), (224, 172, 138), (198, 134, 96), (160, 104, 72), (110, 70, 50), (70, 46, 36))
BACKGROUND_KINDS = ("gradient", "noise", "texture", "collage")


@dataclass(frozen=True)
class Cutout:
    """A picture cut out of its background: RGB and its mask (L, 255 on the object), cropped tight."""

    rgb: Image.Image
    mask: Image.Image


@dataclass(frozen=True)
class CompositeConfig:
    """How composites are drawn.

    Attributes:
        size: shorter side of a composite, pixels (the encoder sees it padded square at its own size).
        aspects: width / height ratios drawn from (uniformly).
        scale: the watch's longer side as a fraction of the composite's shorter side.
        rotation_deg: rotation of the watch, up to +- this.
        arm_p: chance of an arm band under the watch.
        distractors: how many other objects are pasted around the watch, (fewest, most).
        gain, gamma: light: a factor on every pixel, then a gamma (above 1 darkens).
        cast: colour cast, each channel's gain within 1 +- this.
        blur: Gaussian blur radius in pixels, (least, most).
        noise: std of Gaussian sensor noise, 0-255 scale, (least, most).
        jpeg: JPEG quality, (lowest, highest).
    """

    size: int = 256
    aspects: tuple[float, ...] = (1.0, 1.0, 1.0, 0.75, 1.333)
    scale: tuple[float, float] = (0.2, 0.95)
    rotation_deg: float = 60.0
    arm_p: float = 0.6
    distractors: tuple[int, int] = (0, 3)
    gain: tuple[float, float] = (0.45, 1.15)
    gamma: tuple[float, float] = (0.7, 1.6)
    cast: float = 0.2
    blur: tuple[float, float] = (0.0, 1.8)
    noise: tuple[float, float] = (0.0, 14.0)
    jpeg: tuple[int, int] = (35, 95)

    def __post_init__(self) -> None:
        check_range(self, "size", 32, 2048)
        check_range(self, "aspects", 0.25, 4.0)
        check_pair(self, "scale", 0.05, 1.0)
        check_range(self, "rotation_deg", 0.0, 180.0)
        check_range(self, "arm_p", 0.0, 1.0)
        check_pair(self, "distractors", 0, 10)
        check_pair(self, "gain", 0.05, 3.0)
        check_pair(self, "gamma", 0.2, 5.0)
        check_range(self, "cast", 0.0, 0.9)
        check_pair(self, "blur", 0.0, 20.0)
        check_pair(self, "noise", 0.0, 100.0)
        check_pair(self, "jpeg", 5, 100)


def cutout(rgb: Image.Image, mask: np.ndarray, max_side: int = 320) -> Cutout | None:
    """The object of ``rgb`` where ``mask`` (bool (H, W)) is True, cropped tight and at most ``max_side`` px.

    Returns:
        None when the mask is empty or covers the whole picture (nothing was cut out).
    """
    if not mask.any() or mask.all():
        return None
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    rgb, m = rgb.crop(box), Image.fromarray(mask.astype(np.uint8) * 255).crop(box)
    scale = max_side / max(rgb.size)
    if scale < 1:
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb, m = rgb.resize(size, Image.Resampling.BILINEAR), m.resize(size, Image.Resampling.BILINEAR)
    return Cutout(rgb, m)


def dark_background_mask(rgb: Image.Image, threshold: int = 40) -> np.ndarray:
    """Foreground of an object photographed on black (COIL-100): any channel above ``threshold``."""
    return np.asarray(rgb, dtype=np.uint8).max(axis=2) > threshold


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(20, 235, 3)


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    """(h, w) float noise in [0, 1], smooth at about ``cells`` blobs across."""
    small = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), np.float32) / 255


def background(kind: str, rng: np.random.Generator, w: int, h: int, objects: list[Cutout]) -> Image.Image:
    """A (w, h) RGB background of ``BACKGROUND_KINDS`` ``kind``; ``objects`` feed texture and collage."""
    c0, c1 = _colour(rng), _colour(rng)
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        x, y = np.meshgrid(np.linspace(-1, 1, w), np.linspace(-1, 1, h))
        t = np.clip((np.cos(angle) * x + np.sin(angle) * y + 1) / 2, 0, 1)[..., None]
    elif kind == "noise" or not objects:
        t = _smooth_noise(rng, w, h, int(rng.integers(2, 24)))[..., None]
    if kind in ("gradient", "noise") or not objects:
        return Image.fromarray((c0 + (c1 - c0) * t).clip(0, 255).astype(np.uint8))
    if kind == "texture":
        obj = objects[int(rng.integers(len(objects)))].rgb
        side = max(4, int(min(obj.size) * rng.uniform(0.25, 0.6)))
        x0, y0 = int(rng.integers(0, obj.width - side + 1)), int(rng.integers(0, obj.height - side + 1))
        tex = obj.crop((x0, y0, x0 + side, y0 + side)).resize((w, h), Image.Resampling.BICUBIC)
        return tex.filter(ImageFilter.GaussianBlur(rng.uniform(0, 3)))
    out = background("gradient", rng, w, h, [])
    for _ in range(int(rng.integers(4, 10))):
        _paste(out, objects[int(rng.integers(len(objects)))], rng, rng.uniform(0.2, 0.6) * min(w, h), rng.uniform(0, 360))
    return out.filter(ImageFilter.GaussianBlur(rng.uniform(1, 4)))


def _transformed(obj: Cutout, side: float, angle: float) -> Cutout:
    """``obj`` scaled so its longer side is ``side`` px, then rotated by ``angle`` degrees (canvas grown)."""
    scale = side / max(obj.rgb.size)
    size = (max(1, round(obj.rgb.width * scale)), max(1, round(obj.rgb.height * scale)))
    rgb = obj.rgb.resize(size, Image.Resampling.BILINEAR).rotate(angle, Image.Resampling.BILINEAR, expand=True)
    mask = obj.mask.resize(size, Image.Resampling.BILINEAR).rotate(angle, Image.Resampling.BILINEAR, expand=True)
    return Cutout(rgb, mask)


def _paste(canvas: Image.Image, obj: Cutout, rng: np.random.Generator, side: float, angle: float,
           at: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """Pastes ``obj`` (scaled, rotated) onto ``canvas`` at ``at`` (its top-left) or at random; its mask's box."""
    t = _transformed(obj, side, angle)
    if at is None:
        at = (int(rng.integers(-t.rgb.width // 3, canvas.width - 2 * t.rgb.width // 3 + 1)),
              int(rng.integers(-t.rgb.height // 3, canvas.height - 2 * t.rgb.height // 3 + 1)))
    canvas.paste(t.rgb, at, t.mask)
    return at


def _arm(canvas: Image.Image, rng: np.random.Generator, centre: tuple[float, float], angle: float, width: float) -> None:
    """A skin-coloured band of ``width`` px through ``centre``, along the watch's strap (``angle`` from vertical)."""
    w, h = canvas.size
    tone = np.array(SKIN[int(rng.integers(len(SKIN)))], float) * rng.uniform(0.85, 1.1, 3)
    length = 2 * (w + h)
    dx, dy = np.sin(np.radians(angle)), np.cos(np.radians(angle))  # PIL rotates counter-clockwise
    nx, ny = dy, -dx
    cx, cy = centre
    corners = [(cx + sx * dx * length / 2 + sn * nx * width / 2, cy + sx * dy * length / 2 + sn * ny * width / 2)
               for sx, sn in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    band = Image.new("L", (w, h), 0)
    ImageDraw.Draw(band).polygon(corners, fill=255)
    band = band.filter(ImageFilter.GaussianBlur(max(1.0, width * 0.05)))
    # Shading across the band: a cylinder lit from one side.
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    across = np.clip(((x - cx) * nx + (y - cy) * ny) / (width / 2), -1, 1)
    shade = (0.75 + 0.3 * np.sqrt(1 - across**2) * (1 + 0.3 * across * rng.choice((-1, 1))))[..., None]
    skin = Image.fromarray((tone * shade).clip(0, 255).astype(np.uint8))
    canvas.paste(skin, (0, 0), band)


def _light(img: Image.Image, rng: np.random.Generator, cfg: CompositeConfig) -> Image.Image:
    """Light gain and gamma, colour cast, blur, sensor noise, then JPEG."""
    arr = np.asarray(img, np.float32) / 255
    arr = (arr * rng.uniform(*cfg.gain)).clip(0, 1) ** rng.uniform(*cfg.gamma)
    arr = arr * rng.uniform(1 - cfg.cast, 1 + cfg.cast, 3)
    out = Image.fromarray((arr * 255).clip(0, 255).astype(np.uint8))
    radius = rng.uniform(*cfg.blur)
    if radius > 0.05:
        out = out.filter(ImageFilter.GaussianBlur(radius))
    noisy = np.asarray(out, np.float32) + rng.normal(0, rng.uniform(*cfg.noise), (out.height, out.width, 3))
    out = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=int(rng.integers(cfg.jpeg[0], cfg.jpeg[1] + 1)))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def make_composite(watch: Cutout, objects: list[Cutout], rng: np.random.Generator,
                   cfg: CompositeConfig = CompositeConfig()) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """One composite: ``watch`` on a background made of ``objects`` (which may be empty), and the watch's box.

    Returns:
        the RGB picture and ``(x0, y0, x1, y1)``, the box of the watch's pasted mask in its pixels
        (x1, y1 exclusive), inside the picture; objects pasted on top never hide the watch.
    """
    aspect = float(rng.choice(cfg.aspects))
    w, h = (round(cfg.size * aspect), cfg.size) if aspect >= 1 else (cfg.size, round(cfg.size / aspect))
    canvas = background(str(rng.choice(BACKGROUND_KINDS)), rng, w, h, objects)
    for _ in range(int(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1)) if objects else 0):
        _paste(canvas, objects[int(rng.integers(len(objects)))], rng, rng.uniform(0.15, 0.45) * min(w, h),
               rng.uniform(0, 360))
    angle = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    t = _transformed(watch, rng.uniform(*cfg.scale) * min(w, h), angle)
    tw, th = min(t.rgb.width, w), min(t.rgb.height, h)
    x, y = int(rng.integers(0, w - tw + 1)), int(rng.integers(0, h - th + 1))
    if rng.random() < cfg.arm_p:
        strap = min(watch.rgb.size) * (min(tw, th) / max(min(watch.rgb.size), 1)) * rng.uniform(0.6, 1.1)
        _arm(canvas, rng, (x + t.rgb.width / 2, y + t.rgb.height / 2), angle, max(8.0, min(strap, 0.9 * min(w, h))))
    canvas.paste(t.rgb, (x, y), t.mask)
    m = np.zeros((h, w), bool)
    paste = np.asarray(t.mask)[: h - y, : w - x] >= 128
    m[y: y + paste.shape[0], x: x + paste.shape[1]] = paste
    ys, xs = np.nonzero(m)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else (x, y, x + tw, y + th)
    return _light(canvas, rng, cfg), box


def box_in_square(box: tuple[int, int, int, int], w: int, h: int) -> tuple[float, float, float, float]:
    """A pixel box of a (w, h) picture in units of its padded square (the encoder's input, centred padding)."""
    side = max(w, h)
    ox, oy = (side - w) / 2, (side - h) / 2
    x0, y0, x1, y1 = box
    return ((x0 + ox) / side, (y0 + oy) / side, (x1 + ox) / side, (y1 + oy) / side)


def box_from_square(box: np.ndarray | tuple[float, ...], w: int, h: int) -> tuple[int, int, int, int]:
    """The inverse of :func:`box_in_square`: a box in units of the padded square to pixels of the (w, h) picture, clipped."""
    side = max(w, h)
    ox, oy = (side - w) / 2, (side - h) / 2
    x0, y0, x1, y1 = (float(v) for v in box)
    px = [x0 * side - ox, y0 * side - oy, x1 * side - ox, y1 * side - oy]
    x0, x1 = int(np.clip(np.floor(px[0]), 0, w - 1)), int(np.clip(np.ceil(px[2]), 1, w))
    y0, y1 = int(np.clip(np.floor(px[1]), 0, h - 1)), int(np.clip(np.ceil(px[3]), 1, h))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def square(box: tuple[int, int, int, int], side: float, w: int, h: int) -> tuple[int, int, int, int]:
    """The square centred on ``box`` of ``side`` times its longer side, clipped to a (w, h) picture (at least 1 px)."""
    x0, y0, x1, y1 = box
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, side * max(x1 - x0, y1 - y0) / 2
    sx0, sy0 = int(max(0, cx - half)), int(max(0, cy - half))
    return sx0, sy0, max(sx0 + 1, int(min(w, cx + half))), max(sy0 + 1, int(min(h, cy + half)))
