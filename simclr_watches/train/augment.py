"""SimCLR views of watch photos, made in batches with Kornia on the tensors' own device.

SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations", arXiv:2002.05709) learns by pulling two random views of an image
together. Which invariances the encoder learns is decided here: a user's photo
shows the watch on another background, in other light, at an angle, small in the
frame or partly hidden, so the views simulate exactly that. Colour changes are kept
milder than the paper's, because a watch's colour is part of what a shopper means
by "similar".

A view is made in three stages: geometry (applied to the image and its foreground
mask in sync), compositing (background swap, small paste, occlusion: these need the
mask), then photometric changes of the whole picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import kornia.augmentation as K
import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine
from PIL import Image
from torch import nn

from simclr_watches.core.config import check_pair, check_range
from simclr_watches.core.validate import FieldError

# Background kinds of the swap, in the order of AugmentConfig.background_weights.
BACKGROUND_KINDS = ("solid", "gradient", "noise", "other")
# Largest view side: views are the encoder's input (224 by default).
MAX_VIEW_SIDE = 1024


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and strengths of every operation (a probability of 0 switches it off).

    Attributes:
        size: side of the square views, pixels.
        crop_scale: area fraction range of the random resized crop.
        crop_ratio: aspect ratio range of the crop.
        flip_p: horizontal flip.
        rotation_p, rotation_deg: rotation by up to +-``rotation_deg`` degrees.
        perspective_p, perspective: mild perspective, as Kornia's distortion scale.
        background_p: replace the background (outside the mask) by one of BACKGROUND_KINDS.
        background_weights: relative odds of solid, gradient, noise, other-image backgrounds.
        other_crop_scale: area fraction of another photo that an "other" background is zoomed from.
        small_paste_p: shrink the watch to ``small_paste_scale`` of the frame and paste it at a
            random place on a cluttered (noise or other-image) background (issue 6).
        occlude_p, occlude_width: a band of a solid colour across the image, width as a fraction.
        jitter_p, brightness, contrast, saturation, hue: Kornia ColorJiggle.
        grayscale_p: random grayscale.
        gamma_p, gamma: darker or brighter light (gamma above 1 darkens).
        cast_p: colour cast of the light source (Planckian jitter: warm to cold white).
        illumination_p, illumination_gain: a linear brightness gradient across the image (uneven light).
        blur_p, blur_sigma: gaussian blur; kernel side about a tenth of the view.
    """

    size: int = 224
    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 4.0 / 3.0)
    flip_p: float = 0.5
    rotation_p: float = 0.7
    rotation_deg: float = 30.0
    perspective_p: float = 0.3
    perspective: float = 0.25
    background_p: float = 0.6
    background_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    other_crop_scale: tuple[float, float] = (0.05, 0.35)
    small_paste_p: float = 0.15
    small_paste_scale: tuple[float, float] = (0.15, 0.6)
    occlude_p: float = 0.15
    occlude_width: tuple[float, float] = (0.06, 0.2)
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.3
    hue: float = 0.04
    grayscale_p: float = 0.1
    gamma_p: float = 0.5
    gamma: tuple[float, float] = (0.6, 1.8)
    cast_p: float = 0.3
    illumination_p: float = 0.2
    illumination_gain: tuple[float, float] = (0.01, 0.2)
    blur_p: float = 0.3
    blur_sigma: tuple[float, float] = (0.1, 1.5)

    def __post_init__(self) -> None:
        for name in ("flip_p", "rotation_p", "perspective_p", "background_p", "small_paste_p", "occlude_p",
                     "jitter_p", "grayscale_p", "gamma_p", "cast_p", "illumination_p", "blur_p"):
            check_range(self, name, 0.0, 1.0)
        check_range(self, "size", 8, MAX_VIEW_SIDE)
        for name in ("crop_scale", "other_crop_scale", "small_paste_scale", "occlude_width"):
            check_pair(self, name, 0.0, 1.0, low_open=True)
        check_pair(self, "crop_ratio", 0.0, 10.0, low_open=True)
        check_range(self, "rotation_deg", 0.0, 180.0)
        check_range(self, "perspective", 0.0, 1.0)
        check_range(self, "background_weights", 0.0)
        if sum(self.background_weights) <= 0:
            raise FieldError("background_weights", f"must have a positive sum, got {list(self.background_weights)}")
        for name in ("brightness", "contrast", "saturation"):
            check_range(self, name, 0.0, 1.0)
        check_range(self, "hue", 0.0, 0.5)
        check_pair(self, "gamma", 0.0, 10.0, low_open=True)
        check_pair(self, "illumination_gain", 0.0, 1.0)
        check_pair(self, "blur_sigma", 0.0, 10.0, low_open=True)


