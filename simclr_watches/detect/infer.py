"""Finding the watch at query time: one encoder pass gives the photo's embedding and its box.

:class:`BoxFinder` pairs an encoder with a box head trained on its maps (the head's file
records the encoder's sha256, checked here), and turns a batch of encoder inputs into
embeddings, boxes and their heat in one pass (:func:`simclr_watches.detect.features.embed_with_maps`).
"""

from __future__ import annotations

from typing import Any

import torch

from simclr_watches.core.errors import CheckpointError
from simclr_watches.detect.features import box_backbone, embed_with_maps
from simclr_watches.detect.head import BoxHead, decode


def backbone_record(info: Any) -> dict[str, str]:
    """``{"id", "sha256"}`` of the encoder whose maps a box head reads, from a ModelInfo.

    For an ensemble, its first member (:func:`simclr_watches.detect.features.box_backbone`).
    """
    members = info.meta.get("members") if isinstance(info.meta, dict) else None
    first = members[0] if members else {"id": info.id, "sha256": info.sha256}
    return {"id": first["id"], "sha256": first["sha256"]}


class BoxFinder:
    """An encoder and the box head trained on its maps.

    Args:
        encoder: the model (Encoder or EnsembleEncoder), in eval mode.
        model_info: its ModelInfo.
        head: the box head; head_info: its BoxHeadInfo.

    Raises:
        CheckpointError: the head was trained on another encoder's maps.
    """

    def __init__(self, encoder: torch.nn.Module, model_info: Any, head: BoxHead, head_info: Any):
        record = backbone_record(model_info)
        if record["sha256"] != head_info.backbone_sha256:
            raise CheckpointError(
                f"box head {head_info.id} reads the maps of {head_info.backbone_id} (sha256 {head_info.backbone_sha256[:12]}…), "
                f"not of {record['id']} (sha256 {record['sha256'][:12]}…): use a model built on {head_info.backbone_id}")
        box_backbone(encoder)
        self.encoder, self.head, self.info = encoder, head.eval(), head_info

    def to(self, device: torch.device) -> "BoxFinder":
        self.head = self.head.to(device)
        return self

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embeddings and the ``k`` best boxes of a normalised batch (B, 3, S, S).

        Returns:
            embeddings (B, D) unit vectors (``encoder(x)``); boxes (B, k, 4) in units of the
            input side; scores (B, k) the boxes' heat.
        """
        emb, f16, f32 = embed_with_maps(self.encoder, x)
        boxes, scores = decode(self.head(f16, f32), k)
        return emb, boxes, scores
