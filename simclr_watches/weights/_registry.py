"""The registry of named weights, ``configs/weights.toml``: what each name is and where its file comes from."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from simclr_watches.core.errors import CheckpointError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parents[2]
REGISTRY_PATH = REPO_ROOT / "configs" / "weights.toml"
IMAGENET_LITE0 = "efficientnet_lite0-imagenet"
KINDS = ("encoder", "box")
DESCRIPTOR_KEYS = ("member", "stage", "power", "weight")  # an ensemble's descriptor block (model/descriptor.py)  # what a registry entry's file is: an encoder, or a box head on an encoder's maps
# The shipped SimCLR checkpoint with its ImageNet init, plus the ImageNet member's texture-and-colour block (docs/MODEL_CARD.md).
DEFAULT_MODEL = "watches-lite0-v1-ens-attr-ms2"


@dataclass(frozen=True)
class WeightsEntry:
    """One named model of the registry (``configs/weights.toml``).

    Either a weights file (``arch``, ``sha256``, ``size`` and where it comes from:
    ``package``, ``artifact`` or ``url``) or an ensemble of other entries (``members``;
    see :class:`simclr_watches.model.ensemble.EnsembleEncoder`), which has no file of its own;
    an ensemble's optional ``descriptor`` (``member``, ``stage``, ``power``, ``weight``) adds a
    weighted mid-level block (:class:`simclr_watches.model.descriptor.DescribedEnsemble`), and
    its optional ``catalog_sizes`` and ``region_sizes`` (pixels) are the sides at which it embeds
    catalog photos (averaged over several) and a query's regions around the watch (one per square)
    (:class:`simclr_watches.model.preprocessing.Preprocessing`; unset: the first member's size);
    its optional ``catalog_box`` (``head``, ``square``, ``size``) adds a catalog photo's view
    around its learnt box to that average (:class:`simclr_watches.model.preprocessing.CatalogBox`).
    ``kind`` is ``"encoder"`` (the default) or ``"box"``: a box head
    (:mod:`simclr_watches.weights.box`), which is no encoder and no ensemble member.
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
    kind: str = "encoder"
    descriptor: dict | None = None
    catalog_sizes: tuple[int, ...] = ()
    region_sizes: tuple[int, ...] = ()
    catalog_box: dict | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(self.members))
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "box" and (self.members or self.package):
            raise ValueError(f"{self.name}: a box head is a file of its own (artifact or url), not members or a package")
        if self.members:
            if self.arch or self.sha256 or self.size or self.package or self.artifact or self.url:
                raise ValueError(f"{self.name}: an ensemble (members) has no file, arch, sha256 or size of its own")
            if len(self.members) < 2:
                raise ValueError(f"{self.name}: an ensemble needs at least two members")
        elif not (self.arch and self.sha256 and self.size):
            raise ValueError(f"{self.name}: a weights entry needs arch, sha256 and size")
        object.__setattr__(self, "catalog_sizes", tuple(self.catalog_sizes))
        object.__setattr__(self, "region_sizes", tuple(self.region_sizes))
        if (self.catalog_sizes or self.region_sizes) and not self.members:
            raise ValueError(f"{self.name}: only an ensemble (members) sets catalog_sizes or region_sizes; "
                             "a file's header has its own")
        if self.catalog_box is not None and not (self.members and isinstance(self.catalog_box, dict)
                                                 and sorted(self.catalog_box) == ["head", "size", "square"]):
            raise ValueError(f"{self.name}: only an ensemble (members) has a catalog_box, of exactly head, square and size")
        if self.descriptor is not None:
            if not self.members:
                raise ValueError(f"{self.name}: only an ensemble (members) can have a descriptor")
            if not isinstance(self.descriptor, dict) or sorted(self.descriptor) != sorted(DESCRIPTOR_KEYS):
                raise ValueError(f"{self.name}: descriptor needs exactly {', '.join(DESCRIPTOR_KEYS)}")


def catalog_box_head(registry: dict[str, WeightsEntry], head: object, owner: str) -> WeightsEntry:
    """The registered box head a model's ``catalog_box`` names (``owner``: the model, for the message).

    Raises:
        CheckpointError: ``head`` is no registered box head (a description never names a file).
    """
    entry = registry.get(head) if isinstance(head, str) else None
    if entry is None or entry.kind != "box":
        raise CheckpointError(f"{owner}: catalog_box head {head!r} is no registered box head")
    return entry


def load_registry(path: Path | str | None = None) -> dict[str, WeightsEntry]:
    """Reads and checks the weights registry: one parse of the file per call.

    Args:
        path: the registry file; None for :data:`REGISTRY_PATH` (looked up at call time).

    Raises:
        CheckpointError: the registry is missing or malformed, or an ensemble names a
            member that is not a registered weights file.
    """
    path = Path(REGISTRY_PATH if path is None else path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read the weights registry: {e}") from None
    try:
        registry = {name: WeightsEntry(name=name, **fields) for name, fields in raw.items()}
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: malformed weights registry entry: {e}") from None
    for entry in registry.values():
        for m in entry.members:
            if m not in registry or registry[m].members or registry[m].kind != "encoder":  # an encoder file
                raise CheckpointError(f"{path}: ensemble {entry.name}: member {m!r} is not a registered weights file")
    return registry
