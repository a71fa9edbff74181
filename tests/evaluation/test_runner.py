"""The runner: methods on tasks, a leaking task refused, attribute agreement."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from helpers import groups_folder
from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.evaluation.method_names import make_method, parse_methods
from simclr_watches.evaluation.protocols import groups_task, leaks
from simclr_watches.evaluation.runner import attribute_agreement, run, run_task


def test_a_leaking_task_is_refused(tmp_path):
    task = groups_task(groups_folder(tmp_path / "data"))
    task.ignore[:] = False
    assert len(leaks(task)) == len(task.queries)
    with pytest.raises(SimclrWatchesError, match="also in the gallery"):
        run_task(task, make_method("thumb"))


def test_methods_give_unit_vectors_and_rank_an_easy_task(tmp_path):
    task = groups_task(groups_folder(tmp_path / "data"))
    report = run("groups", [task], parse_methods("hist,phash,thumb"), "data")
    for name in ("hist", "phash", "thumb"):
        emb = make_method(name).embed(task.gallery)
        assert emb.dtype == np.float32
        assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # A shrunk copy has the same colours: the histogram finds every pair first.
    assert report.results["groups"]["hist"].summary["R@1"] == 1.0
    scores = make_method("phash").score_queries(task.queries[:1], make_method("phash").embed_gallery(task.gallery))
    assert scores.max() == 1.0 and scores.min() >= 0.0  # 1 - Hamming / bits


def test_attribute_agreement_against_hand_counts(tmp_path):
    rows = []
    for i, colour in enumerate(["red", "red", "blue", "blue", ""]):
        img = Image.new("RGB", (32, 32), (220, 30, 30) if colour == "red" else (30, 30, 220))
        img.putpixel((i, i), (i * 40, 0, 0))  # distinct bytes
        img.save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{colour}")
    (tmp_path / "attrs.csv").write_text("path,colour\n" + "\n".join(rows) + "\n")
    res = attribute_agreement(tmp_path / "attrs.csv", [make_method("hist")], k=1)
    # Each coloured query's nearest neighbour has its colour; 4 queries with a value.
    assert res["methods"]["hist"]["colour"] == 1.0
    # chance: red queries see 1 red of 4 others, blue ones 1 blue of 4 others.
    assert res["chance"]["colour"] == pytest.approx(0.25)
