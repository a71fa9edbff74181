"""The catalog index: an Annoy forest plus the JSON sidecar Annoy cannot hold.

An index directory holds:
    index.ann        Annoy angular forest over the embeddings
    embeddings.npy   (N, D) float32 unit vectors, row i = item i (rebuilds need no re-embedding)
    index.json       format version, model id + sha256, preprocessing, dim, metric, n_trees,
                     and per item: absolute path, sha256, byte size; plus the files skipped
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from annoy import AnnoyIndex

from simclr_watches import __version__
from simclr_watches.atomic import atomic_dir
from simclr_watches.embed import EmbeddedItem
from simclr_watches.errors import IndexFormatError, NoReadableImagesError, SimclrWatchesError
from simclr_watches.model import Preprocessing
from simclr_watches.weights import ModelInfo

FORMAT_VERSION = 1
ANNOY_FILE = "index.ann"
EMBEDDINGS_FILE = "embeddings.npy"
SIDECAR_FILE = "index.json"
METRIC = "angular"


def cosine_from_angular(distance: np.ndarray | float) -> np.ndarray | float:
    """Annoy's angular distance is ||u - v|| of unit vectors, i.e. sqrt(2 - 2 cos)."""
    return 1.0 - np.square(distance) / 2.0


def write_index(
    out_dir: Path | str,
    vectors: np.ndarray,
    items: Sequence[EmbeddedItem],
    model: ModelInfo,
    preprocessing: Preprocessing,
    *,
    n_trees: int = 50,
    skipped: Sequence[tuple[str, str]] = (),
    extra: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Writes an index directory atomically.

    Args:
        vectors: (N, D) unit vectors, row i for items[i].
        skipped: (path, reason) of files left out, recorded for the user.
        extra: further sidecar fields (e.g. how catalog images were cropped before embedding).
        force: replace an existing index (only once the new one is complete).

    Raises:
        SimclrWatchesError: ``out_dir`` exists and ``force`` is False, or the inputs disagree.
    """
    out_dir = Path(out_dir)
    if len(vectors) != len(items) or len(items) == 0:
        raise SimclrWatchesError(f"cannot index {len(items)} items with {len(vectors)} vectors")
    if n_trees < 1:
        raise SimclrWatchesError(f"n_trees must be >= 1, got {n_trees}")
    dim = int(vectors.shape[1])
    sidecar = {
        "format": "simclr-watches-index",
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": model.to_dict(),
        "preprocessing": preprocessing.to_dict(),
        "dim": dim,
        "metric": METRIC,
        "n_trees": n_trees,
        "count": len(items),
        "items": [{"path": str(Path(it.path).resolve()), "sha256": it.sha256, "bytes": it.nbytes} for it in items],
        "skipped": [{"path": str(p), "reason": r} for p, r in skipped],
        **(extra or {}),
    }
    try:
        with atomic_dir(out_dir, replace=force) as tmp:
            ann = AnnoyIndex(dim, METRIC)
            for i, v in enumerate(vectors):
                ann.add_item(i, v.tolist())
            ann.set_seed(0)
            ann.build(n_trees, n_jobs=1)
            ann.save(str(tmp / ANNOY_FILE))
            ann.unload()
            np.save(tmp / EMBEDDINGS_FILE, vectors.astype(np.float32))
            (tmp / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=1), encoding="utf-8")
    except FileExistsError:
        raise SimclrWatchesError(f"{out_dir}: already exists; use --force to replace it") from None
    return out_dir


@dataclass
class Index:
    """A loaded index: query it with unit vectors."""

    directory: Path
    meta: dict[str, Any]
    ann: AnnoyIndex

    @property
    def paths(self) -> list[str]:
        return [it["path"] for it in self.meta["items"]]

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.meta["preprocessing"])

    @property
    def crop_margin(self) -> float | None:
        """Margin of the foreground crop applied to catalog photos (and so to queries); None: no crop."""
        view = self.meta.get("catalog_view", {})
        return float(view["margin"]) if view.get("crop") == "foreground" else None

    def __len__(self) -> int:
        return int(self.meta["count"])

    def query(self, vector: np.ndarray, k: int) -> tuple[list[int], list[float]]:
        """Top-k item ids and cosine similarities for one (D,) unit vector, best first."""
        k = min(k, len(self))
        # Searching more nodes than Annoy's default keeps the approximate top-k exact at catalog scale.
        ids, dist = self.ann.get_nns_by_vector(vector.tolist(), k, search_k=max(k, 10) * self.meta["n_trees"] * 4, include_distances=True)
        return ids, [float(cosine_from_angular(d)) for d in dist]

    def check_model(self, model: ModelInfo) -> None:
        """Refuses a model other than the one the index was built with.

        Raises:
            IndexFormatError: the model's weights differ from the index's.
        """
        built = self.meta["model"]
        if built["sha256"] != model.sha256 or built["dim"] != model.dim:
            raise IndexFormatError(
                f"{self.directory}: index was built with model {built['id']} (sha256 {built['sha256'][:12]}…), "
                f"not with {model.id} (sha256 {model.sha256[:12]}…); rebuild it with build-index"
            )


def load_index(directory: Path | str) -> Index:
    """Opens an index directory, validating its sidecar first.

    Raises:
        IndexFormatError: missing files, unreadable sidecar, or another format version.
    """
    directory = Path(directory)
    sidecar = directory / SIDECAR_FILE
    if not directory.is_dir():
        raise IndexFormatError(f"{directory}: no such index folder")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{directory}: not an index ({SIDECAR_FILE} is missing)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise IndexFormatError(f"{sidecar}: unreadable sidecar: {e}") from None
    if meta.get("format") != "simclr-watches-index" or meta.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(
            f"{directory}: index format {meta.get('format')} v{meta.get('format_version')} is not "
            f"v{FORMAT_VERSION} that this version reads; rebuild it with build-index"
        )
    if meta.get("metric") != METRIC:
        raise IndexFormatError(f"{directory}: metric {meta.get('metric')!r} is not {METRIC!r}")
    ann_path = directory / ANNOY_FILE
    if not ann_path.is_file():
        raise IndexFormatError(f"{directory}: {ANNOY_FILE} is missing")
    ann = AnnoyIndex(int(meta["dim"]), METRIC)
    try:
        ann.load(str(ann_path))
    except OSError as e:
        raise IndexFormatError(f"{ann_path}: cannot load Annoy index: {e}") from None
    if ann.get_n_items() != meta["count"]:
        raise IndexFormatError(f"{directory}: Annoy holds {ann.get_n_items()} items, sidecar says {meta['count']}")
    return Index(directory, meta, ann)


def load_embeddings(directory: Path | str) -> np.ndarray:
    """The (N, D) float32 embeddings kept beside the Annoy forest."""
    return np.load(Path(directory) / EMBEDDINGS_FILE)


@dataclass
class BuildReport:
    directory: Path
    count: int
    skipped: list[tuple[str, str]]
    model: ModelInfo


def build_index(
    catalog: Path | str,
    out_dir: Path | str,
    *,
    checkpoint: str | None = None,
    batch_size: int = 32,
    device: str = "auto",
    n_trees: int = 50,
    crop: bool = True,
    force: bool = False,
    progress: bool = True,
) -> BuildReport:
    """Embeds every readable image under ``catalog`` and writes the index to ``out_dir``.

    With ``crop``, each photo is cropped around the watch (its foreground on the white
    backdrop) before embedding; the sidecar's ``catalog_view`` records it so that
    search treats queries the same way.

    Raises:
        SimclrWatchesError: ``out_dir`` exists (without ``force``), or the catalog has no image.
        NoReadableImagesError: no image in the catalog could be read (with why, for each).
    """
    from simclr_watches.data import scan_images
    from simclr_watches.embed import embed_paths
    from simclr_watches.mask import CROP_MARGIN, crop_to_foreground
    from simclr_watches.weights import load_model

    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise SimclrWatchesError(f"{out_dir}: already exists; use --force to replace it")
    paths = scan_images(catalog)
    if not paths:
        raise SimclrWatchesError(f"{catalog}: no image files (jpg, jpeg, png, webp, bmp, tif, tiff) found")
    encoder, model = load_model(checkpoint)
    emb = embed_paths(encoder, model.preprocessing, paths, batch_size=batch_size, device=device, progress=progress,
                      view=crop_to_foreground if crop else None)
    skipped = [(str(e.path), e.reason) for e in emb.skipped]
    if not emb.items:
        raise NoReadableImagesError(catalog, emb.skipped)
    view = {"crop": "foreground", "margin": CROP_MARGIN} if crop else {"crop": "none"}
    write_index(out_dir, emb.vectors, emb.items, model, model.preprocessing, n_trees=n_trees, skipped=skipped,
                extra={"catalog_view": view}, force=force)
    return BuildReport(out_dir, len(emb.items), skipped, model)
