"""The API through FastAPI's test client: every endpoint, and every error with its status."""

from __future__ import annotations

import hashlib
import io
import json
import threading

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from helpers import draw_watch
from simclr_watches.retrieval import store
from simclr_watches.retrieval.index import FEEDBACK_FILE, INDEX_OUTPUT, UPLOADS_DIR, UPLOAD_NAME, build_index
from simclr_watches.retrieval.search import Searcher
from simclr_watches.retrieval.update import add_items
from simclr_watches.serve.app import create_app, page_html
from simclr_watches.serve.settings import ServeSettings

TOKEN = "t" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def index_dir(make_catalog, small_checkpoint, tmp_path):
    build_index(make_catalog(6), tmp_path / "idx", checkpoint=str(small_checkpoint), progress=False, n_trees=5)
    return tmp_path / "idx"


@pytest.fixture
def serve(index_dir, one_thread):
    """``serve(**settings) -> TestClient`` of an app over the 6-watch index."""

    def make(**settings) -> TestClient:
        return TestClient(create_app(index_dir, ServeSettings(**settings), device="cpu"))

    return make


def png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def post_photo(client: TestClient, data: bytes, k=None, name: str = "photo.png", url: str = "/api/search", headers=None):
    return client.post(url, files={"image": (name, data, "image/png")}, data={} if k is None else {"k": str(k)},
                       headers=headers or {})


def assert_error(resp, status: int, fragment: str) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert list(body) == ["error"] and fragment in body["error"], body


def test_search_answers_search_json_schema_with_the_time_taken(serve, tmp_path):
    client = serve()
    photo = tmp_path / "catalog" / "w003.png"
    resp = post_photo(client, photo.read_bytes(), k=4)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    expected = Searcher(tmp_path / "idx", device="cpu").search_one(photo, top_k=4).to_json()
    assert list(body) == [*expected, "size", "took_ms"] and body["query"].startswith("upload:sha256:")
    assert [(r["id"], r["path"]) for r in body["results"]] == [(r["id"], r["path"]) for r in expected["results"]]
    assert body["results"][0]["path"] == str(photo.resolve()) and body["results"][0]["score"] > 0.999
    assert body["box"] == expected["box"] and body["size"] == [96, 96] and body["took_ms"] > 0
    assert len(post_photo(client, photo.read_bytes()).json()["results"]) == 6  # default k 10, capped at the catalog


UNUSABLE = [
    (b"hello, not an image", 415, "not an image"),
    (png(draw_watch(1))[:200], 400, "truncated or corrupt"),
    (b"", 400, "empty file"),
    (png(Image.new("RGB", (200, 100))), 413, "200x100 = 20000 pixels exceeds the limit of 10000"),
]


def test_an_unusable_photo_is_refused_with_its_status(serve):
    client = serve(max_pixels=10_000)
    for data, status, fragment in UNUSABLE:
        assert_error(post_photo(client, data), status, fragment)


def test_a_photo_over_the_byte_limit_is_413_and_requests_without_a_photo_400_or_415(serve):
    client = serve(max_upload_bytes=1000)
    assert_error(post_photo(client, b"\xff" * 1001), 413, "more than the limit of 1000 bytes")
    assert_error(client.post("/api/search", data={"k": "3"}, files={"other": ("x", b"1")}), 400, "no photo")
    assert_error(client.post("/api/search", json={"image": "x"}), 415, "multipart/form-data")


def test_a_wrong_k_is_422(serve, tmp_path):
    client = serve()
    photo = (tmp_path / "catalog" / "w000.png").read_bytes()
    for k in (0, -1, 101, "abc", "1.5", ""):
        assert_error(post_photo(client, photo, k=k), 422, "k must be an integer in [1, 100]")
        assert_error(client.get(f"/api/items/0/similar?k={k}"), 422, "k must be an integer in [1, 100]")


