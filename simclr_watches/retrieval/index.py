"""The catalog index: an Annoy forest, its rows and item columns, and a small JSON manifest (format 3).

An index folder (docs/INDEX_FORMAT.md) holds:
    index.json       the manifest: format version, model id + sha256, preprocessing, width,
                     metric, n_trees, the data files below by name, the records of the items
                     added since the forest was built, the ids of removed items, the files skipped
    forest-G.ann     Annoy angular forest over the rows of vectors-G.npy, on their first
                     forest_dim coordinates (the PCA's leading axes), which finds candidates
    vectors-G.npy    (F, W) float16 unit rows of the forest's items (memory-mapped)
    ids-G.npy, sha256-G.npy, sizes-G.npy, offsets-G.npy, paths-G.npy
                     the forest's items' records as columns (:mod:`.columns`)
    projection-G.npy optional (W + 1, D) float32 PCA from the model's D dimensions to W (:mod:`.projection`)
    added-G.npy      optional (A, W) float16 unit rows of items added since, searched exactly

Items are rows: the forest's F first, then the A added ones. Removed items stay hidden
until a compaction rebuilds the forest (:mod:`simclr_watches.retrieval.update`); how the
files change safely is :mod:`simclr_watches.retrieval.store`'s business. Opening reads the
manifest and maps the files; their O(N) checks run once per file (:mod:`.verified`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import re
import time
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from annoy import AnnoyIndex

from simclr_watches import __version__
from simclr_watches.core import validate
from simclr_watches.core.atomic import atomic_dir
from simclr_watches.core.clock import utc_now
from simclr_watches.retrieval import store, verified
from simclr_watches.retrieval.columns import COLUMN_ROLES, MAX_PATH_BYTES, Columns, Items
from simclr_watches.retrieval.embed import EmbeddedItem
from simclr_watches.retrieval.projection import Projection, candidate_rows, fit_pca, stored_rows, unit_rows
from simclr_watches.core.errors import IndexFormatError, NoReadableImagesError, SimclrWatchesError, one_line
from simclr_watches.core.files import open_in_folder, read_fd_limited
from simclr_watches.model import Preprocessing
from simclr_watches.core.outputs import OutputKind, json_format_owned, owned_folder, prepare_output
from simclr_watches.retrieval.store import SIDECAR_FILE
from simclr_watches.weights import ModelInfo

FORMAT_VERSION = 3
METRIC = "angular"


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



def check_user_data(out_dir: Path) -> None:
    """Refuses to replace an index folder that holds what ``serve`` kept: photos in ``uploads/``, feedback.

    ``build-index --force`` may replace an index of ours, never the user's data in it: the
    photos added through the API and the feedback cannot be made again.

    Raises:
        SimclrWatchesError: ``uploads/`` or ``feedback.jsonl`` is not empty; the message names them
            and the ways out.
    """
    uploads, feedback = out_dir / UPLOADS_DIR, out_dir / FEEDBACK_FILE
    kept = []
    photos = len(os.listdir(uploads)) if uploads.is_dir() and not uploads.is_symlink() else 0
    if photos:
        kept.append(f"{UPLOADS_DIR}/ ({photos} files)")
    if feedback.is_file() and feedback.stat().st_size:
        kept.append(f"{FEEDBACK_FILE} ({feedback.stat().st_size} bytes)")
    if kept:
        raise SimclrWatchesError(f"{out_dir}: holds what serve kept, which --force would delete: {', '.join(kept)}; "
                                 f"move them out of the folder first, or keep them with build-index --update")


def prepare_index_output(out_dir: Path, *, force: bool, inputs: Sequence[Path | str] = ()) -> bool:
    """:func:`prepare_output` for an index folder, and :func:`check_user_data` on one it would replace."""
    replace = prepare_output(out_dir, INDEX_OUTPUT, force=force, inputs=inputs)
    if replace:
        check_user_data(out_dir)
    return replace


DEFAULT_TREES = 50  # trees of build-index's forest
FOREST_SEED = 0
DEFAULT_WIDTH = 512  # build-index --pca: stored width (docs/BENCHMARKS.md, "Compact vectors": no R@1 lost)
# The forest of a PCA-projected index indexes the rows' first FOREST_WIDTH coordinates (the leading
# axes) and finds candidates that the full rows then score exactly: an eighth of the bytes per item of
# a 512-d forest, with the same recall@10 (docs/BENCHMARKS.md, "A million watches").
FOREST_WIDTH = 64
QUERY_CANDIDATES = 256  # at least this many forest items are scored exactly per Index.query
# A forest of at most EXACT_ITEMS items is not searched: every row is a candidate, scored exactly.
# At a few thousand items that costs a query about a millisecond, and the forest's leading axes can
# miss a photo query's match (docs/BENCHMARKS.md, "Per-square sides and exact candidates").
EXACT_ITEMS = 4096


def forest_width(dim: int, projected: bool) -> int:
    """How many leading coordinates of the ``dim``-d rows the forest indexes: all, unless PCA-projected."""
    return min(dim, FOREST_WIDTH) if projected else dim


def forest_vectors(rows: np.ndarray, width: int) -> np.ndarray:
    """(N, width) float32: what the forest stores of (N, D) unit rows: the rows themselves, or their
    first ``width`` < D coordinates renormalised."""
    x = np.asarray(rows[:, :width], np.float32)
    return x if width == rows.shape[1] else unit_rows(x)


def forest_candidates(forest: AnnoyIndex, vectors: np.ndarray, n: int, hidden: frozenset[int] = frozenset(),
                      always: Sequence[int] = (), search_k: int = -1) -> np.ndarray:
    """Ascending rows: each of the (R, W) ``vectors``' ``n`` nearest forest items, united, plus ``always``.

    The forest holds the rows' first ``forest.f`` coordinates; each vector asks for ``len(hidden)``
    more items, then the ``hidden`` rows (removed items) are dropped. ``always``: rows outside the
    forest (items added since it was built), scored like the others. ``search_k`` -1: Annoy's
    default (``n_trees * n`` nodes). A forest of at most :data:`EXACT_ITEMS` items is not
    searched: all its rows but the hidden ones are candidates, so the search is exact.
    """
    size = forest.get_n_items()
    if size <= EXACT_ITEMS:
        found = set(range(size))
    else:
        want = n + len(hidden)
        found = {i for v in vectors for i in forest.get_nns_by_vector(v[: forest.f].tolist(), want, search_k=search_k)}
    return np.array(sorted((found - hidden) | {int(r) for r in always}), dtype=np.int64)


def build_forest(vectors: np.ndarray, n_trees: int = DEFAULT_TREES, width: int | None = None) -> AnnoyIndex:
    """An in-memory Annoy angular forest over the rows of ``vectors``; item i is row i.

    Seeded and built on one thread, so the same vectors always give the same forest:
    the one ``build-index`` writes is the one ``evaluate`` queries (Bernhardsson, Annoy:
    random-projection trees, https://github.com/spotify/annoy).

    Args:
        vectors: (N, D) unit vectors (float16 rows are stored exactly, as float32).
        n_trees: number of trees; more is more exact and larger.
        width: index only the first ``width`` coordinates, renormalised (:func:`forest_vectors`); None: all.
    """
    width = int(vectors.shape[1]) if width is None else width
    forest = AnnoyIndex(width, METRIC)
    chunk = max(1, EMBEDDINGS_CHUNK_BYTES // (4 * width))
    for start in range(0, len(vectors), chunk):
        for i, v in enumerate(forest_vectors(vectors[start : start + chunk], width), start):
            forest.add_item(i, v.tolist())
    forest.set_seed(FOREST_SEED)
    forest.build(n_trees, n_jobs=1)
    return forest


def fit_projection(vectors: np.ndarray, width: int, whiten: bool = False) -> Projection | None:
    """The PCA an index of these embeddings stores, or None when ``width`` is 0 or keeps every dimension.

    Raises:
        SimclrWatchesError: ``width`` negative, or not below the number of vectors (a PCA
            of N vectors has at most N - 1 axes).
    """
    if width < 0:
        raise SimclrWatchesError(f"the PCA width must be >= 0 (0: none), got {width}")
    if width == 0 or width >= vectors.shape[1]:
        return None
    if width >= len(vectors):
        raise SimclrWatchesError(f"a {width}-d PCA needs more than {width} images, the catalog has {len(vectors)}; "
                                 "use a smaller --pca, or --pca 0 to keep every dimension")
    return fit_pca(vectors, width, whiten)


def write_index(
    out_dir: Path | str,
    vectors: np.ndarray,
    items: Sequence[EmbeddedItem],
    model: ModelInfo,
    preprocessing: Preprocessing,
    *,
    n_trees: int = DEFAULT_TREES,
    projection: Projection | None = None,
    skipped: Sequence[tuple[str, str]] = (),
    extra: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Writes an index directory atomically.

    Args:
        vectors: (N, W) unit rows in the index's space, row i for items[i]: the model's
            embeddings, projected by ``projection`` when there is one.
        projection: the PCA that made the rows from the model's embeddings (:func:`fit_projection`),
            stored to project queries; None: the rows are the embeddings.
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
    space = (model.dim, model.dim) if projection is None else (projection.input_dim, projection.width)
    if space != (model.dim, vectors.shape[1]):
        raise SimclrWatchesError(f"cannot store {vectors.shape[1]}-d rows for a {model.dim}-d model with a projection "
                                 f"from {space[0]} to {space[1]} dimensions")
    rows = stored_rows(vectors)
    generation = 1
    width = forest_width(rows.shape[1], projection is not None)
    files, writes = generation_writes(generation, rows, Columns.from_records(
        [item_record(i, it) for i, it in enumerate(items)]), n_trees, width)
    sidecar = {
        "format": INDEX_FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "created": utc_now(),
        "model": model.to_dict(),
        "preprocessing": preprocessing.to_dict(),
        "dim": int(rows.shape[1]),
        "metric": METRIC,
        "n_trees": n_trees,
        "forest_dim": width,
        "generation": generation,
        "files": files,
        "forest_count": len(items),
        "count": len(items),
        "next_id": len(items),
        "added": [],
        "removed": [],
        "skipped": [{"path": str(p), "reason": r} for p, r in skipped],
        **(extra or {}),
    }
    if projection is not None:
        files["projection"] = store.data_name("projection", generation)
        writes[files["projection"]] = save_array(projection.to_array())
        sidecar["projection"] = {"method": "pca-whiten" if projection.whiten else "pca",
                                 "input_dim": projection.input_dim}
    replace = prepare_index_output(out_dir, force=force)
    # A writer updating the index we replace finishes first (and one that waits then locks the new one).
    locked = store.writer_lock(out_dir) if replace and (out_dir / SIDECAR_FILE).is_file() else contextlib.nullcontext()
    try:
        with locked:
            if replace:
                check_user_data(out_dir)  # again: a server may have kept something meanwhile
            with atomic_dir(out_dir, replace=replace) as tmp:
                store.commit(tmp, sidecar, writes)
            vouch_written(out_dir)
    except (FileExistsError, NotADirectoryError):  # appeared since the check
        raise SimclrWatchesError(f"{out_dir}: already exists; use --force to replace it") from None
    return out_dir


def vouch_written(directory: Path) -> "Index":
    """Remembers the O(N) checks of the index files this process has just written as passed; returns the index.

    The first opening of a fresh index (or of a new generation) then costs what any later
    one does (:func:`simclr_watches.retrieval.verified.vouching`), and the writer goes on with
    the index it opened here rather than opening it again.
    """
    with verified.vouching():
        return load_index(directory)


def check_is_index(directory: Path | str) -> None:
    """Refuses a folder whose manifest does not start as an index's (its first bytes only).

    What a writer checks before it makes its lock file in a folder; the whole index is
    validated once the lock is held (:func:`load_index`).

    Raises:
        IndexFormatError: no ``index.json`` of ours in ``directory``.
    """
    if not json_format_owned(INDEX_FORMAT)(Path(directory) / SIDECAR_FILE):
        raise IndexFormatError(f"{directory}: not an index ({SIDECAR_FILE} is missing or not an index manifest)")


def item_record(item_id: int, item: EmbeddedItem) -> dict[str, Any]:
    """The record of an embedded file: ``id``, absolute ``path``, ``sha256``, ``bytes``."""
    return {"id": item_id, "path": str(Path(item.path).resolve()), "sha256": item.sha256, "bytes": item.nbytes}


def save_array(array: np.ndarray) -> Callable[[Path], None]:
    """A writer of ``array`` as a ``.npy`` file at the path it is given (for :func:`store.commit`)."""

    def write(path: Path) -> None:
        with open(path, "wb") as f:  # np.save on a path would append ".npy" to a temporary's name
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)

    return write


def save_rows(rows: np.ndarray) -> Callable[[Path], None]:
    """A writer of unit rows as an index stores them (float16 ``.npy``)."""
    return save_array(stored_rows(rows))


def generation_writes(generation: int, rows: np.ndarray, columns: Columns, n_trees: int,
                      width: int) -> tuple[dict[str, str], dict[str, Callable[[Path], None]]]:
    """The files of a new forest generation: names by role, and their writers (for :func:`store.commit`).

    Args:
        rows: (F, W) unit rows of the forest's items, stored as float16 (the forest is built from the same values).
        columns: the items' records, row-aligned.
        width: the forest's ``forest_dim`` (:func:`forest_width`).
    """
    rows = stored_rows(rows)
    forest = build_forest(rows, n_trees, width)

    def save_forest(path: Path) -> None:
        forest.save(str(path))
        forest.unload()

    files = {role: store.data_name(role, generation) for role in store.FOREST_ROLES}
    writes = {files["forest"]: save_forest, files["vectors"]: save_array(rows)}
    writes.update({files[role]: save_array(a) for role, a in columns.arrays().items()})
    return files, writes


# Bounds on what an index folder may ask for: a hostile or corrupt file is refused before it allocates.
MAX_SIDECAR_BYTES = 64 << 20  # the manifest holds only the pending changes (MAX_PENDING) and the skipped files
MAX_ITEMS = 10_000_000
MAX_PENDING = 100_000  # added records + removed ids a manifest may hold (updates compact far below it)
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
EMBEDDINGS_CHUNK_BYTES = 16 << 20  # files are checked this much at a time
UNIT_NORM_TOLERANCE = 1e-3  # float16 rows of unit vectors are within 2**-11 of it
ITEM_TOLERANCE = 1e-6  # Annoy stores the rows it was given


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
    """A loaded index, all of it from one manifest: query it with unit vectors of its width.

    Every field was validated by :func:`load_index`: reading ``meta`` (its fields as
    docs/INDEX_FORMAT.md lists them) or ``items`` cannot fail, and nothing in them can make
    a query allocate more than the files themselves hold. Rows are the forest's items,
    then the added ones; ``items[r]`` describes row ``r``; a removed item keeps its row,
    hidden from every result. Queries are embedded by the model, then :meth:`project`-ed.

    Attributes:
        meta: the manifest (``index.json``).
        ann: the Annoy forest over the first ``forest_count`` rows (their first ``forest_dim``
            coordinates, renormalised), checked to agree with them.
        vectors: (count, dim) float16 unit rows, memory-mapped read-only (a :class:`Rows`
            when items were added since the forest was built).
        preprocessing: how the index's images became encoder input.
        items: every row's record (``id``, ``path``, ``sha256``, ``bytes``, ``removed``), read per row.
        projection: the PCA from the model's embeddings to the stored rows; None: none.
        stamp: (device, inode, mtime_ns, size) of the manifest that was read: a different
            stamp on disk means the index changed since.
    """

    directory: Path
    meta: dict[str, Any]
    ann: AnnoyIndex
    vectors: np.ndarray | Rows
    preprocessing: Preprocessing
    items: Items
    projection: Projection | None = None
    stamp: tuple[int, int, int, int] = (0, 0, 0, 0)

    def __post_init__(self) -> None:
        rows = [self.items.row_of(i) for i in self.meta["removed"]]
        self.hidden = np.array(sorted(r for r in rows if r is not None), dtype=np.int64)
        self._hidden_set = frozenset(self.hidden.tolist())

    @property
    def paths(self) -> list[str]:
        """Every row's item path, hidden ones included (row-aligned; reads the whole column)."""
        return self.items.paths()

    @property
    def ids(self) -> list[int]:
        """Every row's stable item id, hidden ones included (row-aligned; reads the whole column)."""
        return self.items.ids().tolist()

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
        row = self.row_of(item_id)
        return None if row is None else self.items[row]

    def row_of(self, item_id: int) -> int | None:
        """The row of the live item with this id, or None."""
        if not validate.is_int(item_id) or item_id in self.items.removed:
            return None
        return self.items.row_of(item_id)

    @functools.cached_property
    def scoring_rows(self) -> np.ndarray | Rows:
        """The rows a query scores: of an index of at most :data:`EXACT_ITEMS` rows, every row read
        once as float32 and renormalised (what each query would otherwise convert again); else
        :attr:`vectors`, of which a query reads only its candidates."""
        return unit_rows(np.asarray(self.vectors)) if len(self) <= EXACT_ITEMS else self.vectors

    def project(self, vectors: np.ndarray, unit: bool = True) -> np.ndarray:
        """Model embeddings ((N, D) or (D,)) as this index's unit rows ((N, W) or (W,)): its PCA, if any.

        Without ``unit``, projected rows keep their length (:meth:`Projection.apply`).
        """
        if self.projection is None:
            return np.asarray(vectors, np.float32)
        return self.projection.apply(vectors, unit)

    @property
    def crop_margin(self) -> float | None:
        """Margin of the foreground crop applied to catalog photos (and so to queries); None: no crop."""
        view = self.meta.get("catalog_view", {"crop": "none"})
        return float(view["margin"]) if view["crop"] == "foreground" else None

    def __len__(self) -> int:
        return int(self.meta["count"])

    def query(self, vector: np.ndarray, k: int) -> tuple[list[int], list[float]]:
        """Top-k live rows and their scores for one (W,) query vector in the rows' space, best first.

        The score is the dot product with the item's unit row: its cosine for a unit query (a
        photo query without its descriptor block scores the plain ensemble's cosine instead,
        :mod:`simclr_watches.retrieval.query_descriptor`). The forest proposes max(k,
        QUERY_CANDIDATES) live items (:func:`forest_candidates`; a small forest, all of them); they
        and the added rows are scored exactly on the stored rows.
        """
        k = min(k, self.live_count)
        if k < 1:
            return [], []
        hidden = self.hidden_in_forest
        n = min(max(k, QUERY_CANDIDATES), self.forest_count - len(hidden))
        # Twice Annoy's default number of nodes for n items: recall@10 0.96 at 1M (docs/BENCHMARKS.md).
        search_k = min((n + len(hidden)) * self.meta["n_trees"] * 2, MAX_SEARCH_K)
        vector = np.asarray(vector, np.float32)
        rows = forest_candidates(self.ann, vector[None], n, hidden, self.live_added, search_k)
        scores = candidate_rows(self.scoring_rows, rows) @ vector
        best = np.argsort(-scores, kind="stable")[:k]  # stable: row order breaks ties
        return rows[best].tolist(), scores[best].tolist()

    def is_current(self) -> bool:
        """Whether the manifest on disk is still the one this index was read from (same file, same content).

        Reads the manifest (bounded), none of the data files: a writer holding the lock uses
        the index it opened before taking it when no other writer committed meanwhile.
        """
        try:
            dir_fd = _open_dir(self.directory)
            try:
                fd = _open_member(self.directory, dir_fd, SIDECAR_FILE)
            finally:
                os.close(dir_fd)
        except (IndexFormatError, _Replaced, OSError):
            return False
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size) != self.stamp:
                return False
            return _read_sidecar(fd, self.directory / SIDECAR_FILE) == self.meta
        except (IndexFormatError, OSError):
            return False
        finally:
            os.close(fd)

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
    """The (N, W) rows of every item as float32, hidden ones included (validated with the whole index).

    Raises:
        IndexFormatError: as :func:`load_index`.
    """
    return np.asarray(load_index(directory).vectors, np.float32)


