"""Synthetic watch catalog: seeded procedural packshots with known attributes.

A watch is drawn front-facing on white, strap running top to bottom, with
metal shading, a soft drop shadow and supersampled anti-aliasing. Its
attributes are recorded with coarse colour names, so an evaluation can ask
whether neighbours in embedding space share shape, colours or strap type.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from simclr_watches.core.atomic import atomic_dir
from simclr_watches.core.outputs import OutputKind, owned_folder, prepare_output, read_prefix
from simclr_watches.core.progress import progress_bar

SHAPES = ("round", "square", "tonneau", "cushion")
STRAP_TYPES = ("leather", "metal", "mesh", "rubber", "cord")
CASE_COLORS = ("silver", "gold", "rose_gold", "black")
DIAL_COLORS = ("white", "silver", "black", "blue", "green", "brown")
STRAP_COLORS = {
    "leather": ("black", "brown", "tan", "blue", "green", "red"),
    "rubber": ("black", "blue", "orange", "white", "green"),
    "cord": ("black", "red", "blue", "green", "orange", "brown"),
}
BEZELS = ("none", "polished", "diver")
INDICES = ("batons", "dots", "numerals")
CSV_COLUMNS = ("path", "shape", "case_color", "dial_color", "strap_type", "strap_color")

# Base tones (sRGB); shading scales them, so metals are mid-tones that can go bright or dark.
RGB = {
    "silver": (176, 180, 186), "gold": (206, 166, 82), "rose_gold": (220, 158, 136), "black": (40, 40, 44),
    "white": (238, 236, 230), "blue": (32, 58, 120), "green": (30, 84, 58), "brown": (96, 58, 34),
    "tan": (170, 116, 66), "red": (140, 28, 34), "orange": (226, 108, 28),
}
METALS = ("silver", "gold", "rose_gold")
SUPERSAMPLE = 3


@dataclass(frozen=True)
class WatchAttributes:
    """Everything that decides how a synthetic watch looks.

    Attributes:
        shape: one of ``SHAPES``.
        case_color: metal tone, one of ``CASE_COLORS``.
        dial_color: one of ``DIAL_COLORS``.
        strap_type: one of ``STRAP_TYPES``.
        strap_color: coarse colour name (a metal bracelet has the case's).
        strap_width: strap width in case radii.
        bezel: ``none``, ``polished`` or ``diver`` (a dark ring with minute ticks).
        indices: hour marks, one of ``INDICES``.
        case_radius: case radius as a fraction of the image side.
        hour, minute, second: the time shown.
    """

    shape: str
    case_color: str
    dial_color: str
    strap_type: str
    strap_color: str
    strap_width: float
    bezel: str = "none"
    indices: str = "batons"
    case_radius: float = 0.3
    hour: float = 10.15
    minute: float = 9.0
    second: float = 35.0


def sample_attributes(rng: np.random.Generator) -> WatchAttributes:
    """Draws a random, plausible combination of attributes."""
    shape = str(rng.choice(SHAPES))
    case = str(rng.choice(CASE_COLORS))
    strap_type = str(rng.choice(STRAP_TYPES))
    strap_color = case if strap_type in ("metal", "mesh") else str(rng.choice(STRAP_COLORS[strap_type]))
    width = rng.uniform(0.12, 0.2) if strap_type == "cord" else rng.uniform(0.5, 0.8)
    bezel = str(rng.choice(BEZELS if shape == "round" else BEZELS[:2]))
    minute = float(rng.uniform(0, 60))
    return WatchAttributes(
        shape=shape, case_color=case, dial_color=str(rng.choice(DIAL_COLORS)), strap_type=strap_type,
        strap_color=strap_color, strap_width=round(float(width), 3), bezel=bezel, indices=str(rng.choice(INDICES)),
        case_radius=round(float(rng.uniform(0.25, 0.31)), 3), hour=float(rng.integers(0, 12)) + minute / 60,
        minute=minute, second=float(rng.uniform(0, 60)),
    )


def _radius(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A 'radius' that is 1 on the case outline and scales with distance, so ``r <= k`` is a shrunk case."""
    ax, ay = np.abs(x), np.abs(y)
    if shape == "round":
        return np.hypot(x, y)
    if shape == "square":
        return ((ax / 0.88) ** 10 + (ay / 0.88) ** 10) ** 0.1
    if shape == "cushion":
        return ((ax / 0.95) ** 4 + (ay / 0.95) ** 4) ** 0.25
    barrel = 1 - 0.22 * np.clip(ay / 1.12, 0, 1) ** 2  # tonneau: widest at the middle, taller than wide
    return ((ax / (0.8 * barrel)) ** 4 + (ay / 1.12) ** 4) ** 0.25


def _extent(shape: str, dx: float, dy: float) -> float:
    """Distance from the centre to the case outline along the unit direction (dx, dy)."""
    return 1.0 / float(_radius(shape, np.array(dx), np.array(dy)))


class _Canvas:
    """A supersampled float canvas in case-radius units centred on the watch."""

    def __init__(self, size: int, radius: float, rng: np.random.Generator):
        self.n = size * SUPERSAMPLE
        self.scale = radius * self.n  # pixels per unit
        coords = (np.arange(self.n, dtype=np.float32) + 0.5 - self.n / 2) / self.scale
        self.x, self.y = np.meshgrid(coords, coords)
        self.rgb = np.full((self.n, self.n, 3), 255.0, dtype=np.float32)
        self.grain = rng.normal(0, 1, (self.n, self.n)).astype(np.float32)

    def px(self, x: float, y: float) -> tuple[float, float]:
        return self.n / 2 + x * self.scale, self.n / 2 + y * self.scale

    def draw(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        img = Image.new("L", (self.n, self.n), 0)
        return img, ImageDraw.Draw(img)

    def paint(self, mask: np.ndarray | Image.Image, base: str | tuple, light: np.ndarray | float = 1.0,
              spec: np.ndarray | float = 0.0) -> None:
        """Fills ``mask`` with ``base`` times ``light`` (a full-canvas field), blended toward white by ``spec``."""
        m = np.asarray(mask) > 0 if isinstance(mask, Image.Image) else mask
        col = np.array(RGB[base] if isinstance(base, str) else base, dtype=np.float32)
        lit = np.broadcast_to(np.asarray(light, np.float32), m.shape)[m]
        hi = np.broadcast_to(np.asarray(spec, np.float32), m.shape)[m]
        out = col * lit[:, None]
        self.rgb[m] = np.clip(out + hi[:, None] * (255 - out), 0, 255)

    def darken(self, mask: np.ndarray, amount: np.ndarray | float) -> None:
        self.rgb *= 1 - np.where(mask, amount, 0)[..., None]

    def image(self, size: int) -> Image.Image:
        img = Image.fromarray(self.rgb.round().astype(np.uint8), "RGB")
        return img.resize((size, size), Image.Resampling.BOX)


def _metal_light(c: _Canvas, r: np.ndarray, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Brightness and specular highlight of a polished surface lit from the top left."""
    toward = -(c.x + c.y) / math.sqrt(2) / np.maximum(r, 0.2)  # +1 facing the light
    if flip:  # a bevel that slopes the other way catches light on the opposite side
        toward = -toward
    light = 0.74 + 0.38 * toward * np.clip(r, 0, 1) ** 2 + 0.02 * c.grain
    spec = 0.6 * np.exp(-(((c.x + 0.45) ** 2 + (c.y + 0.5) ** 2) / 0.05))
    return light, spec


def _strap(c: _Canvas, a: WatchAttributes, top: float) -> None:
    half = a.strap_width / 2
    end = 0.47 / a.case_radius  # leave a white margin at the image edge
    d = np.abs(c.y)
    taper = 1 - (0 if a.strap_type in ("metal", "mesh") else 0.18) * np.clip((d - top) / (end - top), 0, 1)
    w = half * taper
    inside = (np.abs(c.x) <= w) & (d <= end)
    if a.strap_type not in ("metal", "mesh"):  # rounded tips
        tip = d > end - w
        inside &= ~tip | (c.x ** 2 + (d - (end - w)) ** 2 <= w ** 2)
    u = c.x / np.maximum(w, 1e-3)  # -1..1 across the strap
    light = 0.9 + 0.12 * (-u) - 0.25 * u ** 4
    spec: np.ndarray | float = 0.0
    base = a.strap_color
    if a.strap_type == "leather":
        light = light + 0.04 * c.grain
        stitch = (np.abs(np.abs(u) - 0.82) < 0.035) & (np.sin(d * 40) > 0) & (d > top)
        c.paint(inside, base, light)
        c.paint(inside & stitch, base, 1.7)
        return
    if a.strap_type == "rubber":
        groove = (np.mod(d, 0.16) < 0.03) & (d < top + 0.9)
        light = light * np.where(groove, 0.7, 1.0) + 0.015 * c.grain
        spec = 0.12 * np.exp(-((u + 0.4) ** 2) / 0.02)
    elif a.strap_type == "cord":
        braid = np.sin((d * 9 + np.sign(c.x) * c.x * 14) * math.pi)
        light = light * (0.82 + 0.18 * braid) + 0.03 * c.grain
    elif a.strap_type == "mesh":
        k = c.scale * 0.45 / SUPERSAMPLE  # a weave period of a few output pixels, coarse enough to survive downsampling
        weave = np.sin((c.x + c.y) * k) * np.sin((c.x - c.y) * k)
        light = light * (0.88 + 0.2 * weave) + 0.03 * c.grain
        spec = 0.35 * np.exp(-((u + 0.35) ** 2) / 0.03)
    else:  # metal links: three pieces per row, polished centre, dark gaps between rows
        v = np.mod(d - top, 0.22) / 0.22
        centre = np.abs(u) < 0.33
        light = light * (0.75 + 0.35 * np.sin(math.pi * v)) * np.where(centre, 1.08, 0.92)
        gap = (v < 0.07) | (np.abs(np.abs(u) - 0.33) < 0.025)
        light = np.where(gap, 0.35, light)
        spec = np.where(centre & ~gap, 0.3 * np.sin(math.pi * v) ** 8, 0.0)
    c.paint(inside, base, light, spec)


def _hand(draw: ImageDraw.ImageDraw, c: _Canvas, angle: float, length: float, width: float,
          tail: float, shift: float = 0.0) -> None:
    ux, uy = math.sin(angle), -math.cos(angle)  # clockwise from 12 o'clock
    nx, ny = -uy, ux
    pts = [(-tail, width), (length * 0.92, width * 0.7), (length, 0), (length * 0.92, -width * 0.7), (-tail, -width)]
    draw.polygon([c.px(ux * t + nx * s + shift, uy * t + ny * s + shift * 1.5) for t, s in pts], fill=255)


def _dial_marks(c: _Canvas, a: WatchAttributes, dial: float, ink: tuple) -> None:
    img, draw = c.draw()
    font = ImageFont.load_default(size=max(8, int(0.2 * c.scale)))
    for i in range(60):
        ang = i * math.pi / 30
        ux, uy = math.sin(ang), -math.cos(ang)
        reach = dial * _extent(a.shape, ux, uy)
        nx, ny = -uy, ux
        if i % 5:  # minute track
            w, r0 = 0.006, reach * 0.93
        elif a.indices == "batons":
            w, r0 = (0.03 if i else 0.045), reach * 0.74
        elif a.indices == "dots":
            cx, cy = c.px(ux * reach * 0.86, uy * reach * 0.86)
            rad = (0.06 if i == 0 else 0.045) * c.scale
            draw.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], fill=255)
            continue
        else:
            cx, cy = c.px(ux * reach * 0.78, uy * reach * 0.78)
            draw.text((cx, cy), str(i // 5 or 12), font=font, fill=255, anchor="mm")
            w, r0 = 0.012, reach * 0.93
        r1 = reach * 0.98
        draw.polygon([c.px(ux * r + nx * s, uy * r + ny * s) for r, s in ((r0, w), (r1, w), (r1, -w), (r0, -w))],
                     fill=255)
    c.paint(img, ink, 1.0)


def render_watch(attrs: WatchAttributes, size: int = 256, seed: int = 0) -> Image.Image:
    """Draws one watch as an RGB packshot on white.

    Args:
        attrs: what to draw.
        size: side of the square image in pixels.
        seed: seeds the surface grain only; the same arguments give identical pixels.
    """
    a = attrs
    c = _Canvas(size, a.case_radius, np.random.default_rng(seed))
    r = _radius(a.shape, c.x, c.y)
    top = _extent(a.shape, 0, 1)

    # Drop shadow of the whole silhouette, cast down-right onto the white ground.
    end = 0.47 / a.case_radius
    sil = (r <= 1.02) | ((np.abs(c.x) <= a.strap_width / 2 + 0.12) & (np.abs(c.y) <= end))
    small = Image.fromarray((sil * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BOX)
    blur = small.filter(ImageFilter.GaussianBlur(size * 0.02)).resize((c.n, c.n), Image.Resampling.BILINEAR)
    blur = np.roll(np.asarray(blur, np.float32) / 255, (int(0.02 * c.n), int(0.012 * c.n)), axis=(0, 1))
    c.rgb *= (1 - 0.28 * blur)[..., None]

    _strap(c, a, top * 0.9)
    c.darken((r > 1) & (r < 1.25) & (np.abs(c.x) <= a.strap_width / 2), 0.45 * np.clip(1.25 - r, 0, 0.25) / 0.25)

    metal = a.case_color
    light, spec = _metal_light(c, r)
    lug_x = max(a.strap_width / 2, 0.2)
    lugs = (np.abs(c.x) >= lug_x) & (np.abs(c.x) <= lug_x + 0.11) & (np.abs(c.y) <= top + 0.2)
    c.paint(lugs, metal, light * 0.92, spec)
    if a.strap_type == "cord":  # the cord loops round a bar between the lugs
        bar = (np.abs(c.x) <= lug_x + 0.11) & (np.abs(np.abs(c.y) - top - 0.1) < 0.035)
        c.paint(bar, metal, 1.0 - 4 * (np.abs(np.abs(c.y) - top - 0.1)), spec)
    right = _extent(a.shape, 1, 0)
    crown = (c.x >= right - 0.05) & (c.x <= right + 0.11) & (np.abs(c.y) <= 0.11)
    c.paint(crown, metal, (0.85 - 0.4 * np.abs(c.y) / 0.11) * (0.85 + 0.15 * np.sin(c.y * 140)))

    c.paint(r <= 1, metal, light, spec)
    c.darken((r > 0.96) & (r <= 1), 0.25)  # outline: separates a pale case from the white ground
    dial = 0.88
    if a.bezel != "none":
        dial = 0.78
        ring = (r <= 0.93) & (r > dial)
        if a.bezel == "diver":
            dark = "black" if a.dial_color in ("white", "silver") else a.dial_color
            c.paint(ring, dark, 0.9 + 0.1 * light - 0.1)
            ang = np.arctan2(c.x, -c.y)
            ticks = ring & (r > 0.84) & (np.abs(np.mod(ang * 30 / math.pi + 0.5, 5) - 0.5) < 0.12)
            c.paint(ticks, "white", 0.92)
        else:
            flip_light, _ = _metal_light(c, r, flip=True)
            c.paint(ring, metal, flip_light)
    tone = RGB[a.dial_color]
    dark_dial = sum(tone) < 400
    sunburst = 0.04 * np.cos(2 * np.arctan2(c.y, c.x) + 1.0) if a.dial_color not in ("white", "black") else 0.0
    dial_light = 0.96 - 0.05 * (c.x + c.y) + sunburst - 0.15 * np.clip(r / dial, 0, 1) ** 6 + 0.008 * c.grain
    c.paint(r <= dial, a.dial_color, dial_light)
    c.darken((r > dial - 0.02) & (r <= dial), 0.3)  # the dial's edge sits in the case's shadow

    ink = (235, 235, 232) if dark_dial else ((120, 92, 40) if metal == "gold" else (30, 30, 34))
    _dial_marks(c, a, dial, ink)

    # Hands: a soft shadow on the dial first, then the hands.
    hands = [(a.hour / 12 * 2 * math.pi, 0.5 * dial, 0.045, 0.1), (a.minute / 60 * 2 * math.pi, 0.8 * dial, 0.035, 0.12)]
    for shift, paint in ((0.025, False), (0.0, True)):
        img, draw = c.draw()
        for ang, length, width, tail in hands:
            _hand(draw, c, ang, length, width, tail, shift)
        if paint:
            c.paint(img, ink, 1.0)
        else:
            c.darken(np.asarray(img) > 0, 0.3)
    img, draw = c.draw()
    _hand(draw, c, a.second / 60 * 2 * math.pi, 0.9 * dial, 0.008, 0.22)
    cx, cy = c.px(0, 0)
    rad = 0.045 * c.scale
    draw.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], fill=255)
    c.paint(img, (200, 40, 30) if a.dial_color != "red" else (240, 240, 240), 1.0)
    return c.image(size)


ATTRIBUTES_FILE = "attributes.csv"
IMAGES_DIR = "images"
_IMAGE_NAME = re.compile(r"\d{5}\.png")


def _attributes_owned(path: Path) -> bool:
    """Our attributes CSV: its first line is exactly the header :func:`make_catalog` writes."""
    return read_prefix(path, 256).splitlines()[:1] == [",".join(CSV_COLUMNS).encode()]


def _images_owned(path: Path) -> bool:
    """Our images folder: nothing but ``NNNNN.png`` files."""
    try:
        return path.is_dir() and all(_IMAGE_NAME.fullmatch(c.name) and c.is_file() for c in path.iterdir())
    except OSError:
        return False


SYNTH_OUTPUT = OutputKind(
    "synthetic catalog",
    folder=True,
    owned=owned_folder({ATTRIBUTES_FILE: _attributes_owned, IMAGES_DIR: _images_owned}, required=ATTRIBUTES_FILE),
)


def make_catalog(out_dir: Path | str, n: int, seed: int = 0, size: int = 256, progress: bool = True,
                 force: bool = False) -> Path:
    """Writes ``n`` synthetic watches as ``images/NNNNN.png`` plus ``attributes.csv``.

    The folder is built under a temporary name and renamed when complete, so its
    presence means the catalog is complete.

    Args:
        force: replace a synthetic catalog written earlier (only once the new one is
            complete); anything else at ``out_dir`` but an empty folder is never replaced.

    Returns:
        The path of ``attributes.csv``.

    Raises:
        SimclrWatchesError: ``out_dir`` may not be written (checked before rendering).
    """
    out = Path(out_dir)
    replace = prepare_output(out, SYNTH_OUTPUT, force=force)
    with atomic_dir(out, replace=replace) as tmp:
        _render_catalog(tmp, n, seed, size, progress)
    return out / ATTRIBUTES_FILE


def _render_catalog(folder: Path, n: int, seed: int, size: int, progress: bool) -> None:
    """Renders the images and writes the CSV into ``folder``."""
    (folder / IMAGES_DIR).mkdir()
    rng = np.random.default_rng(seed)
    rows = []
    with progress_bar("synth", n, enabled=progress) as advance:
        for i in range(n):
            attrs = sample_attributes(rng)
            rel = f"{IMAGES_DIR}/{i:05d}.png"
            render_watch(attrs, size, seed=int(rng.integers(2**31))).save(folder / rel)
            rows.append({"path": rel, **{k: v for k, v in asdict(attrs).items() if k in CSV_COLUMNS}})
            advance(1)
    with open(folder / ATTRIBUTES_FILE, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
