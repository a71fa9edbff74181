"""The box head: where the watch is, read off the encoder's own stride-16 and stride-32 feature maps.

A CenterNet-style head (Zhou, Wang & Krähenbühl, "Objects as Points", 2019) with FCOS-style
box regression (Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV
2019): on the stride-16 grid, each cell predicts how likely the watch's centre lies in it
(a heatmap) and the distances from the cell's centre to the box's four sides. The watch
is the peak of the heatmap; its cell's distances are the box.

Boxes are ``[x0, y0, x1, y1]`` in units of the encoder's square input (0 to 1), as the
padded square the preprocessing makes (:class:`simclr_watches.model.Preprocessing`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# EfficientNet-Lite0 channels of the maps the head reads: blocks[4] (stride 16) and blocks[6] (stride 32).
C16, C32 = 112, 320
OUTPUTS = 5  # heatmap logit, then l, t, r, b


class BoxHead(nn.Module):
    """Heatmap and side distances on the stride-16 grid.

    Args:
        width: channels of the head's hidden layers.

    Shapes:
        f16: (B, 112, h, w) the encoder's blocks[4] output (stride 16).
        f32: (B, 320, h/2, w/2) its blocks[6] output (stride 32), upsampled to (h, w) here.
        output: (B, 5, h, w): channel 0 the heatmap logit, channels 1-4 the distances
            ``l, t, r, b`` from the cell's centre to the box's sides, in units of the input side (>= 0).
    """

    def __init__(self, width: int = 96):
        super().__init__()
        self.width = width
        self.reduce = nn.Conv2d(C16 + C32, width, 1)
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(width, OUTPUTS, 3, padding=1)
        # CenterNet's prior: a heatmap that starts near 0 everywhere (sigmoid(-2.2) = 0.1).
        nn.init.constant_(self.out.bias, 0.0)
        with torch.no_grad():
            self.out.bias[0] = -2.2

    def forward(self, f16: torch.Tensor, f32: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(f32.float(), size=f16.shape[-2:], mode="nearest")
        y = self.out(self.body(self.reduce(torch.cat([f16.float(), up], dim=1))))
        return torch.cat([y[:, :1], F.softplus(y[:, 1:])], dim=1)


def cell_centres(h: int, w: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres of an (h, w) grid's cells in units of the input side: (h, w) x and (h, w) y."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    return xs.expand(h, w), ys[:, None].expand(h, w)


def decode(out: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best boxes of each image: heatmap peaks (a 3 x 3 local maximum), best first.

    Args:
        out: (B, 5, h, w) :class:`BoxHead` output.
        k: boxes per image (at most h * w).

    Returns:
        boxes: (B, k, 4) ``[x0, y0, x1, y1]`` in units of the input side, clipped to [0, 1].
        scores: (B, k) the peaks' heat (sigmoid of the logit); a cell that is no local maximum scores 0.
    """
    b, _, h, w = out.shape
    heat = torch.sigmoid(out[:, 0])
    peaks = heat * (F.max_pool2d(heat[:, None], 3, stride=1, padding=1)[:, 0] == heat)
    scores, idx = peaks.flatten(1).topk(min(k, h * w), dim=1)
    cx, cy = cell_centres(h, w, out.device)
    cx, cy = cx.flatten()[idx], cy.flatten()[idx]
    dist = out[:, 1:].flatten(2).gather(2, idx[:, None].expand(b, 4, idx.shape[1]))  # (B, 4, k)
    boxes = torch.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], dim=2)
    return boxes.clamp(0.0, 1.0), scores


def targets(boxes: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the head should output for one box per image.

    The heatmap is a Gaussian around the box's centre (sigma a sixth of the box's side on each
    axis, CenterNet's size-adaptive radius), exactly 1 at the cell holding the centre. The
    distances are the box's sides seen from each cell's centre; they are learnt where the
    heatmap is above 0.05 and the cell's centre lies inside the box.

    Args:
        boxes: (B, 4) ``[x0, y0, x1, y1]`` in units of the input side.

    Returns:
        heat: (B, h, w) in [0, 1]; dist: (B, 4, h, w) ``l, t, r, b``; weight: (B, h, w) of the distances.
    """
    cx, cy = cell_centres(h, w, boxes.device)
    x0, y0, x1, y1 = (boxes[:, i, None, None] for i in range(4))
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    sx, sy = ((x1 - x0) / 6).clamp(min=0.5 / w), ((y1 - y0) / 6).clamp(min=0.5 / h)
    heat = torch.exp(-((cx - mx) ** 2 / (2 * sx**2) + (cy - my) ** 2 / (2 * sy**2)))
    col = (mx[:, 0, 0] * w).long().clamp(0, w - 1)
    row = (my[:, 0, 0] * h).long().clamp(0, h - 1)
    heat[torch.arange(len(boxes)), row, col] = 1.0
    dist = torch.stack([cx - x0, cy - y0, x1 - cx, y1 - cy], dim=1)
    inside = (dist > 0).all(dim=1)
    weight = heat * (inside & (heat > 0.05))
    weight[torch.arange(len(boxes)), row, col] = 1.0
    return heat, dist.clamp(min=0.0), weight


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes pairwise along the last axis: (..., 4) and (..., 4) to (...)."""
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = iw * ih
    area = lambda t: (t[..., 2] - t[..., 0]).clamp(min=0) * (t[..., 3] - t[..., 1]).clamp(min=0)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp(min=1e-9)


def box_loss(out: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """CenterNet's focal loss on the heatmap plus an IoU loss on the distances.

    Args:
        out: (B, 5, h, w) :class:`BoxHead` output.
        boxes: (B, 4) the true box of each image.

    Returns:
        the loss, and its parts (``heat``, ``box``) as floats.
    """
    b, _, h, w = out.shape
    heat_t, dist_t, weight = targets(boxes, h, w)
    p = torch.sigmoid(out[:, 0]).clamp(1e-4, 1 - 1e-4)
    pos = heat_t == 1.0
    focal = torch.where(pos, (1 - p) ** 2 * torch.log(p), (1 - heat_t) ** 4 * p**2 * torch.log(1 - p))
    heat_loss = -focal.sum() / pos.sum().clamp(min=1)
    cx, cy = cell_centres(h, w, out.device)
    d = out[:, 1:]
    pred = torch.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], dim=-1)
    true = torch.stack([cx - dist_t[:, 0], cy - dist_t[:, 1], cx + dist_t[:, 2], cy + dist_t[:, 3]], dim=-1)
    iou_loss = ((1 - box_iou(pred, true)) * weight).sum() / weight.sum().clamp(min=1e-6)
    return heat_loss + 2.0 * iou_loss, {"heat": float(heat_loss.detach()), "box": float(iou_loss.detach())}
