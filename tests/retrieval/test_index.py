import concurrent.futures as cf
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import simclr_watches.retrieval.index as index_mod
from simclr_watches.core.errors import IndexFormatError, SimclrWatchesError
from simclr_watches.retrieval.index import build_index, load_embeddings, load_index
from simclr_watches.core.files import sha256_file


def _build(root, out, ckpt, **kw):
    return build_index(root, out, checkpoint=str(ckpt), progress=False, n_trees=5, **kw)


def test_sidecar_describes_everything(make_catalog, small_checkpoint, tmp_path):
    root = make_catalog(4)
    (root / "bad.jpg").write_bytes(b"")
    report = _build(root, tmp_path / "idx", small_checkpoint)
    assert report.count == 4 and report.skipped == [(str(root / "bad.jpg"), "empty file")]
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["format"] == "simclr-watches-index" and meta["format_version"] == 3
    assert meta["model"] == {"id": str(small_checkpoint.resolve()), "sha256": sha256_file(small_checkpoint), "arch": "resnet18", "dim": 512}
    assert meta["dim"] == 512 and meta["metric"] == "angular" and meta["n_trees"] == 5 and meta["count"] == 4
    assert meta["preprocessing"]["size"] == 64
    assert meta["files"] == {role: f"{role}-1.{'ann' if role == 'forest' else 'npy'}" for role in
                             ("forest", "vectors", "ids", "sha256", "sizes", "offsets", "paths")}
    assert meta["forest_count"] == 4 and "projection" not in meta  # 4 images: too few for a 512-d PCA
    assert meta["added"] == meta["removed"] == [] and meta["next_id"] == 4
    assert load_index(tmp_path / "idx").ids == [0, 1, 2, 3]
    item = load_index(tmp_path / "idx").items[0]
    assert item["path"] == str((root / "w000.png").resolve())
    assert item["sha256"] == sha256_file(root / "w000.png") and item["bytes"] == (root / "w000.png").stat().st_size
    assert meta["skipped"] == [{"path": str(root / "bad.jpg"), "reason": "empty file"}]
    assert meta["catalog_view"] == {"crop": "foreground", "margin": 0.05}
    emb = load_embeddings(tmp_path / "idx")
    assert emb.shape == (4, 512)
    idx = load_index(tmp_path / "idx")
    ids, scores = idx.query(emb[2], 2)
    assert ids[0] == 2 and scores[0] == pytest.approx(1.0, abs=1e-5) and scores[0] >= scores[1]


@pytest.mark.slow
def test_no_crop_is_recorded_and_changes_the_embeddings(make_catalog, small_checkpoint, tmp_path):
    root = make_catalog(3)
    _build(root, tmp_path / "crop", small_checkpoint)
    _build(root, tmp_path / "plain", small_checkpoint, crop=False)
    assert load_index(tmp_path / "plain").crop_margin is None and load_index(tmp_path / "crop").crop_margin == 0.05
    # The generated watches sit on white with a margin, so cropping changes what is embedded.
    assert not np.allclose(load_embeddings(tmp_path / "crop"), load_embeddings(tmp_path / "plain"), atol=1e-3)


@pytest.mark.slow
def test_existing_index_needs_force(make_catalog, small_checkpoint, tmp_path):
    root = make_catalog(3)
    _build(root, tmp_path / "idx", small_checkpoint)
    with pytest.raises(SimclrWatchesError, match="already exists; use --force"):
        _build(root, tmp_path / "idx", small_checkpoint)
    make_catalog(5)
    assert _build(root, tmp_path / "idx", small_checkpoint, force=True).count == 5
    assert load_index(tmp_path / "idx").meta["count"] == 5


def test_force_never_deletes_what_serve_kept_in_the_index(make_catalog, small_checkpoint, tmp_path):
    root = make_catalog(3)
    idx = tmp_path / "idx"
    _build(root, idx, small_checkpoint)
    photo = idx / index_mod.UPLOADS_DIR / f"{'a' * 64}.png"
    photo.parent.mkdir()
    shutil.copy(root / "w000.png", photo)
    (idx / index_mod.FEEDBACK_FILE).write_text('{"verdict": "right"}\n')
    with pytest.raises(SimclrWatchesError, match=r"holds what serve kept, which --force would delete: uploads/ \(1 "
                                                 r"files\), feedback.jsonl \(21 bytes\); move them out"):
        _build(root, idx, small_checkpoint, force=True)
    assert photo.read_bytes() == (root / "w000.png").read_bytes()
    assert (idx / index_mod.FEEDBACK_FILE).read_text() == '{"verdict": "right"}\n'
    (idx / index_mod.FEEDBACK_FILE).rename(tmp_path / "feedback.jsonl")
    with pytest.raises(SimclrWatchesError, match=r"uploads/ \(1 files\); move"):
        _build(root, idx, small_checkpoint, force=True)
    shutil.move(photo.parent, tmp_path / "uploads")
    (idx / index_mod.FEEDBACK_FILE).write_text("")  # empty: nothing to lose
    assert _build(root, idx, small_checkpoint, force=True).count == 3


