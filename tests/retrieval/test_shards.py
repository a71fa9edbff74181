"""Embedding a catalog on several processes under torchrun (issue 17 point 4): shards, merge, resume."""

import os
import subprocess
import sys

import numpy as np
import pytest

from simclr_watches.retrieval.embed import embed_paths
from simclr_watches.retrieval.index import build_index, load_index
from simclr_watches.retrieval.search import Searcher
from simclr_watches.retrieval.shards import ShardKey, read_shard, shard_bounds, work_dir, write_shard
from simclr_watches.weights import load_model


def _torchrun(catalog, out, ckpt, *extra, n=2):
    """``torchrun --standalone --nproc_per_node n -m simclr_watches build-index`` (gloo on the CPU)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m",
           "simclr_watches", "build-index", str(catalog), "--out", str(out), "--checkpoint", str(ckpt),
           "--n-trees", "3", "--device", "cpu", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _key(model, paths, k, world, crop=True):
    from simclr_watches.data.mask import CROP_MARGIN

    start, stop = shard_bounds(len(paths), world)[k]
    view = {"crop": "foreground", "margin": CROP_MARGIN} if crop else {"crop": "none"}
    return ShardKey(model.id, model.sha256, model.preprocessing.to_dict(), view, [str(p) for p in paths[start:stop]])


def _same_index(a, b):
    ia, ib = load_index(a), load_index(b)
    assert [ia.items[r] for r in range(len(ia))] == [ib.items[r] for r in range(len(ib))]
    assert ia.meta["skipped"] == ib.meta["skipped"] and ia.meta["dim"] == ib.meta["dim"]
    assert np.allclose(np.asarray(ia.vectors, np.float32), np.asarray(ib.vectors, np.float32), atol=2e-3)
    if ia.projection is not None:
        assert np.allclose(ia.projection.matrix, ib.projection.matrix, atol=1e-4)


def test_shards_cover_the_catalog_in_order():
    assert shard_bounds(9, 2) == [(0, 4), (4, 9)] and shard_bounds(2, 3) == [(0, 0), (0, 1), (1, 2)]
    assert sum(b - a for a, b in shard_bounds(1001, 7)) == 1001


def test_a_shard_of_another_model_catalog_or_content_is_not_reused(make_catalog, small_checkpoint, tmp_path,
                                                                   one_thread):
    catalog = make_catalog(5)
    (catalog / "bad.png").write_bytes(b"")
    paths = sorted(catalog.iterdir())
    encoder, model = load_model(str(small_checkpoint))
    work = tmp_path / "work"
    work.mkdir()
    key = _key(model, paths, 0, 1)
    write_shard(work, 0, 1, key, embed_paths(encoder, model.preprocessing, paths, progress=False))
    got = read_shard(work, 0, 1, key, model.dim)
    assert [it.path.name for it in got.items] == [p.name for p in paths if p.name != "bad.png"]
    assert [(e.path.name, e.reason) for e in got.skipped] == [("bad.png", "empty file")] and got.vectors.shape == (5, 512)
    other = ShardKey(model.id, "0" * 64, key.preprocessing, key.view, key.paths)
    assert read_shard(work, 0, 1, other, model.dim) == "of another model, preprocessing, crop or file list"
    assert read_shard(work, 0, 1, ShardKey(*[*vars(key).values()][:4], key.paths[1:]), model.dim).startswith("of another")
    assert read_shard(work, 0, 2, key, model.dim) == "not written yet"
    (catalog / "w001.png").write_bytes((catalog / "w002.png").read_bytes())  # changed since it was embedded
    assert read_shard(work, 0, 1, key, model.dim).endswith("w001.png changed since it was embedded")
    assert isinstance(read_shard(work, 0, 1, key, model.dim, rehash=False), type(got))
    np.save(work / "shard-0-of-1.npy", np.zeros((5, 512), np.float32))
    assert "is not the file it recorded" in read_shard(work, 0, 1, key, model.dim, rehash=False)
    (work / "shard-0-of-1.json").write_text("{")
    assert read_shard(work, 0, 1, key, model.dim).startswith("unreadable")


@pytest.mark.slow
def test_two_processes_build_the_index_one_process_builds(make_catalog, small_checkpoint, tmp_path):
    catalog = make_catalog(9)
    (catalog / "bad.png").write_bytes(b"")
    build_index(catalog, tmp_path / "one", checkpoint=str(small_checkpoint), progress=False, n_trees=3, pca=4,
                device="cpu")
    proc = _torchrun(catalog, tmp_path / "two", small_checkpoint, "--pca", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 10 files sorted, 5 a shard: bad.png + w000..w003, then w004..w008
    assert "shard 1/2: embedded 4 images" in proc.stderr and "shard 2/2: embedded 5 images" in proc.stderr
    assert "skipped " in proc.stderr and "bad.png" in proc.stderr
    _same_index(tmp_path / "one", tmp_path / "two")
    assert not work_dir(tmp_path / "two").exists()  # merged, then removed
    one = Searcher(tmp_path / "one", device="cpu").search(sorted(catalog.glob("w*.png")), top_k=3)
    two = Searcher(tmp_path / "two", device="cpu").search(sorted(catalog.glob("w*.png")), top_k=3)
    assert [[h.id for h in r.hits] for r in one] == [[h.id for h in r.hits] for r in two]


@pytest.mark.slow
def test_a_killed_run_resumes_without_embedding_its_finished_shards(make_catalog, small_checkpoint, tmp_path,
                                                                    one_thread):
    catalog = make_catalog(8)
    paths = sorted(catalog.iterdir())
    encoder, model = load_model(str(small_checkpoint))
    work = work_dir(tmp_path / "idx")
    work.mkdir()
    # What a run killed during the merge leaves: shard 1 finished; shard 2 from another model.
    first = _key(model, paths, 0, 2, crop=False)
    write_shard(work, 0, 2, first, embed_paths(encoder, model.preprocessing, paths[:4], progress=False))
    second = _key(model, paths, 1, 2, crop=False)
    stale = ShardKey(model.id, "1" * 64, second.preprocessing, second.view, second.paths)
    write_shard(work, 1, 2, stale, embed_paths(encoder, model.preprocessing, paths[4:], progress=False))
    proc = _torchrun(catalog, tmp_path / "idx", small_checkpoint, "--no-crop")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "shard 1/2: reused (4 images)" in proc.stderr, proc.stderr[-2000:]
    assert "shard 2/2: embedded 4 images (of another model" in proc.stderr
    build_index(catalog, tmp_path / "one", checkpoint=str(small_checkpoint), progress=False, n_trees=3, crop=False,
                device="cpu")
    _same_index(tmp_path / "one", tmp_path / "idx")
    assert not work.exists()
