"""O(N) checks run once per immutable file, remembered in the user's cache (retrieval/verified.py)."""

import os
import shutil
import time

import numpy as np
import pytest

from simclr_watches.core.errors import IndexFormatError
from simclr_watches.retrieval import verified
from simclr_watches.retrieval.index import load_index


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMCLR_WATCHES_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "verified"


def test_a_passed_check_is_remembered_until_the_file_changes(tmp_path, cache, monkeypatch):
    f = tmp_path / "data.bin"
    f.write_bytes(b"x" * 100)
    runs = []
    monkeypatch.setattr(verified, "RACY_S", 0.0)
    fd = os.open(f, os.O_RDONLY)
    try:
        assert verified.once("probe", [fd], [1], lambda: runs.append(1))
        assert not verified.once("probe", [fd], [1], lambda: runs.append(1))  # remembered
        assert verified.once("probe", [fd], [2], lambda: runs.append(1))  # other parameters: another verdict
        assert len(list(cache.iterdir())) == 2
    finally:
        os.close(fd)
    time.sleep(0.1)  # past the clock tick of file times (RACY_S covers this in real use)
    f.write_bytes(b"y" * 100)  # same size, new content: a new ctime, so the check runs again
    fd = os.open(f, os.O_RDONLY)
    try:
        assert verified.once("probe", [fd], [1], lambda: runs.append(1))
    finally:
        os.close(fd)
    assert len(runs) == 3


def test_a_failed_or_racy_check_is_not_remembered(tmp_path, cache, monkeypatch):
    f = tmp_path / "data.bin"
    f.write_bytes(b"x")
    fd = os.open(f, os.O_RDONLY)
    try:
        monkeypatch.setattr(verified, "RACY_S", 3600.0)  # every file is too recent
        assert verified.once("probe", [fd], [], lambda: None) and not cache.exists()
        monkeypatch.setattr(verified, "RACY_S", 0.0)

        def fail():
            raise IndexFormatError("bad")

        with pytest.raises(IndexFormatError):
            verified.once("probe", [fd], [], fail)
        assert not cache.exists()
    finally:
        os.close(fd)


def test_an_index_opened_twice_checks_its_files_once(tmp_path, cache, monkeypatch):
    from simclr_watches.retrieval import index as index_mod
    from simclr_watches.retrieval.embed import EmbeddedItem
    from simclr_watches.model import Preprocessing
    from simclr_watches.weights import ModelInfo

    v = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    items = [EmbeddedItem(f"/cat/{i}.jpg", "0" * 64, 1) for i in range(30)]
    index_mod.write_index(tmp_path / "idx", v, items, ModelInfo("m", "a" * 64, "resnet18", 8, Preprocessing(size=32)),
                          Preprocessing(size=32), n_trees=3)
    monkeypatch.setattr(verified, "RACY_S", 0.0)
    checked = []
    real = index_mod._forest_problem
    monkeypatch.setattr(index_mod, "_forest_problem", lambda *a: checked.append(1) or real(*a))
    load_index(tmp_path / "idx")
    assert checked == [] and len(list(cache.iterdir())) == 3  # the writer vouched for columns, rows, forest
    shutil.copytree(tmp_path / "idx", tmp_path / "copy")  # the same bytes in other files: not vouched for
    first, second = load_index(tmp_path / "copy"), load_index(tmp_path / "copy")
    assert checked == [1] and second.ids == first.ids and len(list(cache.iterdir())) == 6
    # A forest swapped in later (same name, new inode) is checked again, and a crafted one refused.
    forest = tmp_path / "copy" / "forest-1.ann"
    raw = bytearray(forest.read_bytes())
    raw[-44:-40] = (10**6).to_bytes(4, "little", signed=True)  # a root's child far outside the file
    os.unlink(forest)
    forest.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="forest-1.ann"):
        load_index(tmp_path / "copy")
    assert checked == [1, 1]