@pytest.mark.slow
def test_interrupted_build_leaves_no_half_index_and_keeps_the_old(make_catalog, small_checkpoint, tmp_path, monkeypatch):
    root = make_catalog(3)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(index_mod.np, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        _build(root, tmp_path / "idx", small_checkpoint)
    assert list(tmp_path.iterdir()) == [root]  # no index, no temp folder
    monkeypatch.undo()
    _build(root, tmp_path / "idx", small_checkpoint)
    before = (tmp_path / "idx" / "index.json").read_bytes()
    monkeypatch.setattr(index_mod.np, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        _build(make_catalog(5), tmp_path / "idx", small_checkpoint, force=True)
    assert (tmp_path / "idx" / "index.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog", "idx"]


def test_empty_or_unreadable_catalog_is_an_error(tmp_path, small_checkpoint):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SimclrWatchesError, match="no image files"):
        _build(tmp_path / "empty", tmp_path / "idx", small_checkpoint)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"nope")
    with pytest.raises(SimclrWatchesError, match="none of the 1 image files could be read"):
        _build(tmp_path / "bad", tmp_path / "idx", small_checkpoint)
    assert not (tmp_path / "idx").exists()


def test_load_index_refuses_incomplete_or_foreign(make_catalog, small_checkpoint, tmp_path):
    _build(make_catalog(3), tmp_path / "idx", small_checkpoint)
    sidecar = tmp_path / "idx" / "index.json"
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "format_version": 99}))
    sidecar.write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(IndexFormatError, match="v1 was written by an older version of simclr-watches; rebuild it "
                                               "with build-index --force"):
        load_index(tmp_path / "idx")
    sidecar.write_text(json.dumps({**meta, "format_version": 99}))
    sidecar.write_text(json.dumps({**meta, "format_version": 2}))
    with pytest.raises(IndexFormatError, match="v2 was written by an older version"):
        load_index(tmp_path / "idx")
    sidecar.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(IndexFormatError, match="v99 is not v3"):
        load_index(tmp_path / "idx")
    sidecar.write_text("{")
    with pytest.raises(IndexFormatError, match="unreadable sidecar"):
        load_index(tmp_path / "idx")
    sidecar.unlink()
    with pytest.raises(IndexFormatError, match="not an index"):
        load_index(tmp_path / "idx")


# --- issue 12: the index folder is untrusted input ------------------------------------------------------------