def test_items_their_image_thumbnail_and_more_like_this(serve, tmp_path):
    client = serve()
    photo = tmp_path / "catalog" / "w002.png"
    item_id = post_photo(client, photo.read_bytes()).json()["results"][0]["id"]
    record = client.get(f"/api/items/{item_id}").json()
    assert record["path"] == str(photo.resolve()) and record["bytes"] == photo.stat().st_size
    assert record["image"] == f"/api/items/{item_id}/image" and len(record["sha256"]) == 64
    image = client.get(record["image"])
    assert image.content == photo.read_bytes() and image.headers["content-type"] == "image/png"
    assert image.headers["x-content-type-options"] == "nosniff"
    thumb = client.get(record["thumbnail"])
    assert thumb.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(thumb.content)).size == (96, 96)
    similar = client.get(f"/api/items/{item_id}/similar?k=3").json()
    assert similar["query"] == f"item:{item_id}" and similar["results"][0]["id"] == item_id
    assert len(similar["results"]) == 3 and similar["took_ms"] > 0


def test_an_unknown_item_is_404(serve):
    client = serve()
    for url in ("/api/items/999", "/api/items/999/image", "/api/items/999/thumbnail", "/api/items/999/similar"):
        assert_error(client.get(url), 404, "no item 999 in the index")


def test_item_ids_are_integers_and_never_paths(serve):
    client = serve()
    assert_error(client.get("/api/items/abc"), 422, "item_id")
    for url in ("/api/items/..%2F..%2Fetc%2Fpasswd/image", "/api/items/%2Fetc%2Fpasswd/image"):
        assert client.get(url).status_code in (404, 422)
    assert_error(client.get("/api/nothing"), 404, "Not Found")


def test_a_catalog_file_gone_since_indexing_is_404(serve, tmp_path):
    client = serve()
    (tmp_path / "catalog" / "w004.png").unlink()
    assert_error(client.get("/api/items/4/image"), 404, "item 4: its file cannot be read")


def test_more_like_this_searches_the_stored_row_and_reads_no_file(serve, index_dir, tmp_path, monkeypatch):
    client = serve(localize=False)
    photo = tmp_path / "catalog" / "w004.png"
    by_photo = post_photo(client, photo.read_bytes(), k=6).json()["results"]
    photo.unlink()  # the stored row needs no file
    monkeypatch.setattr("simclr_watches.serve.service.read_limited", lambda *a, **k: pytest.fail("read a file"))
    similar = client.get("/api/items/4/similar?k=6").json()
    assert similar["query"] == "item:4" and "box" not in similar and "size" not in similar
    assert [r["id"] for r in similar["results"]] == [r["id"] for r in by_photo]
    assert similar["results"][0]["id"] == 4 and similar["results"][0]["score"] > 0.999


def test_write_endpoints_are_403_unless_enabled_then_401_without_the_token(serve):
    read_only, writable = serve(), serve(enable_writes=True, token=TOKEN)
    for method, url in (("post", "/api/items"), ("delete", "/api/items/0"), ("post", "/api/feedback")):
        assert_error(getattr(read_only, method)(url, headers=AUTH), 403, "writes are disabled")
        assert_error(getattr(writable, method)(url), 401, "needs the server's token")
        wrong = {"Authorization": "Bearer " + "x" * 24}
        assert_error(getattr(writable, method)(url, headers=wrong), 401, "wrong token")
        basic = {"Authorization": f"Basic {TOKEN}"}
        assert_error(getattr(writable, method)(url, headers=basic), 401, "needs the server's token")


