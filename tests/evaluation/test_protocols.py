"""Protocols: which files query which gallery, what is relevant and ignored; no query leaks into its gallery."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from helpers import catalog_manifest, groups_folder
from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.evaluation.protocols import build_tasks, catalog_photo_task, groups_task, leaks, photo_tasks


def test_groups_queries_never_rank_themselves_or_their_copies(tmp_path):
    root = groups_folder(tmp_path / "data")
    shutil.copy(root / "g0" / "a.png", root / "single" / "copy_of_g0.png")  # same bytes, other group
    task = groups_task(root)
    assert leaks(task) == []
    # Every query's own gallery entry is ignored, and so is the byte-identical copy.
    for q, qp in enumerate(task.queries):
        g = task.gallery.index(qp)
        assert task.ignore[q, g] and not task.relevant[q, g]
    q0 = task.queries.index(root / "g0" / "a.png")
    assert task.ignore[q0, task.gallery.index(root / "single" / "copy_of_g0.png")]
    # Singletons are distractors, not queries; the copy made "single" a group of two.
    assert root / "single" / "a.png" in task.queries
    assert task.relevant.sum(axis=1).tolist() == [1] * len(task.queries)


def test_catalog_photo_splits_by_kind_and_ignores_the_family(tmp_path):
    task = catalog_photo_task(catalog_manifest(tmp_path))
    assert len(task.queries) == 3 and len(task.gallery) == 6
    assert not set(task.queries) & set(task.gallery)
    assert leaks(task) == []
    q0 = 0  # g0's lifestyle photo: relevant g0's packshots, g1's (same family) ignored, g2's misses
    assert task.relevant[q0].tolist() == [True, True, False, False, False, False]
    assert task.ignore[q0].tolist() == [False, False, True, True, False, False]


def test_photo_queries_are_new_files_outside_the_gallery(tmp_path):
    root = groups_folder(tmp_path / "data")
    tasks = photo_tasks(root, ["mild", "hard"], tmp_path / "cache", seed=3)
    assert [t.name for t in tasks] == ["photo/mild", "photo/hard"]
    for t in tasks:
        assert leaks(t) == []
        assert all(q.is_relative_to(tmp_path / "cache") for q in t.queries)
        assert not set(t.queries) & set(t.gallery)
        # One query per group, relevant = its source (the group's first image); other view ignored.
        assert len(t.queries) == 5
        assert t.relevant.sum(axis=1).tolist() == [1] * 5
        assert t.gallery[int(np.argmax(t.relevant[0]))] == root / "g0" / "a.png"
        assert t.ignore[0, t.gallery.index(root / "g0" / "b.png")]
    # Same seed, same query bytes; inside the data folder is refused.
    again = photo_tasks(root, ["mild"], tmp_path / "cache2", seed=3)
    assert [q.read_bytes() for q in again[0].queries] == [q.read_bytes() for q in tasks[0].queries]
    with pytest.raises(SimclrWatchesError, match="outside the data folder"):
        photo_tasks(root, ["mild"], root / "cache")


@pytest.mark.parametrize(
    "protocol, make_data, match",
    [
        ("groups", lambda p: p.mkdir() or p, "no images"),
        ("catalog-photo", lambda p: (p.write_text("path,group_id\na.png,g\n"), p)[1], "missing column"),
        ("sideways", lambda p: p.mkdir() or p, "unknown protocol"),
    ],
)
def test_bad_input_names_the_file_and_the_problem(tmp_path, protocol, make_data, match):
    data = make_data(tmp_path / ("m.csv" if protocol == "catalog-photo" else "d"))
    with pytest.raises(SimclrWatchesError, match=match):
        build_tasks(protocol, data, cache_dir=tmp_path / "c")