def test_preprocessing_refuses_absurd_values_for_checkpoints_too(small_checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    from simclr_watches.core.errors import CheckpointError
    from simclr_watches.model import Preprocessing
    from simclr_watches.core.validate import FieldError
    from simclr_watches.weights import load_encoder_file, read_header

    for bad, field in [({"size": 100000}, "size"), ({"size": 0}, "size"), ({"std": (0.0, 0.0, 0.0)}, "std[0]"),
                       ({"mean": (float("nan"), 0.0, 0.0)}, "mean[0]"), ({"std": (0.5, 0.5)}, "std"),
                       ({"pad_value": 256}, "pad_value"), ({"size": True}, "size")]:
        with pytest.raises(FieldError, match=rf"^{re.escape(field)}: expected"):
            Preprocessing(**bad)
    header = read_header(small_checkpoint)
    header["preprocessing"]["size"] = 100000
    crafted = tmp_path / "crafted.safetensors"
    save_file(load_file(str(small_checkpoint)), str(crafted), metadata={"simclr_watches": json.dumps(header)})
    with pytest.raises(CheckpointError, match=r"crafted\.safetensors: .*preprocessing\.size: expected an integer in \[8, 1024\], got 100000$"):
        load_encoder_file(crafted)


def _cli(*args: object) -> subprocess.CompletedProcess:
    """Runs the CLI as a real process, its address space capped: a regression fails instead of exhausting memory."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))

    return subprocess.run([sys.executable, "-m", "simclr_watches", *map(str, args)], capture_output=True, text=True,
                          preexec_fn=cap, timeout=120)


def _edit_sidecar(change):
    def edit(d):
        meta = json.loads((d / "index.json").read_text())
        (d / "index.json").write_text(json.dumps(change(meta)))

    return edit


def _set_preprocessing(key, value):
    return _edit_sidecar(lambda m: {**m, "preprocessing": {**m["preprocessing"], key: value}})


def _truncate(name, keep):
    def edit(d):
        (d / name).write_bytes((d / name).read_bytes()[:keep])

    return edit


# (command, damage, what the one error line must say): the defects of issue 12 point 2, each run as a real process
TAMPERED = {
    "size 100000": ("search", _set_preprocessing("size", 100000),
                    "index.json: preprocessing.size: expected an integer in [8, 1024], got 100000"),
    "size 0": ("search", _set_preprocessing("size", 0), "index.json: preprocessing.size: expected an integer"),
    "std zeros": ("search", _set_preprocessing("std", [0, 0, 0]),
                  "index.json: preprocessing.std[0]: expected a number"),
    "added short": ("search", _edit_sidecar(lambda m: {**m, "count": m["count"] + 1, "next_id": m["next_id"] + 1,
                                                       "files": {**m["files"], "added": "added-1.npy"}}),
                    "index.json: added: expected 1 records (count - forest_count), got 0"),
    "added without path": ("search", _edit_sidecar(lambda m: {**m, "count": 4, "files": {**m["files"], "added": "added-1.npy"},
                                                             "added": [{"id": 3, "sha256": "0" * 64, "bytes": 1}],
                                                             "next_id": 4}),
                           "index.json: added[0].path: missing"),
    "ids descending": ("search", lambda d: np.save(d / "ids-1.npy", np.array([2, 1, 0])),
                       "ids-1.npy: not strictly ascending at item 1"),
    "json list": ("search", _edit_sidecar(lambda m: [m]), "index.json: expected an object, got a list of 1"),
    "ann of another build": ("search", lambda d: shutil.copy(d.parent / "other" / "forest-1.ann", d / "forest-1.ann"),
                             "forest-1.ann: item 0 differs from row 0 of vectors-1.npy"),
    "npy pickled": ("search", lambda d: np.save(d / "vectors-1.npy", np.array([{}] * 3), allow_pickle=True),
                    "vectors-1.npy: expected float16 (3, 512) as index.json says, got object (3,)"),
    "info: nested garbage": ("info", lambda d: (d / "index.json").write_text('{"a": ' + "[" * 5000 + "]" * 5000 + "}"),
                             "index.json: unreadable sidecar: JSON nested too deeply"),
}
# The same through the in-process CLI (same error path, no process start-up).
TAMPERED_IN_PROCESS = {
    "ann truncated": ("search", _truncate("forest-1.ann", 5000), "forest-1.ann: 5000 bytes is not a whole number"),
    "ann empty": ("search", _truncate("forest-1.ann", 0), "forest-1.ann: 0 bytes is not a whole number"),
    "npy missing": ("search", lambda d: (d / "vectors-1.npy").unlink(), ": vectors-1.npy is missing"),
    "npy nan": ("search", lambda d: np.save(d / "vectors-1.npy", np.full((3, 512), np.nan, np.float16)),
                "vectors-1.npy: row 0 is not a finite unit vector"),
    "info: size 100000": ("info", _set_preprocessing("size", 100000), "index.json: preprocessing.size"),
    "info: model id with a newline": ("info", _edit_sidecar(lambda m: {**m, "model": {**m["model"], "id": "a\nb"}}),
                                      "index.json: model.id: expected a non-empty printable string"),
}


def _tampered_copies(cases, catalog, good, root):
    """A damaged copy of ``good`` per case, with the CLI arguments that open it."""
    runs = {}
    for case, (command, damage, _) in cases.items():
        d = root / case.replace(" ", "_").replace(":", "")
        shutil.copytree(good, d)
        damage(d)
        args = ("search", catalog / "w000.png", "--index", d, "--no-localize") if command == "search" else ("info", d)
        runs[case] = (d, [str(a) for a in args])
    return runs


def _assert_one_error_line(case, code, stderr, stdout, folder, expected):
    assert code == 2, f"{case}: exit {code}: {stderr[-2000:]}"
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, f"{case}: {stderr[-2000:]}"
    assert stderr.startswith((f"error: {folder}/{expected}", f"error: {folder}{expected}")), f"{case}: {stderr}"
    assert stdout == ""


@pytest.fixture
def index_pair(make_catalog, small_checkpoint, tmp_path):
    """(catalog, good index, another index of the same size), built with the small checkpoint."""
    catalog = make_catalog(3)
    _build(catalog, tmp_path / "good", small_checkpoint)
    _build(make_catalog(3, subdir="other-catalog"), tmp_path / "other", small_checkpoint, crop=False)
    return catalog, tmp_path / "good"


@pytest.mark.slow
def test_tampered_index_is_one_error_line_from_the_cli_process(index_pair, tmp_path):
    runs = _tampered_copies(TAMPERED, *index_pair, tmp_path)
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(runs, pool.map(lambda r: _cli(*r[1]), runs.values())))
    for case, res in results.items():
        _assert_one_error_line(case, res.returncode, res.stderr, res.stdout, runs[case][0], TAMPERED[case][2])


@pytest.mark.slow
def test_tampered_index_is_one_error_line_in_process(index_pair, tmp_path):
    from typer.testing import CliRunner

    from simclr_watches.cli import app

    runner = CliRunner(env={"COLUMNS": "10000"})  # rich must not wrap the line
    for case, (d, args) in _tampered_copies(TAMPERED_IN_PROCESS, *index_pair, tmp_path).items():
        res = runner.invoke(app, args)
        _assert_one_error_line(case, res.exit_code, res.stderr, res.stdout, d, TAMPERED_IN_PROCESS[case][2])


def _random_index(out, n, dim=8, seed=0, force=False, n_trees=3):
    """An index of n random unit vectors (no encoder): item paths /cat/<seed>-<i>.jpg."""
    from simclr_watches.retrieval.embed import EmbeddedItem
    from simclr_watches.model import Preprocessing
    from simclr_watches.weights import ModelInfo

    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    items = [EmbeddedItem(f"/cat/{seed}-{i}.jpg", "0" * 64, 1) for i in range(n)]
    model = ModelInfo("m", "a" * 64, "resnet18", dim, Preprocessing(size=32))
    return index_mod.write_index(out, v, items, model, Preprocessing(size=32), n_trees=n_trees, force=force)


def _assert_one_build(idx, builds):
    """The loaded sidecar, forest and embeddings are all of one of ``builds`` ({count: seed})."""
    seed = builds[idx.meta["count"]]
    assert idx.paths[0] == f"/cat/{seed}-0.jpg" and idx.ann.get_n_items() == len(idx) == len(idx.vectors)
    assert np.allclose(idx.ann.get_item_vector(len(idx) - 1), idx.vectors[-1])


def test_a_rebuild_between_reads_gives_one_whole_index_not_a_mix(tmp_path, monkeypatch):
    _random_index(tmp_path / "idx", 3, seed=1)
    real_loads, swapped = json.loads, []

    def swap_then_parse(text, *a, **k):
        if not swapped:  # the manifest is read: now a rebuild replaces the folder, before the forest is opened
            swapped.append(True)  # first: the rebuild reads its own manifest back (vouch_written)
            _random_index(tmp_path / "idx", 5, seed=2, force=True)
        return real_loads(text, *a, **k)

    monkeypatch.setattr(index_mod.json, "loads", swap_then_parse)
    idx = load_index(tmp_path / "idx")
    monkeypatch.undo()
    # The old folder's files were deleted before they were opened: the reader started over on the new one.
    assert swapped and idx.meta["count"] == 5
    _assert_one_build(idx, {5: 2})


def test_reads_during_repeated_rebuilds_see_whole_indexes(tmp_path):
    builds = {3: 1, 5: 2}
    _random_index(tmp_path / "idx", 3, seed=1)
    stop, rebuilt = threading.Event(), []

    def rebuild():
        while not stop.is_set():
            n = (3, 5)[len(rebuilt) % 2]
            rebuilt.append(_random_index(tmp_path / "idx", n, seed=builds[n], force=True))

    worker = threading.Thread(target=rebuild)
    worker.start()
    try:
        seen, reads = set(), 0
        while reads < 300 or (len(rebuilt) <= 10 and reads < 20_000):  # reads across at least 10 rebuilds
            idx = load_index(tmp_path / "idx")
            _assert_one_build(idx, builds)
            seen.add(len(idx))
            reads += 1
    finally:
        stop.set()
        worker.join()
    assert len(rebuilt) > 10 and seen == {3, 5}


def test_sidecar_size_is_bounded_before_reading(tmp_path, monkeypatch):
    _random_index(tmp_path / "idx", 3)
    monkeypatch.setattr(index_mod, "MAX_SIDECAR_BYTES", 100)
    size = (tmp_path / "idx" / "index.json").stat().st_size
    with pytest.raises(IndexFormatError, match=rf"index.json: {size} bytes, more than the 100 a sidecar may have"):
        load_index(tmp_path / "idx")


def test_a_fifo_or_folder_in_place_of_a_file_is_refused_without_hanging(tmp_path):
    _random_index(tmp_path / "idx", 3)
    (tmp_path / "idx" / "index.json").unlink()
    os.mkfifo(tmp_path / "idx" / "index.json")  # reading it would wait for a writer forever
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(_error_of(load_index, tmp_path / "idx")), daemon=True)
    reader.start()
    reader.join(10)
    assert outcome and "index.json: a FIFO (named pipe), not a file" in outcome[0]
    (tmp_path / "idx" / "forest-1.ann").unlink()
    (tmp_path / "idx" / "forest-1.ann").mkdir()
    (tmp_path / "idx" / "index.json").unlink()
    _random_index(tmp_path / "other", 3)
    shutil.copy(tmp_path / "other" / "index.json", tmp_path / "idx")
    assert "forest-1.ann: a folder, not a file" in _error_of(load_index, tmp_path / "idx")


def test_a_symbolic_link_in_place_of_a_member_is_refused_not_followed(tmp_path):
    _random_index(tmp_path / "idx", 3)
    _random_index(tmp_path / "other", 3)
    (tmp_path / "idx" / "vectors-1.npy").unlink()
    (tmp_path / "idx" / "vectors-1.npy").symlink_to(tmp_path / "other" / "vectors-1.npy")
    assert "vectors-1.npy: a symbolic link, not a file (refused)" in _error_of(load_index, tmp_path / "idx")


def _error_of(fn, *args):
    try:
        fn(*args)
    except IndexFormatError as e:
        return str(e)
    return "no error"


def _split_node(ann_file, dim):
    """(nodes as a writable int32 array, index of a split node) of a forest file."""
    nodes = np.fromfile(ann_file, dtype=np.int32).reshape(-1, 3 + dim)
    return nodes, int(np.flatnonzero(nodes[:, 0] > dim + 2)[0])


@pytest.mark.parametrize("damage, message", [
    (lambda nodes, i: nodes.__setitem__((i, 1), i), "a tree node points outside the forest"),  # a cycle: Annoy loops
    (lambda nodes, i: nodes.__setitem__((i, 2), 10**6), "a tree node points outside the forest"),  # reads past the end
    (lambda nodes, i: nodes.__setitem__((i + 1, 1), nodes[i, 1]), "a tree node has two parents"),
    (lambda nodes, i: nodes.__setitem__((i, 0), 0), "its trees do not cover the 40 items"),
    (lambda nodes, i: nodes.__setitem__((3, 0), 7), "node 3 should be an item"),
])
def test_a_forest_annoy_would_crash_or_loop_in_is_refused(tmp_path, damage, message):
    _random_index(tmp_path / "idx", 40, dim=8)  # 40 items > K = 10: trees of split nodes
    nodes, i = _split_node(tmp_path / "idx" / "forest-1.ann", 8)
    damage(nodes, i)
    nodes.tofile(tmp_path / "idx" / "forest-1.ann")
    assert f"forest-1.ann: {message}; rebuild it with build-index" in _error_of(load_index, tmp_path / "idx")


def test_a_leaf_listing_a_missing_item_is_refused(tmp_path):
    _random_index(tmp_path / "idx", 6, dim=8)  # 6 items <= K = 10: each tree is one leaf listing them all
    nodes = np.fromfile(tmp_path / "idx" / "forest-1.ann", dtype=np.int32).reshape(-1, 11)
    nodes[-1, 3] = 10**6
    nodes.tofile(tmp_path / "idx" / "forest-1.ann")
    assert "forest-1.ann: a leaf lists an item that does not exist" in _error_of(load_index, tmp_path / "idx")
