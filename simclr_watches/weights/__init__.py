"""Encoder weights: the named registry, ImageNet initialisation, self-describing checkpoints, verified downloads."""
