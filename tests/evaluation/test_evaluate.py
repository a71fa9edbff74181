"""Protocols (no query leaks into its gallery), methods, and the evaluate command end to end."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import draw_watch
from simclr_watches.evaluation.encoders import LocalizedMethod
from simclr_watches.evaluation.method_names import make_method, parse_methods
from simclr_watches.cli import app
from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.evaluation.evaluate import (
    attribute_agreement,
    build_tasks,
    catalog_photo_task,
    groups_task,
    leaks,
    photo_tasks,
    run,
    run_task,
)


def _groups_folder(root: Path, n_groups: int = 4) -> Path:
    """n_groups sub-folders of 2 views (the drawing and a shrunk, shifted copy) plus a singleton."""
    for g in range(n_groups):
        d = root / f"g{g}"
        d.mkdir(parents=True)
        w = draw_watch(g, 64)
        w.save(d / "a.png")
        view = Image.new("RGB", (64, 64), (255, 255, 255))
        view.paste(w.resize((56, 56)), (5, 3))
        view.save(d / "b.png")
    (root / "single").mkdir()
    draw_watch(99, 64).save(root / "single" / "a.png")
    return root


def _manifest(root: Path) -> Path:
    """Three groups; g0 and g1 are one family; each group: 2 packshots and 1 lifestyle photo."""
    rows = []
    for g, family in ((0, "fam01"), (1, "fam01"), (2, "fam2")):
        d = root / "images" / f"g{g}"
        d.mkdir(parents=True)
        draw_watch(g, 64).save(d / "1.png")
        draw_watch(g, 64).rotate(90).save(d / "2.png")
        life = Image.new("RGB", (64, 64), (90, 120, 60))
        life.paste(draw_watch(g, 40), (12, 12))
        life.save(d / "3.png")
        for n, kind in ((1, "packshot"), (2, "packshot"), (3, "lifestyle")):
            rows.append({"path": f"images/g{g}/{n}.png", "group_id": f"g{g}", "family": family, "kind": kind})
    path = root / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "group_id", "family", "kind"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_groups_queries_never_rank_themselves_or_their_copies(tmp_path):
    root = _groups_folder(tmp_path / "data")
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


def test_a_leaking_task_is_refused(tmp_path):
    task = groups_task(_groups_folder(tmp_path / "data"))
    task.ignore[:] = False
    assert len(leaks(task)) == len(task.queries)
    with pytest.raises(SimclrWatchesError, match="also in the gallery"):
        run_task(task, make_method("thumb"))


def test_catalog_photo_splits_by_kind_and_ignores_the_family(tmp_path):
    task = catalog_photo_task(_manifest(tmp_path))
    assert len(task.queries) == 3 and len(task.gallery) == 6
    assert not set(task.queries) & set(task.gallery)
    assert leaks(task) == []
    q0 = 0  # g0's lifestyle photo: relevant g0's packshots, g1's (same family) ignored, g2's misses
    assert task.relevant[q0].tolist() == [True, True, False, False, False, False]
    assert task.ignore[q0].tolist() == [False, False, True, True, False, False]


def test_photo_queries_are_new_files_outside_the_gallery(tmp_path):
    root = _groups_folder(tmp_path / "data")
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


def test_methods_give_unit_vectors_and_rank_an_easy_task(tmp_path):
    task = groups_task(_groups_folder(tmp_path / "data"))
    report = run("groups", [task], parse_methods("hist,phash,thumb"), "data")
    for name in ("hist", "phash", "thumb"):
        emb = make_method(name).embed(task.gallery)
        assert emb.dtype == np.float32
        assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # A shrunk copy has the same colours: the histogram finds every pair first.
    assert report.results["groups"]["hist"].summary["R@1"] == 1.0
    scores = make_method("phash").score_queries(task.queries[:1], make_method("phash").embed_gallery(task.gallery))
    assert scores.max() == 1.0 and scores.min() >= 0.0  # 1 - Hamming / bits


def test_random_encoder_is_seeded(tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(2)]
    for i, p in enumerate(paths):
        draw_watch(i, 48).save(p)
    a = make_method("random", seed=1).embed(paths)
    assert np.array_equal(a, make_method("random", seed=1).embed(paths))
    assert not np.allclose(a, make_method("random", seed=2).embed(paths))


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


def test_unknown_method_is_a_clear_error():
    with pytest.raises(SimclrWatchesError, match="unknown method 'sift'"):
        parse_methods("hist,sift")


def test_evaluate_command_end_to_end(tmp_path):
    root = _groups_folder(tmp_path / "data")
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "--protocol", "photo", str(root), "--methods", "hist,thumb",
                              "--severities", "mild,hard", "--out", str(out), "--failures", str(out / "f.html")])
    assert res.exit_code == 0, res.output
    assert "photo/mild" in res.output and "| hist |" in res.output
    payload = json.loads((out / "results.json").read_text())
    metrics = payload["tasks"]["photo/hard"]["methods"]["thumb"]
    assert payload["tasks"]["photo/hard"]["queries"] == 5
    assert 0.0 <= metrics["R@1"] <= metrics["R@5"] <= metrics["R@10"] <= 1.0
    assert (out / "results.md").read_text().startswith("**photo/mild**")
    assert Image.open(out / "recall_at_k.png").size[0] > 0
    assert (out / "f.html").read_text().count("data:image/jpeg;base64,") > 5

    bad = runner.invoke(app, ["evaluate", "--protocol", "groups", str(root), "--methods", "nope"])
    assert bad.exit_code == 2 and "unknown method 'nope'" in bad.output


def test_localized_method_wraps_an_encoder(tmp_path, small_checkpoint):
    manifest = _manifest(tmp_path / "data")
    task = catalog_photo_task(manifest)
    whole = make_method(str(small_checkpoint))
    loc = make_method(f"{small_checkpoint}+loc")
    assert loc.name.endswith("+loc")
    gallery = loc.embed_gallery(task.gallery)
    s_loc = loc.score_queries(task.queries, gallery)
    s_whole = whole.score_queries(task.queries, whole.embed_gallery(task.gallery))
    assert s_loc.shape == (len(task.queries), len(task.gallery))
    # The whole image is one of the regions, so fusion never scores below it.
    assert (s_loc >= s_whole - 1e-5).all()
    # A gallery image as its own query scores 1 through its whole-image region.
    assert loc.score_queries(task.gallery[:1], gallery)[0, 0] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(SimclrWatchesError, match=r"hist\+loc: localisation \(\+loc\) needs an encoder"):
        make_method("hist+loc")


def test_an_ensemble_of_checkpoints_is_a_method(tmp_path, small_checkpoint):
    root = _groups_folder(tmp_path / "data")
    paths = sorted(root.rglob("*.png"))[:3]
    single = make_method(str(small_checkpoint)).embed(paths)
    ens = make_method(f"{small_checkpoint}+{small_checkpoint}+crop+loc")
    assert isinstance(ens, LocalizedMethod) and ens.inner.crop
    # Two equal members: each embedding is the member's, twice, over sqrt(2).
    pair = make_method(f"{small_checkpoint}+{small_checkpoint}").embed(paths)
    assert np.allclose(pair, np.concatenate([single, single], 1) / np.sqrt(2), atol=1e-5)
