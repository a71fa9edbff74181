"""The catalog index: an Annoy forest plus the JSON manifest Annoy cannot hold (format 2).

An index folder (docs/INDEX_FORMAT.md) holds:
    index.json       the manifest: format version, model id + sha256, preprocessing, dim,
                     metric, n_trees, the data files below by name, and per item: a stable
                     id, absolute path, sha256, byte size (and ``removed``); plus the files skipped
    forest-G.ann     Annoy angular forest over the rows of vectors-G.npy
    vectors-G.npy    (F, D) float32 unit rows of the forest's items (rebuilds need no re-embedding)
    added-G.npy      optional (A, D) float32 unit rows of items added since, searched exactly

Items are rows: the forest's F first, then the A added ones. Removed items stay hidden
until a compaction rebuilds the forest (:mod:`simclr_watches.retrieval.update`); how the
files change safely is :mod:`simclr_watches.retrieval.store`'s business.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import stat
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from annoy import AnnoyIndex

from simclr_watches import __version__
from simclr_watches.core import validate
from simclr_watches.core.atomic import atomic_dir
from simclr_watches.retrieval import store
from simclr_watches.retrieval.embed import EmbeddedItem
from simclr_watches.core.errors import IndexFormatError, NoReadableImagesError, SimclrWatchesError, one_line
from simclr_watches.core.files import read_fd_limited
from simclr_watches.model import Preprocessing
from simclr_watches.core.outputs import OutputKind, json_format_owned, owned_folder, prepare_output
from simclr_watches.retrieval.store import SIDECAR_FILE
from simclr_watches.weights import ModelInfo

FORMAT_VERSION = 2
METRIC = "angular"


def cosine_from_angular(distance: np.ndarray | float) -> np.ndarray | float:
    """Annoy's angular distance is ||u - v|| of unit vectors, i.e. sqrt(2 - 2 cos)."""
    return 1.0 - np.square(distance) / 2.0


INDEX_FORMAT = "simclr-watches-index"  # the sidecar's first key: what marks a folder as our index
# What `serve` keeps in an index folder: photos added through its API, named SHA256.EXT by the
# server from their content and decoded format, and the feedback on results, one JSON object a line.
UPLOADS_DIR = "uploads"
FEEDBACK_FILE = "feedback.jsonl"
UPLOAD_NAME = re.compile(r"^[0-9a-f]{64}\.(jpg|png|webp|bmp|tif|gif)$")
INDEX_OUTPUT = OutputKind(
    "index folder",
    folder=True,
    owned=owned_folder({SIDECAR_FILE: json_format_owned(INDEX_FORMAT), store.LOCK_FILE: Path.is_file,
                        FEEDBACK_FILE: Path.is_file,
                        UPLOADS_DIR: owned_folder({}, others=lambda p: UPLOAD_NAME.match(p.name) and p.is_file()),
                        **{name: Path.is_file for name in store.V1_FILES}},
                       required=SIDECAR_FILE, others=lambda p: store.is_data_name(p.name) and p.is_file()),
)


DEFAULT_TREES = 50  # trees of build-index's forest
FOREST_SEED = 0


def build_forest(vectors: np.ndarray, n_trees: int = DEFAULT_TREES) -> AnnoyIndex:
    """An in-memory Annoy angular forest over the rows of ``vectors``; item i is row i.

    Seeded and built on one thread, so the same vectors always give the same forest:
    the one ``build-index`` writes is the one ``evaluate`` queries (Bernhardsson, Annoy:
    random-projection trees, https://github.com/spotify/annoy).

    Args:
        vectors: (N, D) float32 unit vectors.
        n_trees: number of trees; more is more exact and larger.
    """
    forest = AnnoyIndex(int(vectors.shape[1]), METRIC)
    for i, v in enumerate(vectors):
        forest.add_item(i, v.tolist())
    forest.set_seed(FOREST_SEED)
    forest.build(n_trees, n_jobs=1)
    return forest


