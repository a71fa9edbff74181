import json

import numpy as np
import pytest

import simclr_watches.index as index_mod
from simclr_watches.errors import IndexFormatError, SimclrWatchesError
from simclr_watches.index import build_index, cosine_from_angular, load_embeddings, load_index
from simclr_watches.weights import sha256_file


def _build(root, out, ckpt, **kw):
    return build_index(root, out, checkpoint=str(ckpt), progress=False, n_trees=5, **kw)


def test_sidecar_describes_everything(make_catalog, small_checkpoint, tmp_path):
    root = make_catalog(4)
    (root / "bad.jpg").write_bytes(b"")
    report = _build(root, tmp_path / "idx", small_checkpoint)
    assert report.count == 4 and report.skipped == [(str(root / "bad.jpg"), "empty file")]
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["format"] == "simclr-watches-index" and meta["format_version"] == 1
    assert meta["model"] == {"id": str(small_checkpoint.resolve()), "sha256": sha256_file(small_checkpoint), "arch": "resnet18", "dim": 512}
    assert meta["dim"] == 512 and meta["metric"] == "angular" and meta["n_trees"] == 5 and meta["count"] == 4
    assert meta["preprocessing"]["size"] == 64
    item = meta["items"][0]
    assert item["path"] == str((root / "w000.png").resolve())
    assert item["sha256"] == sha256_file(root / "w000.png") and item["bytes"] == (root / "w000.png").stat().st_size
    assert meta["skipped"] == [{"path": str(root / "bad.jpg"), "reason": "empty file"}]
    assert meta["catalog_view"] == {"crop": "foreground", "margin": 0.05}
    emb = load_embeddings(tmp_path / "idx")
    assert emb.shape == (4, 512)
    idx = load_index(tmp_path / "idx")
    ids, scores = idx.query(emb[2], 2)
    assert ids[0] == 2 and scores[0] == pytest.approx(1.0, abs=1e-5) and scores[0] >= scores[1]


def test_no_crop_is_recorded_and_changes_the_embeddings(make_catalog, small_checkpoint, tmp_path):
    root = make_catalog(3)
    _build(root, tmp_path / "crop", small_checkpoint)
    _build(root, tmp_path / "plain", small_checkpoint, crop=False)
    assert load_index(tmp_path / "plain").crop_margin is None and load_index(tmp_path / "crop").crop_margin == 0.05
    # The generated watches sit on white with a margin, so cropping changes what is embedded.
    assert not np.allclose(load_embeddings(tmp_path / "crop"), load_embeddings(tmp_path / "plain"), atol=1e-3)


def test_existing_index_needs_force(make_catalog, small_checkpoint, tmp_path):
    root = make_catalog(3)
    _build(root, tmp_path / "idx", small_checkpoint)
    with pytest.raises(SimclrWatchesError, match="already exists; use --force"):
        _build(root, tmp_path / "idx", small_checkpoint)
    make_catalog(5)
    assert _build(root, tmp_path / "idx", small_checkpoint, force=True).count == 5
    assert load_index(tmp_path / "idx").meta["count"] == 5


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
    with pytest.raises(IndexFormatError, match="v99 is not v1"):
        load_index(tmp_path / "idx")
    sidecar.write_text("{")
    with pytest.raises(IndexFormatError, match="unreadable sidecar"):
        load_index(tmp_path / "idx")
    sidecar.unlink()
    with pytest.raises(IndexFormatError, match="not an index"):
        load_index(tmp_path / "idx")


def test_cosine_from_angular():
    u, v = np.array([1.0, 0.0]), np.array([0.6, 0.8])
    assert cosine_from_angular(np.linalg.norm(u - v)) == pytest.approx(u @ v)