def test_add_search_and_remove_through_the_api(serve, index_dir):
    client = serve(enable_writes=True, token=TOKEN)
    new = png(draw_watch(40))
    resp = post_photo(client, new, url="/api/items", headers=AUTH, name="../../../evil.png")
    assert resp.status_code == 201, resp.text
    [added] = resp.json()["added"]
    assert added["id"] == 6 and resp.json()["items"] == 7
    stored = index_dir / UPLOADS_DIR / f"{added['sha256']}.png"
    assert added["path"] == str(stored.resolve()) and stored.read_bytes() == new
    assert sorted(p.name for p in (index_dir / UPLOADS_DIR).iterdir()) == [stored.name]  # the client's name unused
    assert post_photo(client, new).json()["results"][0]["id"] == 6
    again = post_photo(client, new, url="/api/items", headers=AUTH).json()
    assert again["added"] == [] and "same content as item 6" in again["unchanged"][0]["reason"]
    gone = client.delete("/api/items/6", headers=AUTH)
    assert gone.status_code == 200 and gone.json()["removed"][0]["id"] == 6 and gone.json()["items"] == 6
    assert 6 not in [r["id"] for r in post_photo(client, new).json()["results"]]
    assert_error(client.delete("/api/items/6", headers=AUTH), 404, "no item 6")
    assert_error(client.get("/api/items/6"), 404, "no item 6")
    stats = client.get("/api/stats").json()
    assert (stats["items"], stats["added"], stats["removed"]) == (6, 1, 1)
    assert UPLOAD_NAME.match(stored.name) and INDEX_OUTPUT.owned(index_dir)  # build-index --force may replace it
    (index_dir / UPLOADS_DIR / "notes.txt").write_text("mine")
    assert not INDEX_OUTPUT.owned(index_dir)  # a file the server did not write: the folder is no longer ours


def test_an_unusable_photo_among_several_adds_nothing(serve, index_dir):
    client = serve(enable_writes=True, token=TOKEN, max_pixels=10_000)
    files = [("image", ("a.png", png(draw_watch(41)), "image/png")), ("image", ("b.txt", b"text", "text/plain"))]
    assert_error(client.post("/api/items", files=files, headers=AUTH), 415, "photo 2: not an image")
    big = [("image", ("c.png", png(Image.new("RGB", (200, 100))), "image/png"))]
    assert_error(client.post("/api/items", files=big, headers=AUTH), 413, "exceeds the limit of 10000")
    assert not (index_dir / UPLOADS_DIR).exists() and client.get("/api/health").json()["items"] == 6


def test_feedback_is_validated_and_appended_to_the_index_folder(serve, index_dir):
    client = serve(enable_writes=True, token=TOKEN, max_feedback_bytes=300)
    good = {"query": "item:1", "item_id": 2, "verdict": "wrong", "rank": 2, "score": 0.5}
    resp = client.post("/api/feedback", json=good, headers=AUTH)
    assert resp.status_code == 201 and resp.json()["verdict"] == "wrong"
    [line] = (index_dir / FEEDBACK_FILE).read_text().splitlines()
    assert {k: v for k, v in json.loads(line).items() if k in good} == good
    assert json.loads(line)["path"].endswith("w002.png")
    assert_error(client.post("/api/feedback", json={**good, "item_id": 77}, headers=AUTH), 404, "no item 77")
    assert_error(client.post("/api/feedback", json={**good, "verdict": "meh"}, headers=AUTH), 422, "verdict")
    assert_error(client.post("/api/feedback", content=b"{" * 400, headers=AUTH), 413, "larger than 300 bytes")
    assert_error(client.post("/api/feedback", content=b"[]", headers=AUTH), 400, "JSON object")
    assert len((index_dir / FEEDBACK_FILE).read_text().splitlines()) == 1
    assert INDEX_OUTPUT.owned(index_dir)


def test_a_full_server_answers_503_and_counts_it(serve, tmp_path):
    client = serve(max_concurrent=1)
    photo = (tmp_path / "catalog" / "w001.png").read_bytes()
    with client.app.state.service.gate.admit():  # one request in flight
        assert_error(post_photo(client, photo), 503, "busy: 1 requests are being served")
        assert client.get("/api/items/1/similar").status_code == 200  # holds no photo: never busy
        assert client.get("/api/items/1/thumbnail").status_code == 200  # catalog reads wait, not refused
    assert post_photo(client, photo).status_code == 200
    stats = client.get("/api/stats").json()
    assert stats["busy_refused"] == 1 and stats["searches"] == 2 and stats["p50_ms"] > 0 and stats["in_flight"] == 0


