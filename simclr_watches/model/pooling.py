"""Generalised-mean (GeM) pooling of a feature map, the alternative to global average pooling.

Radenović, Tolias & Chum, "Fine-tuning CNN Image Retrieval with No Human Annotation", TPAMI 2018:
``(mean over the map of x^p)^(1/p)`` per channel. p = 1 is average pooling, p -> inf max pooling;
p = 3 (the paper's) weighs each channel's strongest responses, the parts of the image that fire
it, over the background that dilutes an average.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Smallest activation raised to p: keeps the gradient and 0^(1/p) finite.
GEM_EPS = 1e-6


def gem(x: torch.Tensor, p: float) -> torch.Tensor:
    """Generalised mean over the spatial axes of a non-negative map.

    Args:
        x: (B, C, H, W), non-negative (after ReLU/ReLU6).
        p: the exponent, >= 1 (1: average pooling).

    Returns:
        (B, C) float32.
    """
    if p == 1.0:
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1).float()
    pooled = F.adaptive_avg_pool2d(x.float().clamp(min=GEM_EPS).pow(p), 1)
    return torch.flatten(pooled, 1).pow(1.0 / p)