# dtype and shape of each .npy role, given (forest_count, count - forest_count, dim, projection input dim);
# None: any length (the paths blob, whose length offsets give).
_NPY = {
    "vectors": lambda f, a, d, i: ("<f2", (f, d)),
    "ids": lambda f, a, d, i: ("<i8", (f,)),
    "sha256": lambda f, a, d, i: ("|u1", (f, 32)),
    "sizes": lambda f, a, d, i: ("<i8", (f,)),
    "offsets": lambda f, a, d, i: ("<i8", (f + 1,)),
    "paths": lambda f, a, d, i: ("|u1", (None,)),
    "projection": lambda f, a, d, i: ("<f4", (d + 1, i)),
    "added": lambda f, a, d, i: ("<f2", (a, d)),
}
MAX_PROJECTION = 1e6  # largest magnitude of a projection's entries: queries stay finite


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
        files, fd = meta["files"], {}
        for role in store.FILE_KINDS:
            if role in files:
                fd[role] = _open_member(directory, dir_fd, files[role], manifest_fd=fds[0])
                fds.append(fd[role])
        return _map_all(directory, meta, fd, preprocessing, stamp)
    finally:
        for f in fds + [dir_fd]:
            os.close(f)


def _map_all(directory: Path, meta: dict[str, Any], fd: dict[str, int], preprocessing: Preprocessing,
             stamp: tuple[int, int, int, int]) -> Index:
    """Maps the data files of a validated manifest, checks them (O(N) checks once per file), builds the Index."""
    files, dim = meta["files"], meta["dim"]
    forest_count, count = meta["forest_count"], meta["count"]
    input_dim = meta.get("projection", {}).get("input_dim", dim)

    def path(role: str) -> Path:
        return directory / files[role]

    def mapped(role: str) -> np.ndarray:
        dtype, shape = _NPY[role](forest_count, count - forest_count, dim, input_dim)
        return _map_npy(fd[role], path(role), dtype, shape)

    arrays = {role: mapped(role) for role in files if role != "forest"}
    columns = Columns(*(arrays[role] for role in COLUMN_ROLES))
    if columns.offsets[-1] != len(columns.paths):
        raise IndexFormatError(f"{path('offsets')}: its paths end at byte {int(columns.offsets[-1])}, "
                               f"but {files['paths']} holds {len(columns.paths)}")
    last, first_added = int(columns.ids[-1]), meta["added"][0]["id"] if meta["added"] else meta["next_id"]
    if last >= first_added:
        raise IndexFormatError(f"{path('ids')}: its last id {last} is not below {first_added}, the next "
                               f"({'of the added items' if meta['added'] else 'next_id'} in {SIDECAR_FILE})")
    verified.once("columns", [fd[r] for r in COLUMN_ROLES], [forest_count],
                  lambda: _check_columns(lambda r: mapped(r), path))
    for role in ("vectors", "added"):
        if role in files:
            verified.once("unit-rows", [fd[role]], [role, arrays[role].shape], lambda: _check_unit_rows(mapped(role), path(role)))
    verified.once("forest", [fd["forest"], fd["vectors"]], [forest_count, dim, meta["forest_dim"], meta["n_trees"]],
                  lambda: _check_forest(fd["forest"], path("forest"), meta, mapped("vectors"), files["vectors"]))
    ann = _load_forest(fd["forest"], path("forest"), meta)
    projection = None
    if "projection" in files:
        values = arrays["projection"]
        if not (np.abs(values) <= MAX_PROJECTION).all():  # NaN fails too
            raise IndexFormatError(f"{path('projection')}: values must be finite, at most {MAX_PROJECTION:g} in size")
        projection = Projection.from_array(values, meta["projection"]["method"] == "pca-whiten")
    items = Items(columns, meta["added"], meta["removed"])
    for i, item_id in enumerate(meta["removed"]):
        if items.row_of(item_id) is None:
            raise IndexFormatError(f"{directory / SIDECAR_FILE}: removed[{i}]: no item has id {item_id}")
    vectors = arrays["vectors"] if "added" not in files else Rows(arrays["vectors"], arrays["added"])
    return Index(directory, meta, ann, vectors, preprocessing, items, projection, stamp)


