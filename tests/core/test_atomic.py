"""Atomic writes: normal file modes, no folder over a file, and temporaries of killed writers cleaned up."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from simclr_watches.core.atomic import atomic_dir, atomic_path

# A writer that is killed (os._exit: no cleanup runs) or stays alive inside atomic_dir.
WRITER = """
import os, sys, time
from simclr_watches.core.atomic import atomic_dir
with atomic_dir(sys.argv[1], replace=True) as tmp:
    (tmp / "part").write_text("half")
    print("ready", flush=True)
    if sys.argv[2] == "die":
        os._exit(9)
    time.sleep(120)
"""


def _writer(target: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _temps(target: Path) -> list[Path]:
    return sorted(p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def test_atomic_path_gives_the_umask_default_mode(tmp_path, umask_027):
    from safetensors.torch import save_file
    import torch

    with atomic_path(tmp_path / "private.bin") as tmp:
        os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600))  # as a library writing via a private temp would
    with atomic_path(tmp_path / "w.safetensors") as tmp:
        save_file({"a": torch.zeros(2)}, str(tmp))
    for name in ("private.bin", "w.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == umask_027, name


def test_atomic_dir_never_replaces_a_file(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    with pytest.raises(NotADirectoryError):
        with atomic_dir(target, replace=True) as tmp:
            (tmp / "x").write_text("new")
    assert target.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_later_write_removes_temporaries_of_dead_writers_only(tmp_path):
    target = tmp_path / "out"
    _writer(target, "die").wait()
    dead = _temps(target)
    assert len(dead) == 1 and str(os.getpid()) not in dead[0].name  # left behind by the killed writer
    live = _writer(target, "live")
    try:
        live_temp = [p for p in _temps(target) if p not in dead]
        assert len(live_temp) == 1
        with atomic_dir(target) as tmp:
            (tmp / "done").write_text("ok")
        assert (target / "done").read_text() == "ok"
        assert _temps(target) == live_temp  # the live writer's work in progress is kept
    finally:
        live.kill()
        live.wait()


def test_the_only_copy_of_a_swapped_out_folder_is_kept(tmp_path):
    """A writer killed between the two renames of a swap leaves the old version only in `.old-`."""
    target = tmp_path / "out"
    _writer(target, "die").wait()
    [tmp] = _temps(target)
    old = tmp.with_name(tmp.name.replace(".tmp-", ".old-"))
    tmp.rename(old)  # as if the previous `out` had been moved aside when the writer died
    with atomic_path(tmp_path / "out.txt") as t:  # a write next to it, of another target, touches nothing
        t.write_text("x")
    from simclr_watches.core.atomic import clean_stale

    assert clean_stale(target) == [] and old.is_dir()
    target.mkdir()
    assert clean_stale(target) == [old] and not old.exists()


@pytest.mark.slow
def test_killed_build_index_leaves_a_temporary_that_the_next_build_removes(make_catalog, small_checkpoint, tmp_path):
    from simclr_watches.retrieval.index import build_index, load_index

    index = tmp_path / "idx"
    _writer(index, "die").wait()
    assert len(_temps(index)) == 1
    build_index(make_catalog(3), index, checkpoint=str(small_checkpoint), progress=False, n_trees=2)
    assert _temps(index) == [] and len(load_index(index)) == 3
