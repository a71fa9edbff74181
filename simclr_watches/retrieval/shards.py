"""Embedding a catalog on several processes: ``torchrun ... -m simclr_watches build-index CATALOG --out INDEX``.

Under ``torchrun`` (PyTorch's launcher, the engine pretraining uses: :mod:`simclr_watches.core.distributed`)
each of the W processes embeds one contiguous shard of the catalog's sorted file list, on its
own GPU (``cuda:LOCAL_RANK``, NCCL) or on the CPU (gloo), and writes it to a work folder beside
the output, ``INDEX.shards/``, as two files written atomically:

    shard-K-of-W.npy    (n, D) float32 unit embeddings of the shard's readable files
    shard-K-of-W.json   what they are: {"format": "simclr-watches-shard", the model's id and sha256,
                        the preprocessing and crop, the shard's files in order, each embedded
                        one's sha256 and size, the files skipped and why, the .npy's sha256}

After a barrier, rank 0 merges the shards in order into the index (the same :func:`write_index`
as a single process, PCA fitted on all of them) and removes the work folder. A run that was
killed resumes: a shard whose JSON names this model, preprocessing and crop and exactly the
files this run gives it, whose files still have the recorded sha256 (hashed again, not
decoded) and whose ``.npy`` is the one recorded, is reused without embedding; any other is
embedded again. Shards are keyed by W: resume with the same number of processes.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simclr_watches.core import validate
from simclr_watches.core.atomic import atomic_path, write_text_atomic
from simclr_watches.core.distributed import DistInfo, all_ranks, local_device, process_group
from simclr_watches.core.errors import NoReadableImagesError, SimclrWatchesError, one_line
from simclr_watches.core.files import read_json, sha256_file
from simclr_watches.core.outputs import OutputKind, json_format_owned, owned_folder, prepare_output
from simclr_watches.retrieval.embed import Embedded, EmbeddedItem

SHARD_FORMAT = "simclr-watches-shard"
SHARD_VERSION = 1
WORK_SUFFIX = ".shards"
MAX_SHARD_JSON = 1 << 30
_SHARD_NAME = re.compile(r"^shard-[0-9]+-of-[0-9]+\.(json|npy)$")
SHARDS_OUTPUT = OutputKind("shard folder", folder=True, owned=owned_folder(
    {}, others=lambda p: bool(_SHARD_NAME.match(p.name)) and p.is_file()
    and (p.suffix == ".npy" or json_format_owned(SHARD_FORMAT)(p))))


def work_dir(out_dir: Path) -> Path:
    """The work folder of a sharded build of ``out_dir``: ``INDEX.shards`` beside it."""
    return out_dir.parent / f"{out_dir.name}{WORK_SUFFIX}"


def shard_bounds(n: int, world: int) -> list[tuple[int, int]]:
    """``world`` contiguous ``(start, stop)`` ranges covering ``0..n``, sizes differing by at most one."""
    edges = [n * k // world for k in range(world + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _stem(k: int, world: int) -> str:
    return f"shard-{k}-of-{world}"


@dataclass(frozen=True)
class ShardKey:
    """What makes a shard's embeddings those this run wants: model, preprocessing, crop, its files."""

    model_id: str
    model_sha256: str
    preprocessing: dict[str, Any]
    view: dict[str, Any]
    paths: list[str]

    def matches(self, doc: dict[str, Any]) -> bool:
        return (doc.get("model") == {"id": self.model_id, "sha256": self.model_sha256}
                and doc.get("preprocessing") == self.preprocessing and doc.get("catalog_view") == self.view
                and doc.get("paths") == self.paths)