def _check_columns(mapped: Callable[[str], np.ndarray], path: Callable[[str], Path]) -> None:
    problem = Columns(*(mapped(role) for role in COLUMN_ROLES)).problem()
    if problem:
        role, why = problem.split(": ", 1)
        raise IndexFormatError(f"{path(role)}: {why}")


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
    """Opens the regular file ``name`` inside the folder ``dir_fd`` refers to (no symbolic link, no FIFO's wait).

    Args:
        manifest_fd: the manifest that named the file: if it has been replaced since, a
            missing file was deleted by the writer that replaced it (read again).
    """
    try:
        return open_in_folder(directory, name, os.O_RDONLY, lambda path, why: IndexFormatError(f"{path}: {why}"),
                              dir_fd=dir_fd if os.open in os.supports_dir_fd else None)
    except FileNotFoundError:
        if _renamed(directory, dir_fd) or (manifest_fd is not None and _renamed(directory / SIDECAR_FILE, manifest_fd)):
            raise _Replaced(_changing(directory)) from None  # a rebuild's old folder, or a commit's old files
        missing = f"not an index ({name} is missing)" if name == SIDECAR_FILE else f"{name} is missing"
        raise IndexFormatError(f"{directory}: {missing}") from None


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
    validate.int_in(validate.member(meta, "forest_dim"), "forest_dim", 1, dim)
    count = validate.int_in(validate.member(meta, "count"), "count", 1, MAX_ITEMS)
    forest_count = validate.int_in(validate.member(meta, "forest_count"), "forest_count", 1, count)
    generation = validate.int_in(validate.member(meta, "generation"), "generation", 1, store.MAX_GENERATION)
    next_id = validate.int_in(validate.member(meta, "next_id"), "next_id", count, MAX_ID)
    model = validate.member(meta, "model")
    with validate.under("model"):
        model_dim = _check_model_record(model, members=True)
    if "projection" in meta:
        with validate.under("projection"):
            projection = validate.obj(meta["projection"], "")
            validate.one_of(validate.member(projection, "method"), "method", ["pca", "pca-whiten"])
            validate.one_of(validate.member(projection, "input_dim"), "input_dim", [model_dim])
        if dim >= model_dim:
            raise validate.FieldError("dim", f"expected fewer than the model's {model_dim} with a projection, got {dim}")
    elif model_dim != dim:
        raise validate.FieldError("model.dim", f"expected {dim} (dim), got {model_dim}")
    with validate.under("files"):
        _check_files(validate.member(meta, "files"), generation, added=count > forest_count,
                     projection="projection" in meta)
    preprocessing = validate.member(meta, "preprocessing")
    with validate.under("preprocessing"):
        preprocessing = Preprocessing.parse(preprocessing)
    added = validate.array(validate.member(meta, "added"), "added", max_len=MAX_PENDING)
    if len(added) != count - forest_count:
        raise validate.FieldError("added", f"expected {count - forest_count} records (count - forest_count), "
                                           f"got {len(added)}")
    previous = -1
    for i, item in enumerate(added):
        with validate.under(f"added[{i}]"):
            previous = _check_item(item, previous, next_id)
    removed = validate.array(validate.member(meta, "removed"), "removed", max_len=MAX_PENDING - len(added))
    previous = -1
    for i, item_id in enumerate(removed):
        previous = _check_id(item_id, f"removed[{i}]", previous, next_id)
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


