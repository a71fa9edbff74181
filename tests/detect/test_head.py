"""The box head: shapes, decoding against a naive reference, targets, and a loss that falls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simclr_watches.detect.head import BoxHead, box_iou, box_loss, cell_centres, decode, targets


def naive_decode(out: np.ndarray, k: int) -> tuple[list, list]:
    """Loops over every cell: local maxima of the heat (3 x 3, ties count), best first, then their boxes."""
    heat = 1 / (1 + np.exp(-out[0]))
    h, w = heat.shape
    peaks = []
    for i in range(h):
        for j in range(w):
            window = heat[max(0, i - 1): i + 2, max(0, j - 1): j + 2]
            if heat[i, j] == window.max():
                peaks.append((heat[i, j], i, j))
    peaks.sort(key=lambda p: -p[0])
    boxes, scores = [], []
    for s, i, j in peaks[:k]:
        cx, cy = (j + 0.5) / w, (i + 0.5) / h
        l, t, r, b = out[1:, i, j]
        boxes.append(np.clip([cx - l, cy - t, cx + r, cy + b], 0, 1))
        scores.append(s)
    return boxes, scores


def test_head_output_shape_and_nonnegative_distances():
    head = BoxHead(width=16)
    out = head(torch.randn(2, 112, 10, 10), torch.randn(2, 320, 5, 5))
    assert out.shape == (2, 5, 10, 10)
    assert (out[:, 1:] >= 0).all()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_decode_matches_a_naive_reference(k):
    gen = torch.Generator().manual_seed(k)
    out = torch.cat([torch.randn(3, 1, 7, 9, generator=gen) * 3, torch.rand(3, 4, 7, 9, generator=gen) * 0.4], dim=1)
    boxes, scores = decode(out, k)
    assert boxes.shape == (3, k, 4) and scores.shape == (3, k)
    for b in range(3):
        ref_boxes, ref_scores = naive_decode(out[b].numpy().astype(np.float64), k)
        np.testing.assert_allclose(scores[b].numpy(), ref_scores, rtol=1e-5)
        np.testing.assert_allclose(boxes[b].numpy(), np.array(ref_boxes), atol=1e-5)


def test_targets_decode_back_to_the_true_box():
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.9], [0.6, 0.05, 0.95, 0.4]])
    heat, dist, weight = targets(boxes, 10, 10)
    assert heat.shape == (2, 10, 10) and dist.shape == (2, 4, 10, 10) and weight.shape == (2, 10, 10)
    assert torch.allclose(heat.flatten(1).max(1).values, torch.ones(2))
    logits = torch.logit(heat.clamp(1e-4, 1 - 1e-4))[:, None]
    decoded, _ = decode(torch.cat([logits, dist], dim=1), 1)
    assert torch.allclose(decoded[:, 0], boxes, atol=1e-5)
    # distances are learnt only inside the box
    cx, cy = cell_centres(10, 10)
    outside = (cx < 0.1) | (cx > 0.5) | (cy < 0.2) | (cy > 0.9)
    assert (weight[0][outside] == 0).all()


def test_box_iou_on_known_boxes():
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 1.0, 1.0]])
    assert torch.allclose(box_iou(a, b), torch.tensor([0.0625 / (0.5 - 0.0625), 1.0]))


def test_training_on_a_tiny_set_lowers_the_loss(one_thread):
    torch.manual_seed(0)
    f16, f32 = torch.randn(16, 112, 6, 6), torch.randn(16, 320, 3, 3)
    x0y0 = torch.rand(16, 2) * 0.5
    boxes = torch.cat([x0y0, x0y0 + 0.2 + torch.rand(16, 2) * 0.3], dim=1)
    head = BoxHead(width=16)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = float(box_loss(head(f16, f32), boxes)[0].detach())
    for _ in range(60):
        loss, _ = box_loss(head(f16, f32), boxes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(box_loss(head(f16, f32), boxes)[0].detach()) < 0.5 * first