def write_shard(work: Path, k: int, world: int, key: ShardKey, emb: Embedded) -> None:
    """Writes shard ``k`` of ``world`` (its ``.npy``, then the JSON naming it), each atomically and durably."""
    stem = _stem(k, world)
    vectors = np.ascontiguousarray(emb.vectors, dtype=np.float32)
    with atomic_path(work / f"{stem}.npy", durable=True) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, vectors, allow_pickle=False)
    doc = {"format": SHARD_FORMAT, "format_version": SHARD_VERSION, "shard": k, "shards": world,
           "model": {"id": key.model_id, "sha256": key.model_sha256}, "preprocessing": key.preprocessing,
           "catalog_view": key.view, "paths": key.paths,
           "items": [{"path": str(it.path), "sha256": it.sha256, "bytes": it.nbytes} for it in emb.items],
           "skipped": [{"path": str(e.path), "reason": e.reason} for e in emb.skipped],
           "vectors": {"file": f"{stem}.npy", "sha256": sha256_file(work / f"{stem}.npy"),
                       "shape": list(vectors.shape)}}
    write_text_atomic(work / f"{stem}.json", json.dumps(doc), durable=True)


def read_shard(work: Path, k: int, world: int, key: ShardKey, dim: int,
               rehash: bool = True) -> Embedded | str:
    """Shard ``k`` of ``world`` if it holds what ``key`` asks for, else why it cannot be reused.

    Args:
        dim: the model's embedding width.
        rehash: hash the shard's image files again and compare with the recorded sha256.
    """
    from simclr_watches.core.errors import ImageReadError
    from simclr_watches.data.images import file_digest

    stem = _stem(k, world)
    if not (work / f"{stem}.json").is_file():
        return "not written yet"
    try:
        doc = validate.obj(read_json(work / f"{stem}.json", MAX_SHARD_JSON), "")
        if doc.get("format") != SHARD_FORMAT or doc.get("format_version") != SHARD_VERSION:
            return "not a shard of this version"
        if not key.matches(doc):
            return "of another model, preprocessing, crop or file list"
        items = validate.array(doc["items"], "items")
        records = [(validate.text(it["path"], "path"), validate.hex_digest(it["sha256"], "sha256"),
                    validate.int_in(it["bytes"], "bytes", 0, 2**63 - 1)) for it in items]
        skipped = [(validate.text(s["path"], "path"), validate.text(s["reason"], "reason", empty=True))
                   for s in validate.array(doc["skipped"], "skipped")]
        if sorted([p for p, _, _ in records] + [p for p, _ in skipped]) != sorted(key.paths):
            return "its items and skipped files are not its files"
        npy = work / f"{stem}.npy"
        if doc["vectors"] != {"file": npy.name, "sha256": sha256_file(npy), "shape": [len(records), dim]}:
            return f"{npy.name} is not the file it recorded"
        vectors = np.load(npy, allow_pickle=False)
        if vectors.dtype != np.float32 or vectors.shape != (len(records), dim) or not np.isfinite(vectors).all():
            return f"{npy.name} holds no ({len(records)}, {dim}) float32 rows"
    except (validate.FieldError, SimclrWatchesError, KeyError, TypeError, ValueError, OSError) as e:
        return f"unreadable ({one_line(str(e))})"
    if rehash:
        for path, sha, _ in records:
            digest = file_digest(path)
            if isinstance(digest, ImageReadError) or digest[0] != sha:
                return f"{path} changed since it was embedded"
    errors = [ImageReadError(Path(p), r) for p, r in skipped]
    return Embedded([EmbeddedItem(Path(p), s, b) for p, s, b in records], vectors, errors)


def remove_work(work: Path) -> None:
    """Removes a work folder of shards (only one that holds nothing but shard files and their temporaries)."""
    with contextlib.suppress(SimclrWatchesError):
        if prepare_output(work, SHARDS_OUTPUT, force=True):
            shutil.rmtree(work, ignore_errors=True)


