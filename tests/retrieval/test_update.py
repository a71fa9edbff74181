"""A catalog that changes without a rebuild (issue 14 point 4): add, remove, compact, --update, refresh."""

import json
import os
import shutil
import threading

import numpy as np
import pytest

import simclr_watches.retrieval.update as update_mod
from helpers import draw_watch
from simclr_watches.core.errors import IndexFormatError, SimclrWatchesError
from simclr_watches.data.images import load_image
from simclr_watches.retrieval import store
from simclr_watches.retrieval.index import build_index, load_index
from simclr_watches.retrieval.localize import LocalizeConfig
from simclr_watches.retrieval.search import Searcher
from simclr_watches.retrieval.update import add_items, compact, remove_items, update_index


@pytest.fixture
def built(make_catalog, small_checkpoint, tmp_path, one_thread):
    """(catalog of 6 watches, its index, a folder of 3 new watches) with the small checkpoint."""
    catalog = make_catalog(6)
    build_index(catalog, tmp_path / "idx", checkpoint=str(small_checkpoint), progress=False, n_trees=3)
    new = tmp_path / "new"
    new.mkdir()
    for i in range(6, 9):
        draw_watch(i).save(new / f"w{i:03d}.png")
    return catalog, tmp_path / "idx", new


def _folder(index_dir):
    return sorted(os.listdir(index_dir))


def _named(index_dir):
    meta = json.loads((index_dir / "index.json").read_text())
    return sorted(["index.json", ".lock", *meta["files"].values()])


def test_added_items_are_found_exactly_and_duplicates_or_unreadable_files_are_reported(built, tmp_path):
    catalog, idx, new = built
    searcher = Searcher(idx, device="cpu")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    shutil.copy(new / "w006.png", tmp_path / "again.png")
    report = add_items(idx, [new, catalog / "w001.png", tmp_path / "bad.png", tmp_path / "again.png"],
                       model=(searcher.encoder, searcher.model))
    assert [(a["id"], a["path"]) for a in report.added] == [(6 + i, str(new / f"w{6 + i:03d}.png")) for i in range(3)]
    assert report.embedded == 3 and not report.compacted
    assert [u[0] for u in report.unchanged] == [str(catalog / "w001.png"), str(tmp_path / "again.png")]
    assert "same content as item 1" in report.unchanged[0][1]
    assert report.skipped == [(str(tmp_path / "bad.png"), report.skipped[0][1])]
    assert (report.live, report.pending_added, report.pending_removed) == (9, 3, 0)
    assert _folder(idx) == _named(idx) and "added-2.npy" in _folder(idx)

    assert searcher.refresh() and not searcher.refresh()
    for localize in (True, False):
        if not localize:
            searcher.localize = None
        hits = searcher.search_one(new / "w007.png", top_k=9).hits
        assert (hits[0].id, hits[0].path) == (7, str(new / "w007.png")) and hits[0].score == pytest.approx(1, abs=1e-4)
        assert sorted(h.id for h in hits) == list(range(9))
    assert searcher.item(7) == report.added[1] and searcher.item(99) is None


