"""Self-describing checkpoints: one safetensors file whose header says how to use it.

The header carries everything needed to use the encoder (architecture, embedding
width, preprocessing, package version, training config and metrics), so a file
found on disk months later still explains itself. :func:`export_encoder` writes one
for shipping, with a JSON description that holds what a registry entry needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from simclr_watches import __version__
from simclr_watches.core.atomic import atomic_path, write_text_atomic
from simclr_watches.core.errors import CheckpointError, one_line
from simclr_watches.core.files import sha256_file
from simclr_watches.core.outputs import OutputKind, prepare_output, try_read_json_object
from simclr_watches.model import ARCH_DIMS, Encoder, Preprocessing

CHECKPOINT_FORMAT = "simclr-watches-encoder"
CHECKPOINT_VERSION = 1
HEADER_KEY = "simclr_watches"  # the safetensors metadata entry that holds the description
EXPORT_FORMAT = "simclr-watches-export"
_DESCRIPTION_KEYS = {"file", "sha256", "size", "arch", "embedding_dim"}  # what every export description has had


@dataclass(frozen=True)
class ModelInfo:
    """What identifies an encoder: recorded in index sidecars, checked at search time."""

    id: str
    sha256: str
    arch: str
    dim: int
    preprocessing: Preprocessing
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """What an index sidecar records; an ensemble also lists its members' own records (and its descriptor block's)."""
        d = {"id": self.id, "sha256": self.sha256, "arch": self.arch, "dim": self.dim}
        for key in ("members", "descriptor"):
            if key in self.meta:
                d[key] = self.meta[key]
        return d


def save_encoder(path: Path | str, encoder: Encoder, preprocessing: Preprocessing, meta: dict[str, Any] | None = None,
                 dtype: torch.dtype = torch.float32) -> Path:
    """Writes the encoder (backbone only, no projection head) as a self-describing safetensors file."""
    path = Path(path)
    state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
             for k, v in encoder.backbone.state_dict().items()}
    header = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "arch": encoder.arch,
        "embedding_dim": encoder.dim,
        "preprocessing": preprocessing.to_dict(),
        "package_version": __version__,
        "meta": meta or {},
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={HEADER_KEY: json.dumps(header)})
    return path


def read_header(path: Path | str) -> dict[str, Any]:
    """The description stored in a checkpoint's header (no tensors are read), validated.

    Raises:
        CheckpointError: not a safetensors file, no simclr-watches description, or a
            description that is not JSON, of another or newer format, or with a missing
            or wrong field (arch, embedding_dim, preprocessing, meta); names the field.
    """
    path = Path(path)
    with _open(path) as f:
        return _parse_header(path, f.metadata())


def load_encoder_file(path: Path | str, model_id: str | None = None,
                      sha256: str | None = None) -> tuple[Encoder, ModelInfo]:
    """Loads a checkpoint written by :func:`save_encoder` (strictly, in float32), opening the file once.

    Args:
        path: the checkpoint.
        model_id: the id its ModelInfo records; default: the absolute path.
        sha256: the file's digest, when the caller has just verified it; default: hashed here.

    Raises:
        CheckpointError: no such file, a bad description (see :func:`read_header`), unreadable
            tensors, tensors that do not fit the architecture, or NaN or infinite weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with _open(path) as f:
        header = _parse_header(path, f.metadata())
        try:
            state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file: {one_line(str(e))}") from None
    enc = Encoder.from_state_dict(header["arch"], state, str(path))
    _check_finite(enc.backbone.state_dict(), path)
    info = ModelInfo(
        id=model_id or str(path.resolve()),
        sha256=sha256 or sha256_file(path),
        arch=enc.arch,
        dim=enc.dim,
        preprocessing=Preprocessing.from_dict(header["preprocessing"]),
        meta=header.get("meta", {}),
    )
    return enc.eval(), info


def _open(path: Path) -> safe_open:
    """The safetensors file at ``path``, opened (its header read, its tensors mapped, none loaded).

    Raises:
        CheckpointError: not a readable safetensors file.
    """
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint: {one_line(str(e))}") from None


def parse_description(path: Path, metadata: dict[str, str] | None) -> Any:
    """The simclr-watches description among a safetensors file's metadata, parsed as JSON (not checked).

    Shared by every file of ours in safetensors: encoder checkpoints and box heads.

    Raises:
        CheckpointError: none there, or not JSON.
    """
    raw = (metadata or {}).get(HEADER_KEY)
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without a simclr-watches description")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:  # not JSON, a number too long to convert, nesting too deep
        raise CheckpointError(f"{path}: its simclr-watches description is not valid JSON: {e}") from None


def _parse_header(path: Path, metadata: dict[str, str] | None) -> dict[str, Any]:
    """The simclr-watches description among a safetensors file's metadata, parsed and checked.

    Raises:
        CheckpointError: none there, not JSON, or not a description :func:`load_encoder_file` can use.
    """
    header = parse_description(path, metadata)
    _check_header(path, header)
    return header