def write_index(
    out_dir: Path | str,
    vectors: np.ndarray,
    items: Sequence[EmbeddedItem],
    model: ModelInfo,
    preprocessing: Preprocessing,
    *,
    n_trees: int = DEFAULT_TREES,
    skipped: Sequence[tuple[str, str]] = (),
    extra: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Writes an index directory atomically.

    Args:
        vectors: (N, D) unit vectors, row i for items[i].
        skipped: (path, reason) of files left out, recorded for the user.
        extra: further sidecar fields (e.g. how catalog images were cropped before embedding).
        force: replace an index written earlier by this program (only once the new one is
            complete); anything else at ``out_dir`` but an empty folder is never replaced.

    Raises:
        SimclrWatchesError: ``out_dir`` holds an index and ``force`` is False, holds anything
            else (see :func:`simclr_watches.core.outputs.prepare_output`), or the inputs disagree.
    """
    out_dir = Path(out_dir)
    if len(vectors) != len(items) or len(items) == 0:
        raise SimclrWatchesError(f"cannot index {len(items)} items with {len(vectors)} vectors")
    if n_trees < 1:
        raise SimclrWatchesError(f"n_trees must be >= 1, got {n_trees}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    generation = 1
    files = {"forest": store.data_name("forest", generation), "vectors": store.data_name("vectors", generation)}
    sidecar = {
        "format": INDEX_FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "created": utc_now(),
        "model": model.to_dict(),
        "preprocessing": preprocessing.to_dict(),
        "dim": int(vectors.shape[1]),
        "metric": METRIC,
        "n_trees": n_trees,
        "generation": generation,
        "files": files,
        "forest_count": len(items),
        "count": len(items),
        "next_id": len(items),
        "items": [item_record(i, it) for i, it in enumerate(items)],
        "skipped": [{"path": str(p), "reason": r} for p, r in skipped],
        **(extra or {}),
    }
    replace = prepare_output(out_dir, INDEX_OUTPUT, force=force)
    # A writer updating the index we replace finishes first (and one that waits then locks the new one).
    locked = store.writer_lock(out_dir) if replace and (out_dir / SIDECAR_FILE).is_file() else contextlib.nullcontext()
    try:
        with locked, atomic_dir(out_dir, replace=replace) as tmp:
            store.commit(tmp, sidecar, forest_writes(files, build_forest(vectors, n_trees), vectors))
    except (FileExistsError, NotADirectoryError):  # appeared since the check
        raise SimclrWatchesError(f"{out_dir}: already exists; use --force to replace it") from None
    return out_dir


def item_record(item_id: int, item: EmbeddedItem) -> dict[str, Any]:
    """The manifest's record of an embedded file: ``id``, absolute ``path``, ``sha256``, ``bytes``."""
    return {"id": item_id, "path": str(Path(item.path).resolve()), "sha256": item.sha256, "bytes": item.nbytes}


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def save_rows(rows: np.ndarray) -> Callable[[Path], None]:
    """A writer of ``rows`` as a float32 ``.npy`` file at the path it is given (for :func:`store.commit`)."""

    def write(path: Path) -> None:
        with open(path, "wb") as f:  # np.save on a path would append ".npy" to a temporary's name
            np.save(f, np.ascontiguousarray(rows, dtype=np.float32), allow_pickle=False)

    return write


def forest_writes(files: dict[str, str], forest: AnnoyIndex, vectors: np.ndarray) -> dict[str, Callable[[Path], None]]:
    """Writers of a new forest and its rows under the names ``files`` gives them (for :func:`store.commit`)."""

    def save_forest(path: Path) -> None:
        forest.save(str(path))
        forest.unload()

    return {files["forest"]: save_forest, files["vectors"]: save_rows(vectors)}


# Bounds on what an index folder may ask for: a hostile or corrupt file is refused before it allocates.
MAX_SIDECAR_BYTES = 256 << 20  # about a million items with long paths
MAX_ITEMS = 10_000_000
MAX_ID = 2**53  # ids are never reused: room for a lifetime of additions, and exact as JSON numbers anywhere
MAX_DIM = 16384  # an ensemble of up to eight 2048-d members
MAX_TREES = 10_000
MAX_MEMBERS = 16
MAX_MODEL_ID = 8192  # a registry name, a checkpoint path, or an ensemble's paths joined by "+"
MAX_DEPTH = 32  # JSON nesting; the format itself needs 3
MAX_SEARCH_K = 2**31 - 1  # Annoy's search_k is a C int
# A build replacing the folder while it is read makes the reader start over, at most this many times.
READ_ATTEMPTS = 8
RETRY_PAUSE_S = 0.01  # times the attempt number
EMBEDDINGS_CHUNK_BYTES = 16 << 20  # embeddings are checked this much at a time
UNIT_NORM_TOLERANCE = 1e-3
ITEM_TOLERANCE = 1e-6  # Annoy stores the float32 rows it was given


class Rows:
    """(N, D) rows of two arrays stacked, read without copying either: the forest's rows, then the added ones.

    Indexing by an int, an int array or a slice reads only the rows asked for (both arrays
    may be memory maps); ``np.asarray`` copies all of them.
    """

    def __init__(self, base: np.ndarray, added: np.ndarray):
        self.base, self.added = base, added
        self.shape = (len(base) + len(added), int(base.shape[1]))
        self.dtype = base.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = np.arange(len(self))[key]
        if rows.ndim == 0:
            r = int(rows)
            return np.asarray(self.base[r] if r < len(self.base) else self.added[r - len(self.base)])
        out = np.empty((len(rows), self.shape[1]), self.dtype)
        in_base = rows < len(self.base)
        out[in_base] = self.base[rows[in_base]]
        out[~in_base] = self.added[rows[~in_base] - len(self.base)]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.concatenate([self.base, self.added])
        return out if dtype is None else out.astype(dtype)


@dataclass
class Index:
    """A loaded index, all of it from one manifest: query it with unit vectors.

    Every field was validated by :func:`load_index`: reading ``meta`` (its fields as
    docs/INDEX_FORMAT.md lists them) cannot fail, and nothing in it can make a query
    allocate more than the files themselves hold. Rows are the forest's items, then the
    added ones; ``meta["items"][r]`` describes row ``r``; a removed item keeps its row,
    hidden from every result.

    Attributes:
        meta: the manifest (``index.json``).
        ann: the Annoy forest over the first ``forest_count`` rows, checked to agree with them.
        vectors: (count, dim) float32 unit rows, memory-mapped read-only (a :class:`Rows`
            when items were added since the forest was built).
        preprocessing: how the index's images became encoder input.
        stamp: (device, inode, mtime_ns, size) of the manifest that was read: a different
            stamp on disk means the index changed since.
    """

    directory: Path
    meta: dict[str, Any]
    ann: AnnoyIndex
    vectors: np.ndarray | Rows
    preprocessing: Preprocessing
    stamp: tuple[int, int, int, int] = (0, 0, 0, 0)

    def __post_init__(self) -> None:
        items = self.meta["items"]
        self.hidden = np.array([r for r, it in enumerate(items) if it.get("removed")], dtype=np.int64)
        self._hidden_set = frozenset(self.hidden.tolist())
        self._row_of_id = {it["id"]: r for r, it in enumerate(items) if not it.get("removed")}

    @property
    def paths(self) -> list[str]:
        """Every row's item path, hidden ones included (row-aligned)."""
        return [it["path"] for it in self.meta["items"]]

    @property
    def ids(self) -> list[int]:
        """Every row's stable item id, hidden ones included (row-aligned)."""
        return [it["id"] for it in self.meta["items"]]

    @property
    def forest_count(self) -> int:
        """Rows in the Annoy forest (the first ones)."""
        return int(self.meta["forest_count"])

    @property
    def added_count(self) -> int:
        """Rows added since the forest was built, searched exactly."""
        return len(self) - self.forest_count

    @property
    def removed_count(self) -> int:
        """Hidden rows, kept until the next compaction."""
        return len(self.hidden)

    @property
    def live_count(self) -> int:
        """Items a search can return."""
        return len(self) - len(self.hidden)

    @property
    def hidden_in_forest(self) -> frozenset[int]:
        """Rows of the forest that no result may show."""
        return frozenset(r for r in self._hidden_set if r < self.forest_count)

    @property
    def live_added(self) -> np.ndarray:
        """(A',) ascending added rows that are not hidden: those searched exactly beside the forest."""
        rows = np.arange(self.forest_count, len(self), dtype=np.int64)
        return rows[~np.isin(rows, self.hidden)]

    def is_hidden(self, row: int) -> bool:
        return row in self._hidden_set

    def item(self, item_id: int) -> dict[str, Any] | None:
        """The live item with this id (``id``, ``path``, ``sha256``, ``bytes``), or None if unknown or removed."""
        row = self._row_of_id.get(item_id) if validate.is_int(item_id) else None
        return None if row is None else {k: self.meta["items"][row][k] for k in ("id", "path", "sha256", "bytes")}

    def row_of(self, item_id: int) -> int | None:
        """The row of the live item with this id, or None."""
        return self._row_of_id.get(item_id)

    @property
    def crop_margin(self) -> float | None:
        """Margin of the foreground crop applied to catalog photos (and so to queries); None: no crop."""
        view = self.meta.get("catalog_view", {"crop": "none"})
        return float(view["margin"]) if view["crop"] == "foreground" else None

    def __len__(self) -> int:
        return int(self.meta["count"])

    def query(self, vector: np.ndarray, k: int) -> tuple[list[int], list[float]]:
        """Top-k live rows and their scores for one (D,) query vector, best first.

        The score is the dot product with the item's vector: the cosine for a unit query (a
        query without its descriptor block scores the plain ensemble's cosine,
        :mod:`simclr_watches.retrieval.query_descriptor`). The forest is asked for ``k`` more
        items than it holds hidden ones, which are then dropped; the added rows are merged in.
        """
        k = min(k, self.live_count)
        if k < 1:
            return [], []
        hidden = self.hidden_in_forest
        n = min(k + len(hidden), self.forest_count)
        # Searching more nodes than Annoy's default keeps the approximate top-k exact at catalog scale.
        search_k = min(max(n, 10) * self.meta["n_trees"] * 4, MAX_SEARCH_K)
        rows = [r for r in self.ann.get_nns_by_vector(vector.tolist(), n, search_k=search_k) if r not in hidden]
        rows += [int(r) for r in self.live_added]
        scores = np.asarray(self.vectors[rows]) @ np.asarray(vector, np.float32) if rows else []
        found = sorted(zip(rows, (float(s) for s in scores)), key=lambda f: -f[1])  # stable: forest order breaks ties
        found = found[:k]
        return [r for r, _ in found], [s for _, s in found]

    def load_model(self, checkpoint: str | None = None) -> tuple[Any, ModelInfo]:
        """The encoder this index was built with, checked against it (what search and updates embed with).

        Args:
            checkpoint: where that model is, if not at the id the manifest records.

        Raises:
            CheckpointError: the model cannot be loaded.
            IndexFormatError: its weights are not the index's.
        """
        from simclr_watches.core.errors import CheckpointError
        from simclr_watches.weights import load_model

        try:
            encoder, model = load_model(checkpoint or self.meta["model"]["id"])
        except CheckpointError as e:
            if checkpoint:
                raise
            raise CheckpointError(f"{e} (the model this index was built with; pass --checkpoint if it moved)") from None
        self.check_model(model)
        return encoder, model

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


class _Replaced(Exception):
    """The folder was swapped or deleted while it was being opened: read it again.

    Attributes:
        error: what to report if it keeps happening.
    """

    def __init__(self, error: IndexFormatError):
        super().__init__(str(error))
        self.error = error


def load_index(directory: Path | str) -> Index:
    """Opens an index folder, validating every file before anything is used.

    The manifest and the files it names are opened from one folder (one directory file
    descriptor): a writer committing meanwhile (``add``, ``remove``, ``compact``, or a
    ``build-index --force`` swapping the folder) yields the old index or the new one,
    never a mix of both; if a named file is deleted under the reader, it starts over.

    Raises:
        IndexFormatError: a missing file or folder, or a file that is not what the
            format says (one line naming the file, and the field for the manifest).
    """
    directory = Path(directory)
    for attempt in range(READ_ATTEMPTS):
        if attempt:
            time.sleep(RETRY_PAUSE_S * attempt)
        try:
            return _load_once(directory)
        except _Replaced as e:
            error = e.error
        except OSError as e:  # a read or mapping failing under a file opened fine
            raise IndexFormatError(f"{directory}: cannot read the index: {one_line(str(e))}") from None
    raise error


def load_embeddings(directory: Path | str) -> np.ndarray:
    """The (N, D) float32 rows of every item, hidden ones included (validated with the whole index).

    Raises:
        IndexFormatError: as :func:`load_index`.
    """
    return np.asarray(load_index(directory).vectors)


def _load_once(directory: Path) -> Index:
    dir_fd = _open_dir(directory)
    fds: list[int] = []
    try:
        fds.append(_open_member(directory, dir_fd, SIDECAR_FILE))
        st = os.fstat(fds[0])
        stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        sidecar = directory / SIDECAR_FILE
        meta = _read_sidecar(fds[0], sidecar)
        try:
            preprocessing = _check_sidecar(meta)
        except validate.FieldError as e:
            raise IndexFormatError(f"{sidecar}: {e}") from None
        files, opened = meta["files"], {}
        for role in store.FILE_KINDS:
            if role in files:
                opened[role] = _open_member(directory, dir_fd, files[role], manifest_fd=fds[0])
                fds.append(opened[role])
        forest_count, dim = meta["forest_count"], meta["dim"]
        base = _map_embeddings(opened["vectors"], directory / files["vectors"], forest_count, dim)
        ann = _load_forest(opened["forest"], directory / files["forest"], meta, base, files["vectors"])
        vectors: np.ndarray | Rows = base
        if "added" in files:
            added = _map_embeddings(opened["added"], directory / files["added"], meta["count"] - forest_count, dim)
            vectors = Rows(base, added)
        return Index(directory, meta, ann, vectors, preprocessing, stamp)
    finally:
        for fd in fds + [dir_fd]:
            os.close(fd)


def _open_dir(directory: Path) -> int:
    try:
        return os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        # Perhaps mid-swap (a rebuild renames the old folder away, then the new one in): try again.
        raise _Replaced(IndexFormatError(f"{directory}: no such index folder")) from None
    except NotADirectoryError:
        raise IndexFormatError(f"{directory}: not a folder") from None
    except OSError as e:
        raise IndexFormatError(f"{directory}: cannot open the index folder: {e.strerror}") from None


def _open_member(directory: Path, dir_fd: int, name: str, manifest_fd: int | None = None) -> int:
    """Opens ``name`` inside the folder ``dir_fd`` refers to (non-blocking: a FIFO cannot hang us).

    Args:
        manifest_fd: the manifest that named the file: if it has been replaced since, a
            missing file was deleted by the writer that replaced it (read again).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags, dir_fd=dir_fd) if os.open in os.supports_dir_fd else os.open(directory / name, flags)
    except FileNotFoundError:
        if _renamed(directory, dir_fd) or (manifest_fd is not None and _renamed(directory / SIDECAR_FILE, manifest_fd)):
            raise _Replaced(_changing(directory)) from None  # a rebuild's old folder, or a commit's old files
        missing = f"not an index ({name} is missing)" if name == SIDECAR_FILE else f"{name} is missing"
        raise IndexFormatError(f"{directory}: {missing}") from None
    except OSError as e:
        raise IndexFormatError(f"{directory / name}: cannot open: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IndexFormatError(f"{directory / name}: not a regular file")
    return fd


def _renamed(path: Path, fd: int) -> bool:
    """Whether ``path`` no longer names the file or folder ``fd`` was opened from.

    A name never returns to an older file: builds only ever rename a new folder (and
    writers a new manifest) in.
    """
    try:
        now = os.stat(path)
    except OSError:
        return True
    opened = os.fstat(fd)
    return (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino)


def _changing(directory: Path) -> IndexFormatError:
    return IndexFormatError(f"{directory}: the index kept being replaced or updated while it was read; try again")


def _read_sidecar(fd: int, path: Path) -> Any:
    """The parsed JSON of ``index.json``, read only when it is no larger than MAX_SIDECAR_BYTES."""
    size = os.fstat(fd).st_size
    if size <= MAX_SIDECAR_BYTES:
        raw = read_fd_limited(fd, MAX_SIDECAR_BYTES)  # bounded even if the file grew since
        size = len(raw)
    if size > MAX_SIDECAR_BYTES:
        raise IndexFormatError(f"{path}: {size} bytes, more than the {MAX_SIDECAR_BYTES} a sidecar may have")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise IndexFormatError(f"{path}: unreadable sidecar: JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, integers of thousands of digits
        raise IndexFormatError(f"{path}: unreadable sidecar: {one_line(str(e))}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_sidecar(meta: Any) -> Preprocessing:
    """Validates every field of a parsed sidecar; returns its preprocessing.

    Raises:
        validate.FieldError: naming the first field that is missing, mistyped or out of range.
    """
    meta = validate.obj(meta, "")
    if validate.depth(meta) > MAX_DEPTH:
        raise validate.FieldError("", f"nested more than {MAX_DEPTH} levels deep")
    validate.one_of(validate.member(meta, "format"), "format", ["simclr-watches-index"])
    version = validate.member(meta, "format_version")
    if validate.is_int(version) and 1 <= version < FORMAT_VERSION:
        raise validate.FieldError("format_version", f"index format v{version} was written by an older version of "
                                  "simclr-watches; rebuild it with build-index --force")
    if not (validate.is_int(version) and version == FORMAT_VERSION):
        raise validate.FieldError("format_version", f"index format v{validate.describe(version)} is not "
                                  f"v{FORMAT_VERSION}, the one this version reads; rebuild it with build-index")
    validate.text(validate.member(meta, "package_version"), "package_version", 64, printable=True)
    _check_time(validate.member(meta, "created"), "created")
    if "updated" in meta:
        _check_time(meta["updated"], "updated")
    validate.one_of(validate.member(meta, "metric"), "metric", [METRIC])
    dim = validate.int_in(validate.member(meta, "dim"), "dim", 1, MAX_DIM)
    validate.int_in(validate.member(meta, "n_trees"), "n_trees", 1, MAX_TREES)
    count = validate.int_in(validate.member(meta, "count"), "count", 1, MAX_ITEMS)
    forest_count = validate.int_in(validate.member(meta, "forest_count"), "forest_count", 1, count)
    generation = validate.int_in(validate.member(meta, "generation"), "generation", 1, store.MAX_GENERATION)
    with validate.under("files"):
        _check_files(validate.member(meta, "files"), generation, added=count > forest_count)
    next_id = validate.int_in(validate.member(meta, "next_id"), "next_id", count, MAX_ID)
    model = validate.member(meta, "model")
    with validate.under("model"):
        model_dim = _check_model_record(model, members=True)
    if model_dim != dim:
        raise validate.FieldError("model.dim", f"expected {dim} (dim), got {model_dim}")
    preprocessing = validate.member(meta, "preprocessing")
    with validate.under("preprocessing"):
        preprocessing = Preprocessing.parse(preprocessing)
    items = validate.array(validate.member(meta, "items"), "items")
    if len(items) != count:
        raise validate.FieldError("items", f"expected {count} items (count), got {len(items)}")
    seen: set[int] = set()
    for i, item in enumerate(items):
        with validate.under(f"items[{i}]"):
            _check_item(item, next_id, seen)
    for i, skip in enumerate(validate.array(validate.member(meta, "skipped"), "skipped")):
        with validate.under(f"skipped[{i}]"):
            skip = validate.obj(skip, "")
            validate.text(validate.member(skip, "path"), "path")
            validate.text(validate.member(skip, "reason"), "reason", empty=True)
    if "catalog_view" in meta:
        with validate.under("catalog_view"):
            _check_view(meta["catalog_view"])
    return preprocessing


def _check_time(value: Any, field: str) -> None:
    validate.text(value, field, 64, printable=True)
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        raise validate.FieldError(field, f"expected an ISO 8601 time, got {validate.describe(value)}") from None


def _check_model_record(model: Any, members: bool) -> int:
    """Validates a model record (``id``, ``sha256``, ``arch``, ``dim``; an ensemble's ``members``); returns its dim."""
    model = validate.obj(model, "")
    validate.text(validate.member(model, "id"), "id", MAX_MODEL_ID, printable=True)
    validate.hex_digest(validate.member(model, "sha256"), "sha256")
    validate.text(validate.member(model, "arch"), "arch", 256, printable=True)
    dim = validate.int_in(validate.member(model, "dim"), "dim", 1, MAX_DIM)
    if "members" in model:
        if not members:
            raise validate.FieldError("members", "a member of an ensemble cannot be an ensemble")
        records = validate.array(model["members"], "members", 2, MAX_MEMBERS)
        dims = []
        for i, record in enumerate(records):
            with validate.under(f"members[{i}]"):
                dims.append(_check_model_record(record, members=False))
        if "descriptor" in model:  # a DescribedEnsemble's block after the members' (simclr_watches.model.descriptor)
            with validate.under("descriptor"):
                dims.append(validate.int_in(validate.member(validate.obj(model["descriptor"], ""), "dim"), "dim", 1, MAX_DIM))
        if sum(dims) != dim:
            raise validate.FieldError("members", f"their dims (and the descriptor's) add up to {sum(dims)}, not to dim {dim}")
    return dim


def _check_files(files: Any, generation: int, added: bool) -> None:
    """The data file names: ``forest`` and ``vectors``, and ``added`` exactly when there are added rows."""
    files = validate.obj(files, "")
    for role in files:
        if role not in store.FILE_KINDS:
            raise validate.FieldError(role, f"unknown data file role (known: {', '.join(store.FILE_KINDS)})")
    for role in ("forest", "vectors", "added"):
        if role == "added" and not added:
            if role in files:
                raise validate.FieldError(role, "names a file of added rows, but count equals forest_count")
            continue
        name = validate.member(files, role)
        written = store.name_generation(role, name)
        if written is None:
            raise validate.FieldError(role, f"expected a file name like {store.data_name(role, 1)!r}, "
                                            f"got {validate.describe(name)}")
        if written > generation:
            raise validate.FieldError(role, f"written at generation {written}, after this manifest's {generation}")


def _check_item(item: Any, next_id: int, seen: set[int]) -> None:
    item = validate.obj(item, "")
    item_id = validate.int_in(validate.member(item, "id"), "id", 0, next_id - 1)
    if item_id in seen:
        raise validate.FieldError("id", f"{item_id} is the id of an earlier item too")
    seen.add(item_id)
    if "removed" in item and item["removed"] is not True:
        raise validate.FieldError("removed", f"expected true (or no field), got {validate.describe(item['removed'])}")
    validate.text(validate.member(item, "path"), "path")
    validate.hex_digest(validate.member(item, "sha256"), "sha256")
    validate.int_in(validate.member(item, "bytes"), "bytes", 0, 2**63 - 1)


def _check_view(view: Any) -> None:
    view = validate.obj(view, "")
    if validate.one_of(validate.member(view, "crop"), "crop", ["foreground", "none"]) == "foreground":
        validate.real_in(validate.member(view, "margin"), "margin", 0.0, 1.0)


def _map_embeddings(fd: int, path: Path, count: int, dim: int) -> np.ndarray:
    """Memory-maps ``embeddings.npy`` (never unpickled) after checking its header against the sidecar.

    Raises:
        IndexFormatError: not a .npy file, another dtype or shape, a size that disagrees
            with its header, or rows that are not finite unit vectors.
    """
    size = os.fstat(fd).st_size
    with open(fd, "rb", closefd=False) as f:
        fmt = np.lib.format
        try:
            version = fmt.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy version {version}")
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
        except (ValueError, TypeError, OSError, SyntaxError, tokenize.TokenError) as e:  # what a bad header raises
            raise IndexFormatError(f"{path}: not a readable .npy file: {one_line(str(e))}") from None
        if dtype != np.dtype("<f4") or fortran or shape != (count, dim):
            got = f"{'Fortran-order ' if fortran else ''}{dtype} {shape}"
            raise IndexFormatError(f"{path}: expected float32 ({count}, {dim}) as {SIDECAR_FILE} says, got {got}")
        offset = f.tell()
        if size != offset + count * dim * 4:
            raise IndexFormatError(f"{path}: {size} bytes, expected {offset + count * dim * 4} for its "
                                   f"({count}, {dim}) float32 rows: truncated or padded")
        vectors = np.asarray(np.memmap(f, dtype=np.float32, mode="r", offset=offset, shape=(count, dim)))
    _check_unit_rows(vectors, path)
    return vectors


def _check_unit_rows(vectors: np.ndarray, path: Path) -> None:
    """Every row finite with unit L2 norm, checked a bounded chunk at a time."""
    rows = max(1, EMBEDDINGS_CHUNK_BYTES // (4 * vectors.shape[1]))
    for start in range(0, len(vectors), rows):
        with np.errstate(all="ignore"):  # NaN and overflowing rows are reported below, not warned about
            norms = np.linalg.norm(vectors[start : start + rows].astype(np.float64), axis=1)
        bad = np.flatnonzero(~(np.abs(norms - 1.0) <= UNIT_NORM_TOLERANCE))  # NaN and inf fail too
        if len(bad):
            raise IndexFormatError(f"{path}: row {start + bad[0]} is not a finite unit vector "
                                   f"(norm {norms[bad[0]]:.6g})")


def _load_forest(fd: int, path: Path, meta: dict[str, Any], vectors: np.ndarray, vectors_name: str) -> AnnoyIndex:
    """Loads the forest from the open ``fd`` once its structure is known to be sound and of this build.

    Args:
        vectors: the (forest_count, dim) rows its items must equal, from the file ``vectors_name``.


    Raises:
        IndexFormatError: a size that is no whole number of nodes, a forest Annoy would read
            out of bounds or loop in, or items that differ from ``vectors``.
        _Replaced: (only where the file cannot be handed to Annoy by descriptor) the folder changed.
    """
    count, dim, n_trees = meta["forest_count"], meta["dim"], meta["n_trees"]
    node_bytes = 12 + 4 * dim  # Annoy's angular node: n_descendants, two children, dim floats
    size = os.fstat(fd).st_size
    if size == 0 or size % node_bytes:
        raise IndexFormatError(f"{path}: {size} bytes is not a whole number of {dim}-d Annoy nodes "
                               f"({node_bytes} bytes each): truncated, or not built for dim {dim}")
    with open(fd, "rb", closefd=False) as f:
        nodes = np.memmap(f, dtype=np.int32, mode="r", shape=(size // node_bytes, 3 + dim))
    problem = _forest_problem(nodes, count, dim, n_trees) or _items_problem(nodes, vectors, vectors_name)
    del nodes
    if problem:
        raise IndexFormatError(f"{path}: {problem}; rebuild it with build-index")
    ann = AnnoyIndex(dim, METRIC)
    by_fd = _fd_path(fd)
    try:
        ann.load(by_fd or str(path))
    except OSError as e:
        raise IndexFormatError(f"{path}: cannot load the Annoy index: {one_line(str(e))}") from None
    if by_fd is None and _renamed(path, fd):
        raise _Replaced(_changing(path.parent))
    if ann.get_n_items() != count:  # what Annoy itself found: the checks above make it agree
        raise IndexFormatError(f"{path}: holds {ann.get_n_items()} items, {SIDECAR_FILE} says {count} (forest_count)")
    return ann


def _forest_problem(nodes: np.ndarray, count: int, dim: int, n_trees: int) -> str | None:
    """Why Annoy could read out of bounds or never finish in this forest; None when it is sound.

    Annoy's layout (annoylib.h): nodes ``0..count-1`` are the items (``n_descendants`` 1);
    then each tree's nodes, children before parents; then a copy of each of the
    ``n_trees`` roots. A node with ``n_descendants`` up to ``K = dim + 2`` lists that many
    item ids in place of its vector; a larger one is a split with two child nodes.

    Args:
        nodes: (N, 3 + dim) int32 view of the file, one row per node.
    """
    n, k = len(nodes), dim + 2
    if n < count + n_trees:
        return f"{n} nodes, too few for {count} items in {n_trees} trees"
    desc = np.array(nodes[:, 0])
    if (desc[:count] != 1).any():
        return f"node {np.flatnonzero(desc[:count] != 1)[0]} should be an item"
    if (desc[count:] < 1).any() or (desc[n - n_trees :] != count).any():
        return f"its trees do not cover the {count} items"
    splits = count + np.flatnonzero(desc[count:] > k)
    children = np.array(nodes[splits, 1:3])
    # Children come before their parent: no cycles, every index inside the file.
    if ((children < 0) | (children >= splits[:, None])).any():
        return "a tree node points outside the forest"
    # Below the root copies, each tree node has one parent: a query visits each at most once per tree.
    parents = np.bincount(children[splits < n - n_trees].ravel(), minlength=n)
    if (parents[count:] > 1).any():
        return "a tree node has two parents"
    lists = count + np.flatnonzero(desc[count:] <= k)
    rows = max(1, EMBEDDINGS_CHUNK_BYTES // (4 * k))
    for start in range(0, len(lists), rows):
        chunk = lists[start : start + rows]
        ids = np.array(nodes[chunk, 1:])[np.arange(k) < desc[chunk][:, None]]
        if ((ids < 0) | (ids >= count)).any():
            return "a leaf lists an item that does not exist"
    return None


def _items_problem(nodes: np.ndarray, vectors: np.ndarray, vectors_name: str) -> str | None:
    """Where the forest's items differ from the embeddings (another build's files); None when they agree.

    An item node stores its vector, and its squared norm (1) in place of the children.
    """
    floats = nodes.view(np.float32)
    rows = max(1, EMBEDDINGS_CHUNK_BYTES // (4 * floats.shape[1]))
    for start in range(0, len(vectors), rows):
        stop = min(start + rows, len(vectors))
        with np.errstate(all="ignore"):
            same = np.abs(floats[start:stop, 3:] - vectors[start:stop]).max(axis=1) <= ITEM_TOLERANCE
            same &= np.abs(floats[start:stop, 1] - 1.0) <= UNIT_NORM_TOLERANCE
        if not same.all():
            i = start + int(np.flatnonzero(~same)[0])
            return f"item {i} differs from row {i} of {vectors_name}: the two files come from different builds"
    return None


def _fd_path(fd: int) -> str | None:
    """A path that opens the very file ``fd`` refers to (Linux ``/proc``, BSD and macOS ``/dev/fd``)."""
    for path in (f"/proc/self/fd/{fd}", f"/dev/fd/{fd}"):
        if os.path.exists(path):
            return path
    return None


@dataclass
class BuildReport:
    """What :func:`build_index` wrote: the folder, how many images, which were skipped and why, the model."""

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
    n_trees: int = DEFAULT_TREES,
    crop: bool = True,
    force: bool = False,
    progress: bool = True,
) -> BuildReport:
    """Embeds every readable image under ``catalog`` and writes the index to ``out_dir``.

    With ``crop``, each photo is cropped around the watch (its foreground on the white
    backdrop) before embedding; the sidecar's ``catalog_view`` records it so that
    search treats queries the same way. What ``simclr-watches build-index`` runs.

    Args:
        catalog: folder searched recursively for jpg, png, webp, bmp and tif files.
        out_dir: the index folder to write (see docs/INDEX_FORMAT.md).
        checkpoint: a checkpoint file or registered model name; None: the default model.
        batch_size: images per encoder pass.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        n_trees: Annoy trees (:func:`build_forest`).
        crop: crop each photo around the watch before embedding.
        force: replace an index this program wrote earlier at ``out_dir``.
        progress: show a progress bar on stderr.

    Returns:
        The folder, the number of images indexed, the files skipped (path, reason) and the model.

    Raises:
        SimclrWatchesError: ``out_dir`` may not be written (an index there without ``force``,
            anything else, or it overlaps ``catalog``; checked before any work), or the catalog
            has no image.
        NoReadableImagesError: no image in the catalog could be read (with why, for each).
    """
    from simclr_watches.data.images import scan_images
    from simclr_watches.retrieval.embed import embed_paths
    from simclr_watches.data.mask import CROP_MARGIN, crop_to_foreground
    from simclr_watches.weights import load_model

    out_dir = Path(out_dir)
    prepare_output(out_dir, INDEX_OUTPUT, force=force, inputs=[catalog])
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
