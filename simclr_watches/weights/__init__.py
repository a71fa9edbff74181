"""Encoder weights: the named registry, ImageNet initialisation, self-describing checkpoints, verified downloads.

- :mod:`~simclr_watches.weights.loading`: :func:`load_model` by name, path or ``A+B`` ensemble; :func:`list_models`.
- :mod:`~simclr_watches.weights.checkpoint`: the self-describing safetensors format; export for shipping.
- :mod:`~simclr_watches.weights._registry`: ``configs/weights.toml``, the named weights.
- :mod:`~simclr_watches.weights._pretrained`: the ImageNet EfficientNet-Lite0 weights; a user's state dict.
- :mod:`~simclr_watches.weights._hub`: the download cache and local copies; :func:`download`.
- :mod:`~simclr_watches.weights.fetch`: verified, resumable HTTP download of one file.
"""

from simclr_watches.weights._hub import ARTIFACTS_DIR, cache_dir, download, unregistered_path
from simclr_watches.weights._pretrained import imagenet_classifier, imagenet_lite0_state_dict, init_encoder, load_weights_only
from simclr_watches.weights._registry import DEFAULT_MODEL, IMAGENET_LITE0, REGISTRY_PATH, WeightsEntry, load_registry
from simclr_watches.weights.checkpoint import (
    CHECKPOINT_OUTPUT,
    DESCRIPTION_OUTPUT,
    ModelInfo,
    check_export,
    export_encoder,
    load_encoder_file,
    read_header,
    save_encoder,
)
from simclr_watches.weights.loading import ENSEMBLE_SEP, list_models, load_model

__all__ = [
    "ARTIFACTS_DIR", "CHECKPOINT_OUTPUT", "DEFAULT_MODEL", "DESCRIPTION_OUTPUT", "ENSEMBLE_SEP", "IMAGENET_LITE0",
    "REGISTRY_PATH", "ModelInfo", "WeightsEntry", "cache_dir", "check_export", "download", "export_encoder",
    "imagenet_classifier", "imagenet_lite0_state_dict", "init_encoder", "list_models", "load_encoder_file",
    "load_model", "load_registry", "load_weights_only", "read_header", "save_encoder",
    "unregistered_path",
]