def build_sharded(catalog: Path | str, out_dir: Path | str, info: DistInfo, *, checkpoint: str | None, batch_size: int,
                  device: str, n_trees: int, pca: int, whiten: bool, crop: bool, force: bool, progress: bool):
    """The sharded ``build_index``, run by every process of a ``torchrun`` launch (``info``: which one this is).

    Returns:
        On rank 0 the :class:`~simclr_watches.retrieval.index.BuildReport` (its ``shards``
        say which shards were reused and which embedded); None on the others.

    Raises:
        SimclrWatchesError: the output may not be written (every rank, before any work), a
            rank failed (every rank: the first failure), or nothing could be read (rank 0).
    """
    from simclr_watches.core.device import resolve_device
    from simclr_watches.data.images import scan_images
    from simclr_watches.data.mask import CROP_MARGIN
    from simclr_watches.retrieval.catalog import embed_catalog
    from simclr_watches.retrieval.index import BuildReport, fit_projection, prepare_index_output, write_index
    from simclr_watches.weights import load_model

    catalog, out_dir = Path(catalog), Path(out_dir)
    prepare_index_output(out_dir, force=force, inputs=[catalog])
    work = work_dir(out_dir)
    prepare_output(work, SHARDS_OUTPUT, force=True, inputs=[catalog])  # ours to fill, or refused
    paths = scan_images(catalog)
    if not paths:
        raise SimclrWatchesError(f"{catalog}: no image files (jpg, jpeg, png, webp, bmp, tif, tiff) found")
    dev = local_device(resolve_device(device), info)
    view = {"crop": "foreground", "margin": CROP_MARGIN} if crop else {"crop": "none"}
    bounds = shard_bounds(len(paths), info.world)
    with process_group(info, dev):
        failure, note, model = None, "", None
        try:
            encoder, model = load_model(checkpoint)

            def key(k: int) -> ShardKey:
                return ShardKey(model.id, model.sha256, model.preprocessing.to_dict(), view,
                                [str(p) for p in paths[bounds[k][0] : bounds[k][1]]])

            mine = key(info.rank)
            work.mkdir(parents=True, exist_ok=True)
            found = read_shard(work, info.rank, info.world, mine, model.dim)
            if isinstance(found, Embedded):
                note = f"shard {info.rank + 1}/{info.world}: reused ({len(found.items)} images)"
            else:
                emb = embed_catalog(encoder, model.preprocessing, paths[bounds[info.rank][0] : bounds[info.rank][1]],
                                    CROP_MARGIN if crop else None, model, batch_size=batch_size, device=dev,
                                    progress=progress and info.main)
                write_shard(work, info.rank, info.world, mine, emb)
                note = f"shard {info.rank + 1}/{info.world}: embedded {len(emb.items)} images ({found})"
        except (SimclrWatchesError, OSError) as e:
            failure = f"rank {info.rank}: {one_line(str(e))}"
        outcomes = all_ranks((note, failure), info)  # the barrier: every shard is written, or failed
    failures = [f for _, f in outcomes if f]
    if failures:
        raise SimclrWatchesError(failures[0])
    if not info.main:
        return None
    parts = []
    for k in range(info.world):
        got = read_shard(work, k, info.world, key(k), model.dim, rehash=False)  # just written by this run
        if isinstance(got, str):
            raise SimclrWatchesError(f"{work}: shard {k + 1}/{info.world} {got}")
        parts.append(got)
    items = [it for p in parts for it in p.items]
    skipped = [e for p in parts for e in p.skipped]
    if not items:
        raise NoReadableImagesError(catalog, skipped)
    vectors = np.concatenate([p.vectors for p in parts])
    projection = fit_projection(vectors, pca if len(items) > pca else 0, whiten)
    rows = vectors if projection is None else projection.apply(vectors)
    write_index(out_dir, rows, items, model, model.preprocessing, n_trees=n_trees, projection=projection,
                skipped=[(str(e.path), e.reason) for e in skipped], extra={"catalog_view": view}, force=force)
    remove_work(work)
    return BuildReport(out_dir, len(items), [(str(e.path), e.reason) for e in skipped], model,
                       shards=[n for n, _ in outcomes])