def _check_files(files: Any, generation: int, added: bool, projection: bool) -> None:
    """The data file names: the forest's (store.FOREST_ROLES), ``projection`` exactly when the manifest
    has one, ``added`` exactly when there are added rows."""
    files = validate.obj(files, "")
    for role in files:
        if role not in store.FILE_KINDS:
            raise validate.FieldError(role, f"unknown data file role (known: {', '.join(store.FILE_KINDS)})")
    for role in store.FILE_KINDS:
        wanted = {"added": (added, "there are no added rows (count equals forest_count)"),
                  "projection": (projection, f"{SIDECAR_FILE} has no projection field")}.get(role, (True, ""))
        if not wanted[0]:
            if role in files:
                raise validate.FieldError(role, f"names a file, but {wanted[1]}")
            continue
        name = validate.member(files, role)
        written = store.name_generation(role, name)
        if written is None:
            raise validate.FieldError(role, f"expected a file name like {store.data_name(role, 1)!r}, "
                                            f"got {validate.describe(name)}")
        if written > generation:
            raise validate.FieldError(role, f"written at generation {written}, after this manifest's {generation}")


def _check_id(value: Any, field: str, previous: int, next_id: int) -> int:
    """An item id after ``previous`` (ids in a list ascend: none twice) and below ``next_id``."""
    item_id = validate.int_in(value, field, 0, next_id - 1)
    if item_id <= previous:
        raise validate.FieldError(field, f"ids must ascend: {item_id} comes after {previous}")
    return item_id