def test_removed_items_never_appear_and_compaction_keeps_ids_and_results(built):
    catalog, idx, new = built
    add_items(idx, [new])
    searcher = Searcher(idx, device="cpu")
    report = remove_items(idx, [2, str(new / "w007.png"), 42, str(catalog / "nope.png"), 2])
    assert [r["id"] for r in report.removed] == [2, 7]
    assert report.skipped == [("42", "no item with id 42 (unknown or already removed)"),
                              (str(catalog / "nope.png"), "no item with this path (unknown or already removed)")]
    assert (report.live, report.pending_added, report.pending_removed) == (7, 3, 2)
    searcher.refresh()
    assert searcher.item(2) is None and searcher.item(7) is None and searcher.item(3)["id"] == 3
    before = {}
    for q in (catalog / "w002.png", new / "w007.png", catalog / "w004.png"):
        for localize in (True, False):
            searcher.localize = LocalizeConfig() if localize else None
            hits = searcher.search_one(q, top_k=10).hits
            assert len(hits) == 7 and not {2, 7} & {h.id for h in hits}
            before[q, localize] = [(h.id, h.path, round(h.score, 4)) for h in hits]

    report = compact(idx)
    assert report.compacted and (report.live, report.pending_added, report.pending_removed) == (7, 0, 0)
    assert _folder(idx) == _named(idx) == [".lock", "forest-4.ann", "ids-4.npy", "index.json", "offsets-4.npy",
                                           "paths-4.npy", "sha256-4.npy", "sizes-4.npy", "vectors-4.npy"]
    compacted = load_index(idx)
    assert compacted.ids == [0, 1, 3, 4, 5, 6, 8] and compacted.meta["next_id"] == 9
    assert compacted.meta["added"] == compacted.meta["removed"] == []
    assert searcher.refresh()
    for (q, localize), expected in before.items():
        searcher.localize = LocalizeConfig() if localize else None
        assert [(h.id, h.path, round(h.score, 4)) for h in searcher.search_one(q, top_k=10).hits] == expected
    assert not compact(idx).compacted  # nothing pending: nothing done


def test_compaction_starts_by_itself_past_the_threshold(built, monkeypatch):
    catalog, idx, new = built
    assert update_mod.needs_compaction(257, 0, 100) and not update_mod.needs_compaction(200, 56, 100)
    assert update_mod.needs_compaction(0, 1001, 10_000) and not update_mod.needs_compaction(0, 1000, 10_000)
    monkeypatch.setattr(update_mod, "COMPACT_MIN_PENDING", 2)
    assert not remove_items(idx, [0, 1]).compacted  # 2 pending: not past max(2, 10 % of 4)
    report = add_items(idx, [new / "w006.png"])
    assert report.compacted and (report.live, report.pending_added, report.pending_removed) == (5, 0, 0)


def test_an_added_then_removed_item_counts_once_toward_compaction(built, monkeypatch):
    catalog, idx, new = built
    monkeypatch.setattr(update_mod, "COMPACT_MIN_PENDING", 2)
    assert not add_items(idx, [new / "w006.png", new / "w007.png"]).compacted  # 2 pending
    report = remove_items(idx, [6, 7])  # the same 2 rows, hidden: still 2 changes, not 4
    assert not report.compacted and (report.live, report.pending_added, report.pending_removed) == (6, 2, 2)
    assert remove_items(idx, [0]).compacted  # a third change


def test_update_embeds_only_new_or_changed_files_and_drops_deleted_ones(built, monkeypatch):
    catalog, idx, new = built
    [outside] = add_items(idx, [new / "w007.png"]).added  # added from outside the catalog: --update keeps it
    embedded = []
    real = update_mod._embed
    monkeypatch.setattr(update_mod, "_embed",
                        lambda index, enc, model, paths, *a: embedded.extend(paths) or real(index, enc, model, paths, *a))
    draw_watch(20).save(catalog / "w001.png")  # changed
    (catalog / "w002.png").unlink()  # deleted
    shutil.copy(catalog / "w003.png", catalog / "moved.png")  # a copy: its vector is reused
    shutil.copy(new / "w006.png", catalog / "w006.png")  # new
    (catalog / "bad.png").write_bytes(b"")
    report = update_index(catalog, idx)
    # Decoded: the new, the changed, and the unreadable file (which decoding reports); embedded: the first two.
    assert sorted(p.name for p in embedded) == ["bad.png", "w001.png", "w006.png"] and report.embedded == 2
    assert sorted(r["id"] for r in report.removed) == [1, 2]
    assert sorted((a["id"], os.path.basename(a["path"])) for a in report.added) == [(7, "moved.png"), (8, "w001.png"),
                                                                                   (9, "w006.png")]
    assert report.skipped == [(str(catalog / "bad.png"), "empty file")]
    index = load_index(idx)
    assert index.meta["skipped"] == [{"path": str(catalog / "bad.png"), "reason": "empty file"}]
    live = {index.items[r]["path"] for r in range(len(index)) if not index.is_hidden(r)}
    assert live == {str(p.resolve()) for p in catalog.glob("w*.png")} | {str(catalog / "moved.png"), outside["path"]}
    moved = index.row_of(7)
    assert np.array_equal(index.vectors[moved], index.vectors[index.row_of(3)])

    embedded.clear()
    again = update_index(catalog, idx)  # nothing changed: nothing embedded (the unreadable file is tried again)
    assert embedded == [catalog / "bad.png"] and again.added == again.removed == [] and load_index(idx).stamp == index.stamp


