"""Kornia SimCLR augmentations: shapes, ranges, and that compositing follows the mask."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers import OFF
from simclr_watches.train.augment import AugmentConfig, SimCLRAugment, fractal_noise, preview_grid



def square_batch(b: int = 6, s: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """White images with a coloured square (the 'watch') and its exact mask."""
    gen = torch.Generator().manual_seed(0)
    images = torch.ones(b, 3, s, s)
    masks = torch.zeros(b, 1, s, s)
    lo, hi = s // 4, 3 * s // 4
    images[:, :, lo:hi, lo:hi] = torch.rand(b, 3, 1, 1, generator=gen) * 0.6
    masks[:, :, lo:hi, lo:hi] = 1
    return images, masks


def test_views_have_the_right_shape_range_and_differ():
    torch.manual_seed(0)
    images, masks = square_batch()
    aug = SimCLRAugment(dataclasses.replace(AugmentConfig(), size=24, small_paste_p=0.5, occlude_p=0.5))
    v1, v2 = aug(images, masks)
    for v in (v1, v2):
        assert v.shape == (6, 3, 24, 24) and v.dtype == torch.float32
        assert v.min() >= 0 and v.max() <= 1
    assert not torch.allclose(v1, v2)
    u1, _ = aug((images * 255).to(torch.uint8), masks.bool())
    assert u1.shape == (6, 3, 24, 24) and u1.dtype == torch.float32


def test_mask_follows_the_geometry():
    torch.manual_seed(1)
    images, masks = square_batch(8)
    cfg = dataclasses.replace(OFF, crop_scale=(0.5, 1.0), crop_ratio=(0.8, 1.25), flip_p=0.5, rotation_p=1.0,
                              perspective_p=1.0)
    x, m = SimCLRAugment(cfg).geometric(images, masks)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    coloured = (1 - x.min(dim=1, keepdim=True).values) > 0.2
    agree = (coloured == m.bool()).float().mean()
    assert agree > 0.97  # only resampled edge pixels may disagree
    assert (x[:, :, :2, :2] > 0.99).all()  # corners uncovered by the rotation are white backdrop, not black


def test_background_swap_changes_outside_the_mask_only():
    torch.manual_seed(2)
    images, masks = square_batch(16)
    # 'other' backgrounds are crops of the neighbours' mostly white photos, so they are checked apart.
    aug = SimCLRAugment(dataclasses.replace(OFF, background_p=1.0, rotation_p=1.0, background_weights=(1, 1, 1, 0)))
    x, m = aug.geometric(images, masks)
    out = aug.composite(x, m)
    inside, outside = m.bool().expand_as(x), ~m.bool().expand_as(x)
    assert torch.equal(out[inside], x[inside])
    changed = (out - x).abs().amax(dim=1, keepdim=True) > 1e-3
    assert changed[~m.bool()].float().mean() > 0.95


@pytest.mark.parametrize("kind", [0, 1, 2, 3])
def test_every_background_kind(kind):
    torch.manual_seed(3)
    images, _ = square_batch(4, 32)
    bg = SimCLRAugment(OFF).backgrounds(images, torch.full((4,), kind))
    assert bg.shape == (4, 3, 32, 32) and bg.min() >= 0 and bg.max() <= 1
    spread = bg.flatten(2).std(dim=2).mean()
    if kind == 0:
        assert spread < 1e-6  # solid
    else:
        assert spread > 1e-3


def test_small_paste_shrinks_the_watch_onto_clutter():
    torch.manual_seed(4)
    images = torch.rand(8, 3, 1, 1).expand(8, 3, 32, 32).clone()  # one flat colour per photo
    masks = torch.ones(8, 1, 32, 32)  # the whole frame is the 'watch'
    aug = SimCLRAugment(dataclasses.replace(OFF, small_paste_p=1.0, small_paste_scale=(0.3, 0.6)))
    out = aug.composite(images, masks)
    kept = ((out - images).abs().amax(dim=1) < 1e-4).flatten(1).float().mean(1)
    assert (kept > 0.3**2 * 0.7).all() and (kept < 0.6**2 * 1.3).all()


def test_occlusion_band_covers_part_of_the_image():
    torch.manual_seed(5)
    images, masks = square_batch(8, 64)
    aug = SimCLRAugment(dataclasses.replace(OFF, occlude_p=1.0, occlude_width=(0.1, 0.2)))
    out = aug.composite(images, masks)
    changed = ((out - images).abs().amax(dim=1) > 1e-3).flatten(1).float().mean(1)
    assert (changed > 0.02).all() and (changed < 0.45).all()


def test_noise_is_in_range_and_not_flat():
    n = fractal_noise(3, 40, torch.device("cpu"))
    assert n.shape == (3, 1, 40, 40)
    assert n.min() >= 0 and n.max() <= 1 and n.std() > 0.05


def test_bad_probability_is_rejected():
    with pytest.raises(ValueError, match="background_p"):
        AugmentConfig(background_p=1.5)


def test_preview_grid_shape():
    torch.manual_seed(6)
    images, masks = square_batch(3)
    grid = preview_grid((images * 255).to(torch.uint8), masks, SimCLRAugment(dataclasses.replace(OFF, size=20)), pad=2)
    assert grid.size == (3 * 22 + 2, 3 * 22 + 2)


def test_uneven_light_is_a_bounded_ramp():
    from simclr_watches.train.augment import LinearIllumination

    torch.manual_seed(7)
    x = torch.full((6, 3, 16, 16), 0.5)
    out = LinearIllumination(1.0, (0.1, 0.2))(x)
    shift = out - x
    assert shift.abs().max() <= 0.2 + 1e-6 and shift.abs().amax((1, 2, 3)).min() >= 0.1 - 1e-6
    assert torch.equal(shift[:, 0], shift[:, 1])  # same light on every channel
    assert torch.equal(LinearIllumination(0.0, (0.1, 0.2))(x), x)