def _check_item(item: Any, previous: int, next_id: int) -> int:
    """An added item's record (``id`` after ``previous``, ``path``, ``sha256``, ``bytes``); returns its id."""
    item = validate.obj(item, "")
    item_id = _check_id(validate.member(item, "id"), "id", previous, next_id)
    path = validate.text(validate.member(item, "path"), "path")
    try:
        too_long = len(os.fsencode(path)) > MAX_PATH_BYTES
    except UnicodeError:
        raise validate.FieldError("path", "not a file name of this system (it holds a lone surrogate)") from None
    if too_long:
        raise validate.FieldError("path", f"longer than {MAX_PATH_BYTES} bytes")
    validate.hex_digest(validate.member(item, "sha256"), "sha256")
    validate.int_in(validate.member(item, "bytes"), "bytes", 0, 2**63 - 1)
    return item_id


def _check_view(view: Any) -> None:
    view = validate.obj(view, "")
    if validate.one_of(validate.member(view, "crop"), "crop", ["foreground", "none"]) == "foreground":
        validate.real_in(validate.member(view, "margin"), "margin", 0.0, 1.0)


def _map_npy(fd: int, path: Path, dtype: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """Memory-maps a ``.npy`` file (never unpickled) after checking its header and size against what is expected.

    Args:
        dtype: the exact dtype (``"<f2"``, ``"<i8"``, ``"|u1"``...).
        shape: the exact shape; a ``None`` first dimension accepts any length.

    Raises:
        IndexFormatError: not a .npy file, another dtype or shape, or a size that disagrees with its header.
    """
    size = os.fstat(fd).st_size
    with open(fd, "rb", closefd=False) as f:
        f.seek(0)  # a file may be mapped again (for its checks) through the same descriptor
        fmt = np.lib.format
        try:
            version = fmt.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy version {version}")
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            got_shape, fortran, got_dtype = read_header(f)
        except (ValueError, TypeError, OSError, SyntaxError, tokenize.TokenError) as e:  # what a bad header raises
            raise IndexFormatError(f"{path}: not a readable .npy file: {one_line(str(e))}") from None
        want = tuple(got_shape[0] if d is None and got_shape else d for d in shape)
        if got_dtype != np.dtype(dtype) or fortran or got_shape != want:
            expected = f"{np.dtype(dtype).name} {want}".replace("None", "N")
            raise IndexFormatError(f"{path}: expected {expected} as {SIDECAR_FILE} says, "
                                   f"got {'Fortran-order ' if fortran else ''}{got_dtype} {got_shape}")
        offset = f.tell()
        nbytes = int(np.prod(want, dtype=np.int64)) * np.dtype(dtype).itemsize
        if size != offset + nbytes:
            raise IndexFormatError(f"{path}: {size} bytes, expected {offset + nbytes} for its {want} "
                                   f"{np.dtype(dtype).name} values: truncated or padded")
        if nbytes == 0:
            return np.zeros(want, dtype)
        return np.asarray(np.memmap(f, dtype=dtype, mode="r", offset=offset, shape=want))


def _check_unit_rows(vectors: np.ndarray, path: Path) -> None:
    """Every row finite with unit L2 norm, checked a bounded chunk at a time."""
    rows = max(1, EMBEDDINGS_CHUNK_BYTES // (4 * max(1, vectors.shape[1])))
    for start in range(0, len(vectors), rows):
        with np.errstate(all="ignore"):  # NaN and overflowing rows are reported below, not warned about
            norms = np.linalg.norm(np.asarray(vectors[start : start + rows], np.float32), axis=1)
        bad = np.flatnonzero(~(np.abs(norms - 1.0) <= UNIT_NORM_TOLERANCE))  # NaN and inf fail too
        if len(bad):
            raise IndexFormatError(f"{path}: row {start + bad[0]} is not a finite unit vector "
                                   f"(norm {norms[bad[0]]:.6g})")


def _check_forest(fd: int, path: Path, meta: dict[str, Any], vectors: np.ndarray, vectors_name: str) -> None:
    """Checks that the forest in ``fd`` is sound (Annoy can read it safely) and of this build.

    Args:
        vectors: the (forest_count, dim) rows whose :func:`forest_vectors` its items must equal, from
            the file ``vectors_name``.

    Raises:
        IndexFormatError: a size that is no whole number of nodes, a forest Annoy would read
            out of bounds or loop in, or items that differ from ``vectors``.
    """
    count, dim, n_trees = meta["forest_count"], meta["forest_dim"], meta["n_trees"]
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


def _load_forest(fd: int, path: Path, meta: dict[str, Any]) -> AnnoyIndex:
    """Loads the forest from the open ``fd`` (checked by :func:`_check_forest`, now or on an earlier opening).

    Raises:
        IndexFormatError: Annoy cannot load it, or finds another number of items.
        _Replaced: (only where the file cannot be handed to Annoy by descriptor) the folder changed.
    """
    count, dim = meta["forest_count"], meta["forest_dim"]
    node_bytes = 12 + 4 * dim
    size = os.fstat(fd).st_size
    if size == 0 or size % node_bytes:  # cheap, and what Annoy itself would trip on first
        raise IndexFormatError(f"{path}: {size} bytes is not a whole number of {dim}-d Annoy nodes "
                               f"({node_bytes} bytes each): truncated, or not built for dim {dim}")
    ann = AnnoyIndex(dim, METRIC)
    by_fd = _fd_path(fd)
    try:
        ann.load(by_fd or str(path))
    except OSError as e:
        raise IndexFormatError(f"{path}: cannot load the Annoy index: {one_line(str(e))}") from None
    if by_fd is None and _renamed(path, fd):
        raise _Replaced(_changing(path.parent))
    if ann.get_n_items() != count:  # what Annoy itself found: the checks make it agree
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
            rows_here = forest_vectors(vectors[start:stop], floats.shape[1] - 3)
            same = np.abs(floats[start:stop, 3:] - rows_here).max(axis=1) <= ITEM_TOLERANCE
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
    """What :func:`build_index` wrote: the folder, how many images, which were skipped and why, the model.

    ``shards``: under ``torchrun``, what each process did (reused or embedded its shard).
    """

    directory: Path
    count: int
    skipped: list[tuple[str, str]]
    model: ModelInfo
    shards: list[str] = field(default_factory=list)


def build_index(
    catalog: Path | str,
    out_dir: Path | str,
    *,
    checkpoint: str | None = None,
    batch_size: int = 32,
    device: str = "auto",
    n_trees: int = DEFAULT_TREES,
    pca: int = DEFAULT_WIDTH,
    whiten: bool = False,
    crop: bool = True,
    force: bool = False,
    progress: bool = True,
) -> BuildReport:
    """Embeds every readable image under ``catalog`` and writes the index to ``out_dir``.

    With ``crop``, each photo is cropped around the watch (its foreground on the white
    backdrop) before embedding; the sidecar's ``catalog_view`` records it so that
    search treats queries the same way. What ``simclr-watches build-index`` runs (under
    ``torchrun``, it runs :func:`simclr_watches.retrieval.shards.build_sharded` instead).

    Args:
        catalog: folder searched recursively for jpg, png, webp, bmp and tif files.
        out_dir: the index folder to write (see docs/INDEX_FORMAT.md).
        checkpoint: a checkpoint file or registered model name; None: the default model.
        batch_size: images per encoder pass.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        n_trees: Annoy trees (:func:`build_forest`).
        pca: width of the stored vectors: a PCA fitted on the catalog's embeddings
            (:func:`fit_projection`); 0, or at least the model's width: none. A catalog of
            ``pca`` images or fewer keeps every dimension.
        whiten: whiten the PCA (scale its axes to unit variance).
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
    from simclr_watches.retrieval.catalog import embed_catalog
    from simclr_watches.data.mask import CROP_MARGIN
    from simclr_watches.weights import load_model

    out_dir = Path(out_dir)
    prepare_index_output(out_dir, force=force, inputs=[catalog])
    if pca < 0:
        raise SimclrWatchesError(f"the PCA width must be >= 0 (0: none), got {pca}")
    paths = scan_images(catalog)
    if not paths:
        raise SimclrWatchesError(f"{catalog}: no image files (jpg, jpeg, png, webp, bmp, tif, tiff) found")
    encoder, model = load_model(checkpoint)
    emb = embed_catalog(encoder, model.preprocessing, paths, CROP_MARGIN if crop else None, model, batch_size=batch_size,
                        device=device, progress=progress)
    skipped = [(str(e.path), e.reason) for e in emb.skipped]
    if not emb.items:
        raise NoReadableImagesError(catalog, emb.skipped)
    view = {"crop": "foreground", "margin": CROP_MARGIN} if crop else {"crop": "none"}
    projection = fit_projection(emb.vectors, pca if len(emb.items) > pca else 0, whiten)
    rows = emb.vectors if projection is None else projection.apply(emb.vectors)
    write_index(out_dir, rows, emb.items, model, model.preprocessing, n_trees=n_trees, projection=projection,
                skipped=skipped, extra={"catalog_view": view}, force=force)
    return BuildReport(out_dir, len(emb.items), skipped, model)