def _check_header(path: Path, header: Any) -> None:
    """Refuses a checkpoint description that :func:`load_encoder_file` could not use.

    Raises:
        CheckpointError: names the file and the first wrong field.
    """
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: its simclr-watches description is not a JSON object")

    def wrong(key: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: checkpoint description field {key!r} {problem}")

    if header.get("format") != CHECKPOINT_FORMAT:
        raise wrong("format", f"is {header.get('format')!r}, not {CHECKPOINT_FORMAT!r}")
    version = header.get("format_version")
    if type(version) is not int or version < 1:
        raise wrong("format_version", f"must be a positive integer, got {version!r}")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format v{version} is newer than this program reads "
                              f"(v{CHECKPOINT_VERSION}); update simclr-watches")
    arch = header.get("arch")
    if not isinstance(arch, str) or arch not in ARCH_DIMS:
        raise wrong("arch", f"is {arch!r}, not one of {', '.join(ARCH_DIMS)}")
    dim = header.get("embedding_dim")
    if type(dim) is not int or dim != ARCH_DIMS[arch]:
        raise wrong("embedding_dim", f"is {dim!r}, but {arch} embeds in {ARCH_DIMS[arch]} dimensions")
    if "preprocessing" not in header:
        raise wrong("preprocessing", "is missing")
    try:
        Preprocessing.from_dict(header["preprocessing"])
    except (CheckpointError, ValueError, TypeError) as e:
        raise wrong("preprocessing", f"is invalid: {e}") from None
    if not isinstance(header.get("meta", {}), dict):
        raise wrong("meta", f"must be a JSON object, got {type(header['meta']).__name__}")


def _check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuses weights holding NaN or infinity: a corrupt file would otherwise index garbage silently.

    ``state`` is float32 (as :meth:`Encoder.from_state_dict` leaves it). The check runs in
    numpy, in this thread: torch would hand each of the ~250 tensors to its thread pool,
    which costs seconds on a busy machine.
    """
    for name, tensor in state.items():
        if tensor.is_floating_point() and not np.isfinite(tensor.numpy()).all():
            raise CheckpointError(f"{path}: tensor {name} holds NaN or infinite values; the file is corrupt")


def _is_checkpoint(path: Path) -> bool:
    """A safetensors file with a simclr-watches header."""
    try:
        read_header(path)
    except (CheckpointError, ValueError, AttributeError):  # also a header that is not a JSON object
        return False
    return True


def _is_description(path: Path) -> bool:
    """An export description: ``"format": EXPORT_FORMAT``, or one written before that key existed."""
    desc = try_read_json_object(path) or {}
    return desc.get("format") == EXPORT_FORMAT or (_DESCRIPTION_KEYS <= desc.keys() and "format" not in desc)


CHECKPOINT_OUTPUT = OutputKind("simclr-watches checkpoint", folder=False, owned=_is_checkpoint, suffix=".safetensors")
DESCRIPTION_OUTPUT = OutputKind("checkpoint description", folder=False, owned=_is_description, suffix=".json")


def check_export(src: Path | str, out: Path | str, *, force: bool = False, inputs: Sequence[Path | str] = ()) -> None:
    """Checks, before any work, that ``out`` and its ``.json`` may be written.

    Neither may be the source checkpoint, its description or one of ``inputs``; each may
    replace only an earlier export (with ``force``).

    Raises:
        CheckpointError: ``out`` does not end in ``.safetensors``.
        SimclrWatchesError: an output that may not be written (see :func:`simclr_watches.core.outputs.prepare_output`).
    """
    out, src = Path(out), Path(src)
    if out.suffix != ".safetensors":
        raise CheckpointError(f"{out}: the exported file must end in .safetensors")
    check_file_output(out, CHECKPOINT_OUTPUT, DESCRIPTION_OUTPUT, force=force,
                      inputs=[src, src.with_suffix(".json"), *inputs])


def check_file_output(out: Path, kind: OutputKind, description: OutputKind, *, force: bool,
                      inputs: Sequence[Path | str]) -> None:
    """Checks, before any work, that a safetensors file of ``kind`` and its ``.json`` ``description`` may be written.

    Raises:
        SimclrWatchesError: see :func:`simclr_watches.core.outputs.prepare_output`.
    """
    prepare_output(out, kind, force=force, inputs=inputs)
    prepare_output(out.with_suffix(".json"), description, force=force, inputs=inputs)


def export_encoder(src: Path | str, out: Path | str, *, half: bool = True, metrics: dict[str, Any] | None = None,
                   force: bool = False, inputs: Sequence[Path | str] = ()) -> dict[str, Any]:
    """Writes a checkpoint for shipping: ``out`` (safetensors, fp16 by default) and ``out`` with ``.json``.

    The JSON description repeats the header (arch, embedding width, preprocessing,
    training config) and adds what a registry entry needs: the file's sha256 and
    byte size. ``metrics`` (e.g. evaluation results) goes into the JSON only, so
    describing a file again after evaluating it leaves its bytes and sha256 unchanged.

    Args:
        force: replace an earlier export at ``out`` (and its description).
        inputs: further input files the outputs must not overwrite (e.g. the metrics JSON).

    Returns:
        The JSON description.

    Raises:
        CheckpointError: ``src`` is not a simclr-watches checkpoint, or ``out`` is not a ``.safetensors`` path.
        SimclrWatchesError: ``out`` or its ``.json`` may not be written (see :func:`check_export`).
    """
    out = Path(out)
    check_export(src, out, force=force, inputs=inputs)
    encoder, info = load_encoder_file(src)
    meta = dict(info.meta)
    meta["exported_from"] = {"file": Path(src).name, "sha256": info.sha256}
    save_encoder(out, encoder, info.preprocessing, meta=meta, dtype=torch.float16 if half else torch.float32)
    description = {
        "format": EXPORT_FORMAT,
        "file": out.name,
        "sha256": sha256_file(out),
        "size": out.stat().st_size,
        "dtype": "float16" if half else "float32",
        "arch": info.arch,
        "embedding_dim": info.dim,
        "preprocessing": info.preprocessing.to_dict(),
        "package_version": __version__,
        "evaluation": metrics or {},
        "meta": meta,
    }
    write_text_atomic(out.with_suffix(".json"), json.dumps(description, indent=2) + "\n")
    return description