def test_search_photo_answers_as_search_one(built):
    catalog, idx, _ = built
    searcher = Searcher(idx, device="cpu")
    photo = load_image(catalog / "w003.png", hash=False)
    for localize in (True, False):
        if not localize:
            searcher.localize = None
        by_file = searcher.search_one(catalog / "w003.png", top_k=4)
        by_photo = searcher.search_photo(photo, "upload", top_k=4)
        assert by_photo.query == "upload" and by_photo.box == by_file.box
        assert [h.id for h in by_photo.hits] == [h.id for h in by_file.hits]
        assert [h.score for h in by_photo.hits] == pytest.approx([h.score for h in by_file.hits], abs=1e-6)
        assert by_photo.to_json()["results"][0] == {"rank": 1, "id": 3, "path": str(catalog / "w003.png"),
                                                    "score": pytest.approx(1, abs=1e-4)}
    with pytest.raises(SimclrWatchesError, match="top-k must be >= 1"):
        searcher.search_photo(photo, "upload", top_k=0)


def test_writers_refuse_what_is_not_an_index_and_wait_for_each_other(built, tmp_path, monkeypatch):
    catalog, idx, new = built
    with pytest.raises(IndexFormatError, match="not an index"):
        remove_items(catalog, [1])
    assert not (catalog / ".lock").exists()  # nothing was made in a folder that is not an index
    monkeypatch.setattr(store, "LOCK_TIMEOUT_S", 0.2)
    with store.writer_lock(idx):
        with pytest.raises(IndexFormatError, match="another simclr-watches process is updating this index"):
            remove_items(idx, [1])
    assert load_index(idx).removed_count == 0
    remove_items(idx, list(range(6)))  # every item removed: searches find nothing, compaction has nothing to build
    searcher = Searcher(idx, device="cpu")
    assert searcher.search_one(catalog / "w000.png").hits == []
    with pytest.raises(SimclrWatchesError, match="every item is removed"):
        compact(idx)