def test_health_and_stats(serve, small_checkpoint):
    client = serve()
    health = client.get("/api/health").json()
    assert health == {"status": "ok", "items": 6, "writes": False, "model": str(small_checkpoint.resolve()),
                      "max_top_k": 100, "max_upload_bytes": ServeSettings().max_upload_bytes}
    stats = client.get("/api/stats").json()
    assert stats["items"] == 6 and stats["added"] == 0 and stats["removed"] == 0 and stats["searches"] == 0
    assert stats["p50_ms"] is None and stats["uptime_s"] >= 0


def test_changes_by_another_process_are_seen_without_a_restart(serve, index_dir, small_checkpoint, tmp_path):
    client = serve()
    draw_watch(42).save(tmp_path / "new.png")
    add_items(index_dir, [tmp_path / "new.png"], device="cpu")
    assert client.get("/api/health").json()["items"] == 7
    assert post_photo(client, (tmp_path / "new.png").read_bytes()).json()["results"][0]["path"] == \
        str((tmp_path / "new.png").resolve())


def test_the_page_is_one_self_contained_file(serve):
    resp = serve().get("/")
    assert resp.status_code == 200 and resp.content == page_html()
    html = resp.text
    assert 'capture="environment"' in html and 'accept="image/*"' in html and "/api/search" in html
    assert "http://" not in html and "https://" not in html and "src=\"//" not in html  # nothing from elsewhere
    assert "default-src 'none'" in resp.headers["content-security-policy"]


def test_an_index_that_becomes_unreadable_is_503_not_a_crash(serve, index_dir):
    client = serve()
    (index_dir / "index.json").write_text("{}")
    assert_error(client.get("/api/health"), 503, "the index cannot be read now")
    assert_error(client.get("/api/items/1"), 503, "index.json")


def mpo(*colours) -> bytes:
    """A multi-picture JPEG (MPO, as phone cameras write) of one frame per colour."""
    frames = [draw_watch(c) for c in colours]
    buf = io.BytesIO()
    frames[0].save(buf, "MPO", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(buf.getvalue())).format == "MPO"
    return buf.getvalue()


