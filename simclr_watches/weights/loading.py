"""Loading a model by name or path: registered weights (verified), checkpoint files and ensembles of them.

:func:`load_model` reads the registry once and hashes each weights file once: a
registered file is verified against its sha256, and that digest is the one its
:class:`ModelInfo` records.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from simclr_watches.core.errors import CheckpointError, FileReadError
from simclr_watches.core.files import sha256_file
from simclr_watches.model import Encoder, EnsembleEncoder, default_preprocessing
from simclr_watches.model.descriptor import DescribedEnsemble
from simclr_watches.model.preprocessing import CatalogBox
from simclr_watches.weights._hub import local_copy
from simclr_watches.weights._pretrained import imagenet_lite0_state_dict, package_file
from simclr_watches.weights._registry import DEFAULT_MODEL, WeightsEntry, catalog_box_head, load_registry
from simclr_watches.weights.checkpoint import ModelInfo, load_encoder_file

ENSEMBLE_FORMAT = "simclr-watches-ensemble/1"  # part of an ensemble's sha256: bump if its formula changes
DESCRIPTOR_FORMAT = "simclr-watches-descriptor/1"  # part of a described ensemble's sha256: bump if gem_descriptor changes
SIDES_FORMAT = "simclr-watches-sides/1"  # part of the sha256 of an ensemble with its own catalog / region sizes
CATALOG_BOX_FORMAT = "simclr-watches-catalog-box/1"  # part of the sha256 of an ensemble with a catalog box view
ENSEMBLE_SEP = "+"  # load_model("A+B"): an ensemble of A and B without a registry entry

Registry = dict[str, WeightsEntry]


def load_model(spec: str | Path | None = None) -> tuple[Encoder | EnsembleEncoder, ModelInfo]:
    """Resolves a checkpoint path or registered name to an encoder in eval mode.

    Args:
        spec: a checkpoint file, a registry name, ``A+B[+...]`` (an ensemble of those files
            or names, as an ensemble entry of the registry would make), or None for the
            default model.

    Raises:
        CheckpointError: neither an existing file nor a known name, or the file is bad.
    """
    spec = str(spec) if spec is not None else DEFAULT_MODEL
    if Path(spec).is_file():
        return load_encoder_file(spec)
    registry = load_registry()
    entry = registry.get(spec)
    if entry is not None and entry.members:
        return _load_ensemble(entry.name, entry.members, registry, entry.descriptor,
                              (entry.catalog_sizes, entry.region_sizes), entry.catalog_box)
    if entry is None and ENSEMBLE_SEP in spec:
        return _load_ensemble(None, spec.split(ENSEMBLE_SEP), registry)
    return _load_single(spec, registry)


def _load_single(spec: str, registry: Registry) -> tuple[Encoder, ModelInfo]:
    """A checkpoint file, or a registered weights file (verified).

    Raises:
        CheckpointError: neither a file nor a registered name, or the file is missing or bad.
    """
    if Path(spec).is_file():
        return load_encoder_file(spec)
    entry = registry.get(spec)
    if entry is None:
        raise CheckpointError(
            f"{spec}: neither a checkpoint file nor a registered model name (known: {', '.join(sorted(registry))})"
        )
    if entry.kind != "encoder":
        raise CheckpointError(f"{spec}: a registered {entry.kind} head, not an encoder")
    path = verified_file(entry)
    if not entry.package:
        return load_encoder_file(path, model_id=entry.name, sha256=entry.sha256)
    enc = Encoder.from_state_dict(entry.arch, imagenet_lite0_state_dict(path), str(path))
    return enc.eval(), ModelInfo(entry.name, entry.sha256, entry.arch, enc.dim, default_preprocessing(entry.arch))


def _load_ensemble(name: str | None, members: Sequence[str], registry: Registry,
                   descriptor: dict | None = None,
                   sides: tuple[tuple[int, ...], tuple[int, ...]] = ((), ()),
                   catalog_box: dict | None = None) -> tuple[EnsembleEncoder, ModelInfo]:
    """The members (files or registered names), loaded and verified, as one encoder.

    With a ``descriptor`` (``member``, ``stage``, ``power``, ``weight``: a registry entry's), a
    :class:`~simclr_watches.model.descriptor.DescribedEnsemble`. Its sha256 is derived from the
    members' (in order) and the descriptor's settings, so an index built with it is
    refused once any member's weights or the descriptor change. The input is the first member's,
    with ``sides`` = ``(catalog_sizes, region_sizes)`` and ``catalog_box`` (a registry entry's; part of the
    sha256 when set, ``catalog_box`` with its box head's sha256: an index's catalog depends on it). Without
    a registry ``name``, the id joins the members' ids (absolute paths for files), so it
    loads again from any working directory.

    Raises:
        CheckpointError: a member is missing, bad or itself an ensemble, or the members
            normalise differently.
    """
    if len(members) < 2 or not all(members):
        raise CheckpointError(f"{ENSEMBLE_SEP.join(members)}: an ensemble needs two or more members, e.g. A{ENSEMBLE_SEP}B")
    name = name or ENSEMBLE_SEP.join(str(Path(m).resolve()) if Path(m).is_file() else m for m in members)
    loaded = []
    for m in members:
        if not Path(m).is_file() and m in registry and registry[m].members:
            raise CheckpointError(f"{name}: member {m} is itself an ensemble; list its members instead")
        loaded.append(_load_single(m, registry))
    pre = loaded[0][1].preprocessing
    for _, info in loaded[1:]:
        if (info.preprocessing.mean, info.preprocessing.std) != (pre.mean, pre.std):
            raise CheckpointError(f"{name}: members {loaded[0][1].id} and {info.id} normalise their input differently")
    encoders = [e for e, _ in loaded]
    key = f"{ENSEMBLE_FORMAT}:{','.join(i.sha256 for _, i in loaded)}"
    meta: dict = {"members": [i.to_dict() for _, i in loaded]}
    if descriptor is None:
        enc = EnsembleEncoder(encoders).eval()
    else:
        try:
            d = {"member": int(descriptor["member"]), "stage": int(descriptor["stage"]),
                 "power": float(descriptor["power"]), "weight": float(descriptor["weight"])}
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{name}: bad descriptor {descriptor!r}: {e}") from None
        enc = DescribedEnsemble(encoders, **d).eval()
        meta["descriptor"] = {**d, "dim": enc.dim - sum(e.dim for e in encoders)}
        key += f":{DESCRIPTOR_FORMAT}:{json.dumps(d, sort_keys=True)}"
    if sides[0] or sides[1]:
        try:
            pre = replace(pre, catalog_sizes=tuple(sides[0]), region_sizes=tuple(sides[1]))
        except ValueError as e:  # FieldError: a size out of range
            raise CheckpointError(f"{name}: {e}") from None
        regions = ','.join(map(str, pre.region_sizes)) or "0"  # one side: the key it had as region_size
        key += f":{SIDES_FORMAT}:{','.join(map(str, pre.catalog_sizes))}/{regions}"
    if catalog_box is not None:
        head = catalog_box_head(registry, catalog_box.get("head"), name)
        try:
            pre = replace(pre, catalog_box=CatalogBox(**catalog_box))
        except ValueError as e:  # FieldError
            raise CheckpointError(f"{name}: catalog_box.{e}") from None
        box = pre.catalog_box
        key += f":{CATALOG_BOX_FORMAT}:{box.head}:{head.sha256}:{box.square}@{box.size}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    meta["shared_stages"] = enc.shared
    return enc, ModelInfo(name, digest, enc.arch, enc.dim, pre, meta)


def verified_file(entry: WeightsEntry) -> Path:
    """The local file of a registry entry, checked against its sha256 (hashed once).

    Raises:
        CheckpointError: no local file, a wrong sha256, or an entry without a source.
    """
    if entry.package:
        path, advice = package_file(entry.package), ""
    elif entry.url or entry.artifact:
        path, advice = local_copy(entry), f"; delete it and run `simclr-watches download {entry.name}`"
    else:
        raise CheckpointError(f"{entry.name}: registry entry names no package, artifact or url")
    try:
        digest = sha256_file(path)
    except FileReadError as e:
        raise CheckpointError(str(e)) from None
    if digest != entry.sha256:
        raise CheckpointError(f"{path}: sha256 {digest} does not match the registry's {entry.sha256}{advice}")
    return path


def list_models() -> list[dict[str, Any]]:
    """Every registered model with where its file is found here, for ``simclr-watches models``.

    Each row: ``name``, ``arch``, ``size``, ``default`` (bool), ``description``,
    ``file`` (the verified local file, or None) and ``status`` ("ready" or why not).
    """
    registry = load_registry()
    files: dict[str, tuple[str | None, str]] = {}
    for entry in registry.values():
        if not entry.members:
            try:
                files[entry.name] = str(verified_file(entry)), "ready"
            except CheckpointError as e:
                files[entry.name] = None, str(e)
    rows = []
    for entry in registry.values():
        arch, size, (file, status) = entry.arch, entry.size, files.get(entry.name, (None, "ready"))
        if entry.members:
            # An ensemble has no file: it is as ready as its members, and as large.
            arch = "+".join(registry[m].arch for m in entry.members)
            size = sum(registry[m].size for m in entry.members)
            status = next((f"member {m}: {files[m][1]}" for m in entry.members if files[m][0] is None), "ready")
        rows.append({"name": entry.name, "arch": arch, "size": size, "default": entry.name == DEFAULT_MODEL,
                     "description": entry.description, "file": file, "status": status})
    return rows