def test_the_forest_of_an_index_with_removed_items_skips_them_in_every_query(tmp_path):
    """Index.query asks Annoy for k + hidden items: k live rows come back even when the nearest are hidden."""
    from simclr_watches.retrieval.embed import EmbeddedItem
    from simclr_watches.retrieval.index import write_index
    from simclr_watches.model import Preprocessing
    from simclr_watches.weights import ModelInfo

    rng = np.random.default_rng(3)
    v = rng.normal(size=(60, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    items = [EmbeddedItem(f"/c/{i}.jpg", f"{i:064x}", 1) for i in range(60)]
    write_index(tmp_path / "idx", v, items, ModelInfo("m", "a" * 64, "resnet18", 8, Preprocessing(size=32)),
                Preprocessing(size=32), n_trees=3)
    index = load_index(tmp_path / "idx")
    extra = rng.normal(size=(5, 8)).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    new = [{"id": 60 + i, "path": f"/c/new{i}.jpg", "sha256": f"{100 + i:064x}", "bytes": 1} for i in range(5)]
    hidden = list(range(0, 60, 3)) + [61]
    update_mod.apply_change(index, new, extra, [], compact=False)
    update_mod.apply_change(load_index(tmp_path / "idx"), [], np.zeros((0, 8)), hidden, compact=False)
    index = load_index(tmp_path / "idx")
    rows = np.arange(65)
    live = np.setdiff1d(rows, hidden)
    allv = np.concatenate([v, extra]).astype(np.float16).astype(np.float32)  # as the index stores them
    allv /= np.linalg.norm(allv, axis=1, keepdims=True)
    for q in allv:
        got, scores = index.query(q, 10)
        exact = live[np.argsort(-(allv[live] @ q), kind="stable")[:10]]
        assert got == exact.tolist() and scores == pytest.approx(sorted(allv[live] @ q, reverse=True)[:10], abs=1e-5)
    # Compacting a change that also hides one of its own new rows keeps exactly the live rows, in order.
    update_mod.apply_change(index, [{**new[0], "id": 70}], extra[:1], [65], compact=True)
    compacted = load_index(tmp_path / "idx")
    assert compacted.ids == [index.items[r]["id"] for r in live] and len(compacted.vectors) == len(live)
    assert np.array_equal(np.asarray(compacted.vectors), np.concatenate([v, extra]).astype(np.float16)[live])


def test_searches_during_adds_removals_and_compactions_never_fail(built, monkeypatch):
    """A search loop in a thread, refreshing between searches, while another thread changes the index."""
    catalog, idx, new = built
    monkeypatch.setattr(update_mod, "COMPACT_MIN_PENDING", 3)
    searcher = Searcher(idx, device="cpu", localize=None)
    stop, seen, errors = threading.Event(), [], []

    def search_loop():
        while not stop.is_set():
            try:
                searcher.refresh()
                snap = searcher.index
                assert len(snap.paths) == len(snap.vectors) == len(snap)
                hits = searcher.search_one(catalog / "w000.png", top_k=20).hits
                assert hits[0].id == 0 and hits[0].score == pytest.approx(1, abs=1e-4)
                assert len({h.id for h in hits}) == len(hits) == snap.live_count
                seen.append(snap.meta["generation"])
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

    reader = threading.Thread(target=search_loop)
    reader.start()
    try:
        model = (searcher.encoder, searcher.model)
        for _ in range(3):
            add_items(idx, [new], model=model)
            remove_items(idx, [str(p) for p in sorted(new.iterdir())])
            compact(idx)
    finally:
        stop.set()
        reader.join()
    assert errors == [] and len(set(seen)) > 3


def test_an_add_embeds_without_the_lock_and_commits_on_the_index_as_other_writers_left_it(built, monkeypatch):
    """While an add embeds (a slow encoder), a remove and another add of one of its files complete;
    the first add then keeps the removal and drops the file the other writer added meanwhile."""
    catalog, idx, new = built
    monkeypatch.setattr(store, "LOCK_TIMEOUT_S", 5.0)  # a writer blocked by the embedding fails instead of waiting
    real, meanwhile, errors = update_mod._embed, [], []

    def slow_embed(index, encoder, model, paths, *args):
        if len(paths) == 3:  # the first add's embedding: other writers run to their end meanwhile
            try:
                meanwhile.append(remove_items(idx, [2]))
                meanwhile.append(add_items(idx, [new / "w007.png"]))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
        return real(index, encoder, model, paths, *args)

    monkeypatch.setattr(update_mod, "_embed", slow_embed)
    report = add_items(idx, [new])
    assert errors == [] and [r["id"] for r in meanwhile[0].removed] == [2]
    assert [a["path"] for a in meanwhile[1].added] == [str(new / "w007.png")] and meanwhile[1].added[0]["id"] == 6
    assert report.embedded == 3 and [(a["id"], a["path"]) for a in report.added] == [(7, str(new / "w006.png")),
                                                                                   (8, str(new / "w008.png"))]
    assert report.unchanged == [(str(new / "w007.png"), "same content as an item already indexed")]
    index = load_index(idx)
    assert index.item(2) is None and [index.item(i)["path"] for i in (6, 7, 8)] == [
        str(new / f"w{i:03d}.png") for i in (7, 6, 8)]
    assert (report.live, report.pending_added, report.pending_removed) == (8, 3, 1)
    assert report.index.stamp == index.stamp  # the index the change opened: not opened again by the caller


def test_an_add_refuses_vectors_of_an_index_rebuilt_meanwhile(built, make_catalog, monkeypatch, tmp_path):
    catalog, idx, new = built
    real = update_mod._embed

    def rebuild_then_embed(index, encoder, model, paths, *args):
        build_index(catalog, idx, checkpoint=index.meta["model"]["id"], progress=False, n_trees=3, crop=False,
                    force=True)
        return real(index, encoder, model, paths, *args)

    monkeypatch.setattr(update_mod, "_embed", rebuild_then_embed)
    with pytest.raises(IndexFormatError, match="rebuilt with other settings while the photos were embedded"):
        add_items(idx, [new / "w006.png"])
    rebuilt = load_index(idx)
    assert rebuilt.live_count == 6 and rebuilt.crop_margin is None and rebuilt.added_count == 0


def test_a_change_opens_the_index_once_under_the_lock_and_once_to_vouch_for_what_it_wrote(built, monkeypatch):
    """D1: no opening before the lock for remove and compact, none after the commit but the writer's own."""
    import simclr_watches.retrieval.index as index_mod

    catalog, idx, new = built
    opened, real = [], index_mod._load_once
    monkeypatch.setattr(index_mod, "_load_once", lambda d: opened.append(d) or real(d))
    report = remove_items(idx, [1])
    assert len(opened) == 2 and report.index.stamp == load_index(idx).stamp
    opened.clear()
    add_items(idx, [new / "w006.png"])
    assert len(opened) == 2  # before embedding (reused under the lock: no other writer), and to vouch
    opened.clear()
    report = compact(idx)
    assert report.compacted and len(opened) == 2


def test_a_model_that_describes_its_catalog_at_several_sizes_embeds_every_catalog_photo_so(make_catalog, tmp_path, one_thread):
    import torch

    from simclr_watches.data.mask import CROP_MARGIN, catalog_view
    from simclr_watches.model import Preprocessing
    from simclr_watches.retrieval.embed import embed_paths
    from simclr_watches.retrieval.index import load_embeddings
    from simclr_watches.weights import init_encoder, load_model, save_encoder

    torch.manual_seed(0)
    sided = Preprocessing(size=64, catalog_sizes=(64, 96), region_sizes=(80,))
    ckpt = save_encoder(tmp_path / "sided.safetensors", init_encoder("resnet18", "random"), sided)
    catalog, idx = make_catalog(4), tmp_path / "idx"
    build_index(catalog, idx, checkpoint=str(ckpt), progress=False, n_trees=3, pca=0)
    encoder, info = load_model(str(ckpt))
    assert info.preprocessing == sided and load_index(idx).preprocessing == sided  # the sidecar records both sides

    def at(size, paths):
        return embed_paths(encoder, Preprocessing(size=size), paths, progress=False, view=catalog_view(CROP_MARGIN),
                           hash=False).vectors

    def both(paths):  # the mean of the unit vectors at 64 and 96 px, made unit
        v = at(64, paths) + at(96, paths)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    files = sorted(catalog.iterdir())
    np.testing.assert_allclose(load_embeddings(idx), both(files), atol=2e-3)  # float16 rows
    assert np.abs(load_embeddings(idx) - at(64, files)).max() > 0.02  # not the query size alone
    draw_watch(9).save(tmp_path / "new.png")
    add_items(idx, [tmp_path / "new.png"], model=(encoder, info))  # `add` embeds as build-index did
    np.testing.assert_allclose(load_embeddings(idx)[-1:], both([tmp_path / "new.png"]), atol=2e-3)