def test_a_multi_picture_jpeg_is_added_served_as_a_jpeg_and_searched(serve, index_dir):
    client = serve(enable_writes=True, token=TOKEN)
    data = mpo(43, 44)
    resp = post_photo(client, data, url="/api/items", headers=AUTH, name="phone.jpg")
    assert resp.status_code == 201, resp.text
    [added] = resp.json()["added"]
    assert added["path"].endswith(".jpg") and (index_dir / UPLOADS_DIR / f"{added['sha256']}.jpg").read_bytes() == data
    image = client.get(f"/api/items/{added['id']}/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg" and image.content == data
    assert post_photo(client, data).json()["results"][0]["id"] == added["id"]


def test_planted_links_in_the_index_folder_are_refused_never_written_through(serve, index_dir, tmp_path):
    client = serve(enable_writes=True, token=TOKEN)
    victim = tmp_path / "bashrc"
    victim.write_text("precious\n")
    (index_dir / FEEDBACK_FILE).symlink_to(victim)
    good = {"query": "item:1", "item_id": 2, "verdict": "right"}
    assert_error(client.post("/api/feedback", json=good, headers=AUTH), 500,
                 f"feedback not recorded: {FEEDBACK_FILE}: a symbolic link, not a file (refused)")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (index_dir / UPLOADS_DIR).symlink_to(elsewhere)
    assert_error(post_photo(client, png(draw_watch(45)), url="/api/items", headers=AUTH), 409,
                 "uploads: not a folder (a symbolic link or a file)")
    assert victim.read_text() == "precious\n" and list(elsewhere.iterdir()) == []
    assert client.get("/api/health").json()["items"] == 6
    (index_dir / UPLOADS_DIR).unlink()
    (index_dir / UPLOADS_DIR).mkdir()
    new = png(draw_watch(45))
    planted = index_dir / UPLOADS_DIR / f"{hashlib.sha256(new).hexdigest()}.png"
    planted.symlink_to(victim)  # a link where the upload's own name goes is replaced, not followed
    assert post_photo(client, new, url="/api/items", headers=AUTH).status_code == 201
    assert not planted.is_symlink() and planted.read_bytes() == new and victim.read_text() == "precious\n"


def test_an_upload_no_item_was_added_from_leaves_no_file(serve, index_dir, tmp_path, monkeypatch):
    client = serve(enable_writes=True, token=TOKEN)
    duplicate = (tmp_path / "catalog" / "w003.png").read_bytes()
    resp = post_photo(client, duplicate, url="/api/items", headers=AUTH).json()
    assert resp["added"] == [] and "same content as item 3" in resp["unchanged"][0]["reason"]
    assert list((index_dir / UPLOADS_DIR).iterdir()) == []
    monkeypatch.setattr(store, "LOCK_TIMEOUT_S", 0.2)
    with store.writer_lock(index_dir):  # another writer holds the index
        assert_error(post_photo(client, png(draw_watch(46)), url="/api/items", headers=AUTH), 409,
                     "another simclr-watches process is updating this index")
    assert list((index_dir / UPLOADS_DIR).iterdir()) == [] and client.get("/api/health").json()["items"] == 6


def test_a_client_that_trickles_its_upload_gets_408_and_frees_its_place(serve, tmp_path):
    client = serve(max_concurrent=1, upload_timeout_s=0.3)
    app = client.app
    answers: list[dict] = []
    first = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n\x89PNG'

    async def trickle() -> None:
        chunks = [first]

        async def receive():
            if chunks:
                return {"type": "http.request", "body": chunks.pop(), "more_body": True}
            await anyio.sleep(3600)  # the rest never comes

        async def send(message):
            answers.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/api/search", "raw_path": b"/api/search", "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", b"multipart/form-data; boundary=b")], "client": ("127.0.0.1", 1),
                 "server": ("testserver", 80)}
        with anyio.fail_after(30):  # without a timeout it would hold the only place for an hour
            await app(scope, receive, send)

    anyio.run(trickle)
    assert answers[0]["status"] == 408 and b"took more than 0.3 s to arrive" in answers[1]["body"]
    photo = (tmp_path / "catalog" / "w001.png").read_bytes()
    assert post_photo(client, photo).status_code == 200  # the place was given back


def test_thumbnails_waiting_their_turn_hold_no_worker_thread(serve, monkeypatch):
    client = serve(max_concurrent=1)
    service = client.app.state.service
    release, real, reading = threading.Event(), service.thumbnail, []

    def slow(item_id):
        reading.append(item_id)
        release.wait(30)
        return real(item_id)

    monkeypatch.setattr(service, "thumbnail", slow)

    async def page() -> tuple[int, list[int]]:
        before = threading.active_count()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app), base_url="http://t") as http:
            statuses: list[int] = []

            async def get(i: int) -> None:
                statuses.append((await http.get(f"/api/items/{i}/thumbnail")).status_code)

            async with anyio.create_task_group() as tasks:
                for i in range(4):
                    tasks.start_soon(get, i)
                with anyio.fail_after(30):
                    while not reading:
                        await anyio.sleep(0.01)
                for _ in range(20):  # let the other three run as far as they can
                    await anyio.sleep(0.01)
                busy = threading.active_count() - before
                release.set()
        return busy, statuses

    busy, statuses = anyio.run(page)
    assert busy == 1 and sorted(statuses) == [200] * 4  # one thread reads; three wait in the event loop


def test_thumbnails_decode_catalog_photos_within_the_pixel_limit(serve):
    client = serve(max_pixels=5000)  # the catalog's photos are 96 x 96 = 9216 pixels
    assert_error(client.get("/api/items/1/thumbnail"), 404, "9216 pixels exceeds the limit of 5000")
    assert client.get("/api/items/1/image").status_code == 200  # served as stored, never decoded
