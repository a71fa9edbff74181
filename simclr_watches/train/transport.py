"""A run's training checkpoint cut into parts for a size-limited transfer, and put back together.

A lent GPU machine hands back at most 8 files of 16 MiB and receives at most 64 MiB per call
(docs/PRETRAINING.md, "Running on a lent GPU"), while EfficientNet-Lite0's checkpoint with
AdamW's two moments is about 50 MB. :func:`pack_run_state` writes it with AdamW's moments in
bfloat16 (a third less), compressed with zlib, as parts of at most ``part_bytes``, plus
``state.json`` (format, epoch, step, size and sha256 of the whole and of each part);
:func:`unpack_run_state` checks every part and the decompressed whole (bounded) and writes
the checkpoint back with float32 moments, so ``pretrain --resume`` continues from it. The
weights, step, RNG states and config are kept exactly; the moments are rounded once to bfloat16
(8 significant bits), so the continuation is close to, not bit-identical with, an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from pathlib import Path

import torch

from simclr_watches.core.atomic import atomic_path, write_text_atomic
from simclr_watches.core.errors import CheckpointError
from simclr_watches.core.files import MiB, read_json, read_limited
from simclr_watches.train.state import load_training_checkpoint

STATE_FILE = "state.json"
STATE_FORMAT = "simclr-watches-run-state"
PART_BYTES = 15 * MiB
MAX_PARTS = 16
MAX_STATE_BYTES = 1 << 30  # the largest checkpoint a state may decompress to
ZLIB_LEVEL = 1  # fast; higher levels gain little on float tensors
MOMENTS = ("exp_avg", "exp_avg_sq")  # AdamW's per-parameter state that is rounded


def _moments_to(ckpt: dict, dtype: torch.dtype) -> None:
    """Casts the optimiser's moment tensors of ``ckpt`` to ``dtype``, in place."""
    for state in ckpt["optimizer"].get("state", {}).values():
        for key in MOMENTS:
            if isinstance(state.get(key), torch.Tensor) and state[key].is_floating_point():
                state[key] = state[key].to(dtype)


def pack_run_state(checkpoint: Path | str, out: Path | str, part_bytes: int = PART_BYTES) -> dict:
    """Writes a training checkpoint as ``out/state.partNN`` files and ``out/state.json``.

    Args:
        checkpoint: a run's ``checkpoint.pt``.
        out: the folder of the parts (created; earlier parts of ours there are replaced).
        part_bytes: the largest part, bytes.

    Returns:
        The description written to ``state.json``.

    Raises:
        CheckpointError: ``checkpoint`` is not a usable training checkpoint, or needs more than 16 parts.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if not 1 <= part_bytes <= PART_BYTES:
        raise ValueError(f"part_bytes must be in [1, {PART_BYTES}], got {part_bytes}")
    ckpt = load_training_checkpoint(checkpoint)
    _moments_to(ckpt, torch.bfloat16)
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    whole = buf.getvalue()
    data = zlib.compress(whole, ZLIB_LEVEL)
    chunks = [data[i:i + part_bytes] for i in range(0, len(data), part_bytes)]
    if len(chunks) > MAX_PARTS:
        raise CheckpointError(f"{checkpoint}: {len(data)} bytes would take {len(chunks)} parts of {part_bytes}; at most {MAX_PARTS}")
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, chunk in enumerate(chunks):
        name = f"state.part{i:02d}"
        with atomic_path(out / name) as tmp:
            tmp.write_bytes(chunk)
        parts.append({"name": name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    desc = {"format": STATE_FORMAT, "epoch": ckpt["epoch"], "step": ckpt["step"], "moments": "bfloat16",
            "compression": "zlib", "bytes": len(whole), "sha256": hashlib.sha256(whole).hexdigest(),
            "packed_bytes": len(data), "parts": parts}
    write_text_atomic(out / STATE_FILE, json.dumps(desc, indent=1) + "\n")
    return desc


def _inflate(src: Path, parts: list, size: int, f) -> str:
    """Checks each part, decompresses them into ``f`` (at most ``size`` bytes, 1 MiB at a time); the sha256 written."""
    d, h, written = zlib.decompressobj(), hashlib.sha256(), 0
    for part in parts:
        name = part.get("name") if isinstance(part, dict) else None
        if not isinstance(name, str) or Path(name).name != name or not name.startswith("state.part"):
            raise CheckpointError(f"{src / STATE_FILE}: bad part entry {part!r}")
        data = read_limited(src / name, PART_BYTES)
        if len(data) != part.get("bytes") or hashlib.sha256(data).hexdigest() != part.get("sha256"):
            raise CheckpointError(f"{src / name}: its size or sha256 differs from {STATE_FILE}: an incomplete or altered copy")
        try:
            while data:
                out = d.decompress(data, MiB)
                written += len(out)
                if written > size:
                    raise CheckpointError(f"{src / name}: the parts decompress to more than the {size} bytes of {STATE_FILE}")
                f.write(out)
                h.update(out)
                data = d.unconsumed_tail
        except zlib.error as e:
            raise CheckpointError(f"{src / name}: not zlib data: {e}") from None
    if not d.eof or written != size:
        raise CheckpointError(f"{src}: the parts decompress to {written} bytes, not the {size} of {STATE_FILE}")
    return h.hexdigest()


def unpack_run_state(src: Path | str, checkpoint: Path | str) -> dict:
    """Checks the parts in ``src`` against ``src/state.json`` and writes the training checkpoint, atomically.

    Returns:
        The checkpoint as written (float32 moments).

    Raises:
        FileReadError: ``state.json`` or a part is missing or unreadable (a part over 15 MiB too).
        CheckpointError: a foreign ``state.json``, a resized or altered part, parts that do not
            decompress to the size and sha256 it gives, or do not make a training checkpoint.
        Nothing is written when one of these is raised.
    """
    src, checkpoint = Path(src), Path(checkpoint)
    desc = read_json(src / STATE_FILE, 1 * MiB)
    if not isinstance(desc, dict) or desc.get("format") != STATE_FORMAT or not isinstance(desc.get("parts"), list):
        raise CheckpointError(f"{src / STATE_FILE}: not a run state written by pack_run_state")
    if not 1 <= len(desc["parts"]) <= MAX_PARTS:
        raise CheckpointError(f"{src / STATE_FILE}: {len(desc['parts'])} parts; expected 1 to {MAX_PARTS}")
    size = desc.get("bytes")
    if type(size) is not int or not 0 < size <= MAX_STATE_BYTES or desc.get("compression") != "zlib":
        raise CheckpointError(f"{src / STATE_FILE}: 'bytes' must be 1 to {MAX_STATE_BYTES} and 'compression' zlib")
    with atomic_path(checkpoint) as tmp:
        with open(tmp, "wb") as f:
            whole = _inflate(src, desc["parts"], size, f)
        if whole != desc.get("sha256"):
            raise CheckpointError(f"{src}: the parts make a checkpoint whose sha256 differs from {STATE_FILE}")
        ckpt = load_training_checkpoint(tmp)
        _moments_to(ckpt, torch.float32)
        torch.save(ckpt, tmp)
    return ckpt
