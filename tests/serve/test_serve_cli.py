"""``simclr-watches serve`` as a real process: it starts, says where, answers, warns, and fails in one line."""

from __future__ import annotations

import json
import signal
import socket
import urllib.error
import urllib.request

import pytest

from helpers import assert_user_error, run_cli, serving
from simclr_watches.retrieval.index import build_index
from simclr_watches.retrieval.update import remove_items

pytestmark = pytest.mark.slow


@pytest.fixture
def index_dir(make_catalog, small_checkpoint, tmp_path):
    build_index(make_catalog(4), tmp_path / "idx", checkpoint=str(small_checkpoint), progress=False, n_trees=5)
    return tmp_path / "idx"


def get(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_serve_prints_its_address_answers_and_stops_on_sigterm(index_dir, tmp_path):
    remove_items(index_dir, [0])  # its row stays until a compaction: not an item
    with serving(index_dir, "--device", "cpu") as (proc, url, lines):
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        assert any(line.startswith(f"serving {index_dir} (3 items); writes disabled") for line in lines), lines
        assert not any("warning" in line for line in lines)
        status, health = get(url + "api/health")
        assert status == 200 and health["items"] == 3 and health["writes"] is False
        photo = (tmp_path / "catalog" / "w002.png").read_bytes()
        body = (b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x\"\r\n\r\n" + photo +
                b"\r\n--B\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n2\r\n--B--\r\n")
        status, result = get(url + "api/search", body, {"Content-Type": "multipart/form-data; boundary=B"})
        assert status == 200 and result["results"][0]["path"].endswith("w002.png") and len(result["results"]) == 2
        proc.terminate()  # uvicorn shuts down gracefully, then ends the process by the signal it caught
        assert proc.wait(30) in (0, -signal.SIGTERM)
    assert not any("Traceback" in line or line.startswith("error") for line in lines), lines


def test_writes_get_a_generated_token_printed_once(index_dir):
    with serving(index_dir, "--device", "cpu", "--enable-writes") as (_, url, lines):
        base, _, fragment = url.partition("#token=")
        assert len(fragment) >= 16 and any(f"writes enabled, token {fragment}" in line for line in lines)
        feedback = json.dumps({"query": "item:0", "item_id": 1, "verdict": "right"}).encode()
        assert get(base + "api/feedback", feedback)[0] == 401
        auth = {"Authorization": f"Bearer {fragment}", "Content-Type": "application/json"}
        assert get(base + "api/feedback", feedback, auth)[0] == 201
    assert (index_dir / "feedback.jsonl").is_file()


def test_a_token_from_the_environment_is_used_and_not_printed(index_dir):
    token = "e" * 20
    with serving(index_dir, "--device", "cpu", "--enable-writes", env={"SIMCLR_WATCHES_TOKEN": token}) as (_, url, lines):
        assert "#token" not in url and not any(token in line for line in lines)
        assert get(url + "api/items/0", None)[0] == 200
        removed = urllib.request.Request(url + "api/items/0", method="DELETE", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(removed, timeout=60) as resp:
            assert resp.status == 200


def test_binding_beyond_loopback_warns(index_dir):
    with serving(index_dir, "--device", "cpu", "--host", "0.0.0.0") as (_, url, lines):
        assert any(line.startswith("warning: 0.0.0.0 is reachable from other machines") for line in lines)
        assert get(url + "api/health")[0] == 200


def test_start_up_errors_are_one_line(index_dir, tmp_path):
    assert_user_error(run_cli("serve", tmp_path / "nothing", "--port", "0"), "no such index folder")
    assert_user_error(run_cli("serve", index_dir, "--port", "0", "--enable-writes", env={"SIMCLR_WATCHES_TOKEN": "short"}),
                      "writes need a token of at least 16 characters")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert_user_error(run_cli("serve", index_dir, "--port", port), "ddress already in use")
