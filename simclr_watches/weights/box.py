"""The box head's file: one safetensors file whose header says which encoder's maps it reads.

Like an encoder checkpoint (:mod:`simclr_watches.weights.checkpoint`), the file describes
itself: format, head width, the encoder it was trained on (id and sha256: a head is only
ever run on that encoder's feature maps), the input size, and the training config and
metrics. A registered head (``kind = "box"`` in ``configs/weights.toml``) is verified
against its sha256 before use, like a registered encoder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from simclr_watches import __version__
from simclr_watches.core.atomic import atomic_path, write_text_atomic
from simclr_watches.core.errors import CheckpointError, one_line
from simclr_watches.core.files import sha256_file
from simclr_watches.core.outputs import OutputKind, json_format_owned
from simclr_watches.detect.head import BoxHead
from simclr_watches.weights._registry import catalog_box_head, load_registry
from simclr_watches.weights.checkpoint import HEADER_KEY, _check_finite, _open, check_file_output, parse_description
from simclr_watches.weights.loading import verified_file

BOX_FORMAT = "simclr-watches-box-head"
BOX_VERSION = 1
DEFAULT_BOX = "watches-lite0-v1-box"  # the shipped head, on watches-lite0-v1's maps (docs/LOCALISATION.md)
MAX_WIDTH = 4096


@dataclass(frozen=True)
class BoxHeadInfo:
    """What identifies a box head: its id and sha256, and the encoder whose maps it reads."""

    id: str
    sha256: str
    backbone_id: str
    backbone_sha256: str
    input_size: int
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "sha256": self.sha256, "backbone": {"id": self.backbone_id, "sha256": self.backbone_sha256}}


def save_box_head(path: Path | str, head: BoxHead, backbone: dict[str, str], input_size: int,
                  meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Writes ``head`` (float32) with its description, atomically; returns the description (sha256 and size added).

    Args:
        backbone: ``{"id": ..., "sha256": ...}`` of the encoder whose maps it reads.
        input_size: the encoder input side it was trained at.
    """
    path = Path(path)
    header = {"format": BOX_FORMAT, "format_version": BOX_VERSION, "width": head.width, "backbone": backbone,
              "input_size": input_size, "package_version": __version__, "meta": meta or {}}
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in head.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={HEADER_KEY: json.dumps(header)})
    description = {"format": BOX_FORMAT, "file": path.name, "sha256": sha256_file(path), "size": path.stat().st_size,
                   **{k: header[k] for k in ("width", "backbone", "input_size", "package_version", "meta")}}
    write_text_atomic(path.with_suffix(".json"), json.dumps(description, indent=2) + "\n")
    return description


def _check_header(path: Path, metadata: dict[str, str] | None) -> dict[str, Any]:
    """The box head's description among a safetensors file's metadata, parsed and checked field by field.

    Raises:
        CheckpointError: names the file and the first wrong field.
    """
    header = parse_description(path, metadata)
    if not isinstance(header, dict) or header.get("format") != BOX_FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise CheckpointError(f"{path}: not a box head (format {found!r}, not {BOX_FORMAT!r})")
    version = header.get("format_version")
    if type(version) is not int or not 1 <= version <= BOX_VERSION:
        raise CheckpointError(f"{path}: box head format_version {version!r}: this program reads 1 to {BOX_VERSION}")
    width, size, backbone = header.get("width"), header.get("input_size"), header.get("backbone")
    if type(width) is not int or not 1 <= width <= MAX_WIDTH:
        raise CheckpointError(f"{path}: box head field 'width' must be an integer in [1, {MAX_WIDTH}], got {width!r}")
    if type(size) is not int or not 32 <= size <= 1024:
        raise CheckpointError(f"{path}: box head field 'input_size' must be an integer in [32, 1024], got {size!r}")
    if not (isinstance(backbone, dict) and all(isinstance(backbone.get(k), str) for k in ("id", "sha256"))):
        raise CheckpointError(f"{path}: box head field 'backbone' must be {{\"id\": str, \"sha256\": str}}, got {backbone!r}")
    if not isinstance(header.get("meta", {}), dict):
        raise CheckpointError(f"{path}: box head field 'meta' must be a JSON object")
    return header


def load_box_file(path: Path | str, head_id: str | None = None, sha256: str | None = None) -> tuple[BoxHead, BoxHeadInfo]:
    """Loads a box head written by :func:`save_box_head`, strictly, in eval mode.

    Raises:
        CheckpointError: no such file, not a box head, a bad description, tensors that do not
            fit the head, or NaN or infinite weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such box head file")
    with _open(path) as f:
        header = _check_header(path, f.metadata())
        try:
            state = {k: f.get_tensor(k).float() for k in f.keys()}
        except (SafetensorError, OSError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file: {one_line(str(e))}") from None
    head = BoxHead(header["width"])
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit a box head of width {header['width']}: "
                              f"{one_line(str(e))[:300]}") from None
    _check_finite(head.state_dict(), path)
    info = BoxHeadInfo(head_id or str(path.resolve()), sha256 or sha256_file(path), header["backbone"]["id"],
                       header["backbone"]["sha256"], header["input_size"], header.get("meta", {}))
    return head.eval(), info


def load_box_head(spec: str | Path | None = None) -> tuple[BoxHead, BoxHeadInfo]:
    """A box head by file path or registered name (``kind = "box"``; verified against its sha256).

    Args:
        spec: a file, a registered name, or None for :data:`DEFAULT_BOX`.

    Raises:
        CheckpointError: neither a file nor a registered box head, a wrong sha256, or a bad file.
    """
    spec = str(spec) if spec is not None else DEFAULT_BOX
    if Path(spec).is_file():
        return load_box_file(spec)
    registry = load_registry()
    entry = registry.get(spec)
    if entry is None or entry.kind != "box":
        known = ", ".join(sorted(n for n, e in registry.items() if e.kind == "box")) or "none"
        raise CheckpointError(f"{spec}: neither a box head file nor a registered box head (known: {known})")
    return load_box_file(verified_file(entry), head_id=entry.name, sha256=entry.sha256)


def load_catalog_box_head(head: str, owner: str) -> tuple[BoxHead, BoxHeadInfo]:
    """The registered box head a model's ``catalog_box`` names (verified), never a file a description names.

    Raises:
        CheckpointError: naming ``owner``, no registered box head; or a missing or bad file.
    """
    return load_box_head(catalog_box_head(load_registry(), head, owner).name)


def _is_box_file(path: Path) -> bool:
    """A safetensors file with a box head's description."""
    try:
        with _open(path) as f:
            _check_header(path, f.metadata())
    except (CheckpointError, AttributeError):
        return False
    return True


BOX_OUTPUT = OutputKind("box head file", folder=False, owned=_is_box_file, suffix=".safetensors")
BOX_DESCRIPTION_OUTPUT = OutputKind("box head description", folder=False, owned=json_format_owned(BOX_FORMAT), suffix=".json")


def check_box_output(out: Path | str, *, force: bool = False, inputs: Sequence[Path | str] = ()) -> None:
    """Checks, before any work, that a box head and its ``.json`` may be written at ``out``.

    Raises:
        SimclrWatchesError: see :func:`simclr_watches.core.outputs.prepare_output`.
    """
    check_file_output(Path(out), BOX_OUTPUT, BOX_DESCRIPTION_OUTPUT, force=force, inputs=inputs)