def _maybe(p: float, op: nn.Module) -> list[nn.Module]:
    return [op] if p > 0 else []


def _bernoulli(n: int, p: float, device: torch.device) -> torch.Tensor:
    return torch.rand(n, device=device) < p


class SimCLRAugment(nn.Module):
    """Two independent random views of each image in a batch.

    Shapes:
        images: (B, 3, H, W) float in [0, 1] (uint8 is accepted and scaled).
        masks: (B, 1, H, W), nonzero on the watch.
        each view: (B, 3, size, size) float in [0, 1], not yet normalised for the model.
    """

    def __init__(self, cfg: AugmentConfig):
        super().__init__()
        self.cfg = cfg
        s = (cfg.size, cfg.size)
        self.geometry = K.AugmentationSequential(
            *_maybe(cfg.rotation_p, K.RandomRotation(cfg.rotation_deg, p=cfg.rotation_p)),
            *_maybe(cfg.perspective_p, K.RandomPerspective(cfg.perspective, p=cfg.perspective_p)),
            K.RandomResizedCrop(s, scale=cfg.crop_scale, ratio=cfg.crop_ratio),
            *_maybe(cfg.flip_p, K.RandomHorizontalFlip(p=cfg.flip_p)),
            data_keys=["input", "mask"],
        )
        kernel = 2 * max(1, cfg.size // 20) + 1
        self.photometric = nn.Sequential(
            *_maybe(cfg.jitter_p, K.ColorJiggle(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, p=cfg.jitter_p)),
            *_maybe(cfg.grayscale_p, K.RandomGrayscale(p=cfg.grayscale_p)),
            *_maybe(cfg.gamma_p, K.RandomGamma(cfg.gamma, p=cfg.gamma_p)),
            *_maybe(cfg.cast_p, K.RandomPlanckianJitter(p=cfg.cast_p)),
            *_maybe(cfg.illumination_p, LinearIllumination(cfg.illumination_p, cfg.illumination_gain)),
            *_maybe(cfg.blur_p, K.RandomGaussianBlur(kernel, cfg.blur_sigma, p=cfg.blur_p)),
        )

    def geometric(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotation, perspective, resized crop and flip, identical for image and mask.

        Returns:
            image (B, 3, size, size) and mask (B, 1, size, size) with values 0 or 1.
        """
        # Warps fill uncovered corners with 0; warping the negative makes them white, the catalog's backdrop.
        inv, m = self.geometry(1.0 - images, masks.float())
        return 1.0 - inv, (m > 0.5).to(images.dtype)

    def backgrounds(self, images: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
        """One background per sample, of kind ``BACKGROUND_KINDS[kinds[i]]``.

        Args:
            images: (B, 3, S, S) the batch's geometric views; "other" crops come from a neighbour's.
            kinds: (B,) long.

        Returns:
            (B, 3, S, S) in [0, 1].
        """
        b, _, s, _ = images.shape
        dev, dt = images.device, images.dtype
        c0 = torch.rand(b, 3, 1, 1, device=dev, dtype=dt)
        c1 = torch.rand(b, 3, 1, 1, device=dev, dtype=dt)
        ramp = linear_ramps(b, s, dev, dt)
        t = torch.where((kinds == 1).view(b, 1, 1, 1), ramp, torch.zeros_like(ramp))
        t = torch.where((kinds == 2).view(b, 1, 1, 1), fractal_noise(b, s, dev, dt), t)
        bg = c0 + (c1 - c0) * t
        # Pieces of other photos, zoomed in so they read as texture and clutter, not as a second catalog shot.
        other = K.RandomResizedCrop((s, s), scale=self.cfg.other_crop_scale)(images.roll(1, dims=0))
        return torch.where((kinds == 3).view(b, 1, 1, 1), other, bg)

    def composite(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Background swap, small paste and occlusion of geometric views.

        Args:
            images: (B, 3, S, S) in [0, 1].
            masks: (B, 1, S, S) 0/1, in sync with ``images``.

        Returns:
            (B, 3, S, S) in [0, 1]. Where no occlusion band falls, a pixel inside the mask of
            a sample that was not shrunk is the input pixel, unchanged.
        """
        cfg = self.cfg
        b, _, s, _ = images.shape
        dev = images.device
        swap = _bernoulli(b, cfg.background_p, dev)
        paste = _bernoulli(b, cfg.small_paste_p, dev)
        weights = torch.tensor(cfg.background_weights, device=dev, dtype=torch.float32)
        kinds = torch.multinomial(weights, b, replacement=True)
        # A small watch is what an on-wrist or street photo looks like: put it on clutter, not on a plain colour.
        kinds = torch.where(paste, 2 + torch.randint(0, 2, (b,), device=dev), kinds)
        fg, m = images, masks
        if paste.any():
            idx = paste.nonzero().squeeze(1)
            scale = torch.empty(len(idx), device=dev).uniform_(*cfg.small_paste_scale)
            shift = torch.rand(len(idx), 2, device=dev) * (1.0 - scale)[:, None] * s
            affine = torch.zeros(len(idx), 2, 3, device=dev)
            affine[:, 0, 0] = affine[:, 1, 1] = scale
            affine[:, :, 2] = shift
            fg, m = images.clone(), masks.clone()
            fg[idx] = warp_affine(images[idx], affine.to(images.dtype), (s, s))
            m[idx] = (warp_affine(masks[idx], affine.to(masks.dtype), (s, s)) > 0.5).to(masks.dtype)
        bg = self.backgrounds(images, kinds)
        use = (swap | paste).view(b, 1, 1, 1)
        out = torch.where(use, fg * m + bg * (1.0 - m), images)
        occlude = _bernoulli(b, cfg.occlude_p, dev)
        if occlude.any():
            band = occlusion_bands(b, s, cfg.occlude_width, dev) & occlude.view(b, 1, 1, 1)
            colour = torch.rand(b, 3, 1, 1, device=dev, dtype=images.dtype)
            out = torch.where(band, colour.expand_as(out), out)
        return out

    def view(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """One random view per image: (B, 3, size, size) in [0, 1]."""
        x, m = self.geometric(images, masks)
        return self.photometric(self.composite(x, m)).clamp_(0.0, 1.0)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent views of every image, each (B, 3, size, size) float in [0, 1]."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        # One pass over a doubled batch: every op draws parameters per sample, so the two halves are
        # independent views, and each Kornia op launches its kernels once instead of twice.
        views = self.view(torch.cat([images, images]), torch.cat([masks, masks]))
        return views[: len(images)], views[len(images) :]


def linear_ramps(b: int, s: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A linear 0-to-1 ramp per sample, in a random direction.

    Returns:
        (B, 1, s, s) in [0, 1].
    """
    axis = torch.linspace(0.0, 1.0, s, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    angle = torch.rand(b, 1, 1, device=device, dtype=dtype) * (2 * math.pi)
    ramp = (xx * torch.cos(angle) + yy * torch.sin(angle))[:, None]
    lo, hi = ramp.amin((2, 3), keepdim=True), ramp.amax((2, 3), keepdim=True)
    return (ramp - lo) / (hi - lo + 1e-6)


class LinearIllumination(nn.Module):
    """Uneven light: adds +-gain x a linear ramp in a random direction, on the images' own device.

    Kornia's RandomLinearIllumination builds its full-size (B, 3, H, W) pattern on the CPU
    and copies it to the GPU every call; this draws the same kind of pattern on the device.
    """

    def __init__(self, p: float, gain: tuple[float, float]):
        super().__init__()
        self.p, self.gain = p, gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        on = _bernoulli(b, self.p, x.device).view(b, 1, 1, 1)
        gain = torch.empty(b, 1, 1, 1, device=x.device, dtype=x.dtype).uniform_(*self.gain)
        sign = torch.where(torch.rand(b, 1, 1, 1, device=x.device) < 0.5, -1.0, 1.0).to(x.dtype)
        shift = linear_ramps(b, x.shape[-1], x.device, x.dtype) * gain * sign
        return torch.where(on, (x + shift).clamp(0.0, 1.0), x)


def fractal_noise(b: int, s: int, device: torch.device, dtype: torch.dtype = torch.float32, octaves: int = 5) -> torch.Tensor:
    """Plasma-like value noise: random grids of doubling resolution, upsampled and summed.

    Returns:
        (B, 1, s, s) in [0, 1], stretched per sample to the full range.
    """
    out = torch.zeros(b, 1, s, s, device=device, dtype=dtype)
    for o in range(octaves):
        cells = min(s, 2 ** (o + 1) + 1)
        grid = torch.rand(b, 1, cells, cells, device=device, dtype=dtype)
        out += F.interpolate(grid, size=(s, s), mode="bicubic", align_corners=True) * 0.5**o
    lo, hi = out.amin((2, 3), keepdim=True), out.amax((2, 3), keepdim=True)
    return (out - lo) / (hi - lo + 1e-6)


def occlusion_bands(b: int, s: int, width: tuple[float, float], device: torch.device) -> torch.Tensor:
    """A straight band per sample through a point near the centre (where the watch usually is).

    Returns:
        (B, 1, s, s) bool, True inside the band.
    """
    axis = torch.arange(s, device=device, dtype=torch.float32)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    centre = (0.25 + 0.5 * torch.rand(b, 2, 1, 1, device=device)) * s
    angle = torch.rand(b, 1, 1, device=device) * math.pi
    half = torch.empty(b, 1, 1, device=device).uniform_(*width) * s / 2
    dist = (xx - centre[:, 0]) * -torch.sin(angle) + (yy - centre[:, 1]) * torch.cos(angle)
    return (dist.abs() < half)[:, None]


def preview_grid(images: torch.Tensor, masks: torch.Tensor, augment: SimCLRAugment, pad: int = 4) -> Image.Image:
    """A picture of the augmentation: one row per image, showing the source and its two views.

    Args:
        images: (B, 3, H, W) uint8 or [0, 1] floats.
        masks: (B, 1, H, W).

    Returns:
        RGB image of B rows x 3 columns of ``augment.cfg.size`` squares on white.
    """
    s = augment.cfg.size
    v1, v2 = augment(images, masks)
    src = images.float() / 255.0 if images.dtype == torch.uint8 else images
    src = F.interpolate(src, size=(s, s), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    b = images.shape[0]
    grid = np.full((b * (s + pad) + pad, 3 * (s + pad) + pad, 3), 255, np.uint8)
    for i in range(b):
        for j, t in enumerate((src[i], v1[i], v2[i])):
            y, x = pad + i * (s + pad), pad + j * (s + pad)
            grid[y : y + s, x : x + s] = (t.permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(grid)
