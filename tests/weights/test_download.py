"""Download transport and cache resolution, against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from simclr_watches import weights
from simclr_watches.core.errors import CheckpointError
from simclr_watches.core.files import sha256_file
from simclr_watches.weights.fetch import fetch

DATA = bytes(range(256)) * 400  # 100 KiB, several read chunks
SHA = hashlib.sha256(DATA).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    ranges: list[str | None] = []
    files: dict[str, bytes] = {}
    release: threading.Event

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes, length: int | None = None, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.ranges.append(self.headers.get("Range"))
        path = self.path
        if path in self.files:
            self._send(200, self.files[path])
        elif path == "/good.bin":
            rng = self.headers.get("Range")
            if rng:
                start = int(rng.removeprefix("bytes=").rstrip("-"))
                self._send(206, DATA[start:], extra={"Content-Range": f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"})
            else:
                self._send(200, DATA)
        elif path == "/norange.bin":
            self._send(200, DATA)
        elif path == "/corrupt.bin":
            self._send(200, DATA[:-1] + b"\x00")
        elif path == "/truncated.bin":
            self._send(200, DATA[: len(DATA) // 2], length=len(DATA))
        elif path == "/loop":
            self._send(302, b"", extra={"Location": "/loop2"})
        elif path == "/loop2":
            self._send(302, b"", extra={"Location": "/loop"})
        elif path == "/stall.bin":
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATA)))
            self.end_headers()
            self.wfile.write(DATA[:1000])
            self.wfile.flush()
            self.release.wait(10)  # bounded: the fixture sets it at teardown
        else:
            self._send(404, b"not here")


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Base URL of a threaded server; ``server.ranges`` lists the Range header of each request."""
    monkeypatch.setenv("SIMCLR_WATCHES_HOME", str(tmp_path / "cache"))
    release = threading.Event()
    handler = type("Handler", (_Handler,), {"ranges": [], "files": {}, "release": release})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    class Server(str):
        ranges = handler.ranges
        files = handler.files

    yield Server(f"http://127.0.0.1:{httpd.server_address[1]}")
    release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _get(server, path, dest, **kw):
    return fetch(f"{server}{path}", dest, kw.pop("sha256", SHA), progress=False, **kw)


def test_good_download(server, tmp_path):
    dest = _get(server, "/good.bin", tmp_path / "w.safetensors", size=len(DATA))
    assert dest.read_bytes() == DATA
    assert not dest.with_name("w.safetensors.part").exists()


def test_resume_sends_range_and_appends(server, tmp_path):
    dest = tmp_path / "w.safetensors"
    dest.with_name("w.safetensors.part").write_bytes(DATA[:1000])
    _get(server, "/good.bin", dest, size=len(DATA))
    assert server.ranges == ["bytes=1000-"]
    assert dest.read_bytes() == DATA


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    dest = tmp_path / "w.safetensors"
    dest.with_name("w.safetensors.part").write_bytes(b"x" * 1000)  # appending to this would corrupt the file
    _get(server, "/norange.bin", dest, size=len(DATA))
    assert server.ranges == ["bytes=1000-"]
    assert dest.read_bytes() == DATA


def test_verified_file_is_not_downloaded_again(server, tmp_path):
    dest = tmp_path / "w.safetensors"
    dest.write_bytes(DATA)
    _get(server, "/good.bin", dest)
    assert server.ranges == []


def _assert_fails(server, tmp_path, path, match, **kw):
    dest = tmp_path / "w.safetensors"
    with pytest.raises(CheckpointError, match=match) as err:
        _get(server, path, dest, **kw)
    assert f"{server}{path}" in str(err.value)
    assert not dest.exists()
    return dest.with_name("w.safetensors.part")


def test_sha_mismatch_deletes_download(server, tmp_path):
    part = _assert_fails(server, tmp_path, "/corrupt.bin", "sha256 .* does not match")
    assert not part.exists()


def test_truncated_keeps_only_part(server, tmp_path):
    part = _assert_fails(server, tmp_path, "/truncated.bin", "truncated", size=len(DATA))
    assert part.read_bytes() == DATA[: len(DATA) // 2]


def test_http_404(server, tmp_path):
    _assert_fails(server, tmp_path, "/missing.bin", "HTTP 404")


def test_redirect_loop(server, tmp_path):
    _assert_fails(server, tmp_path, "/loop", "too many redirects")


def test_stalled_server_times_out(server, tmp_path):
    part = _assert_fails(server, tmp_path, "/stall.bin", "stalled", timeout=0.5)
    assert part.read_bytes() == DATA[:1000]


def test_wrong_size_deletes_download(server, tmp_path):
    part = _assert_fails(server, tmp_path, "/good.bin", "expected 99", size=99)
    assert not part.exists()


def test_cli_download_unregistered(server, tmp_path):
    from typer.testing import CliRunner

    from simclr_watches.cli import app

    result = CliRunner().invoke(app, ["download", "--url", f"{server}/good.bin", "--sha256", SHA])
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path == weights.unregistered_path(f"{server}/good.bin", SHA)
    assert path.parent == tmp_path / "cache" / "unregistered" and path.name.endswith("-good.bin")
    assert path.read_bytes() == DATA
    bad = CliRunner().invoke(app, ["download", "--url", f"{server}/good.bin"])
    assert bad.exit_code == 2 and "sha256" in bad.output


@pytest.fixture
def tiny_checkpoint(tmp_path):
    import torch

    from simclr_watches.model import Encoder, default_preprocessing

    path = weights.save_encoder(tmp_path / "tiny.safetensors", Encoder("resnet18"), default_preprocessing("resnet18"),
                                dtype=torch.float16)
    return path, sha256_file(path)


@pytest.fixture
def register(use_registry):
    """``register(artifacts=None, **fields)``: a registry of one entry, ``tiny`` (resnet18)."""
    return lambda artifacts=None, **fields: use_registry({"tiny": {"arch": "resnet18", **fields}}, artifacts)


def test_load_model_by_name_after_download(server, tmp_path, register, tiny_checkpoint):
    src, sha = tiny_checkpoint
    server.files["/tiny.safetensors"] = src.read_bytes()
    register(sha256=sha, size=src.stat().st_size, url=f"{server}/tiny.safetensors")
    with pytest.raises(CheckpointError, match="run `simclr-watches download tiny`"):
        weights.load_model("tiny")
    assert weights.download("tiny", progress=False) == tmp_path / "cache" / "tiny.safetensors"
    _, info = weights.load_model("tiny")
    assert (info.id, info.sha256, info.arch) == ("tiny", sha, "resnet18")


def test_load_model_artifact_fallback_and_bad_cache(tmp_path, monkeypatch, register, tiny_checkpoint):
    src, sha = tiny_checkpoint
    monkeypatch.setenv("SIMCLR_WATCHES_HOME", str(tmp_path / "cache"))
    register(tmp_path, sha256=sha, size=src.stat().st_size, artifact=src.name)
    assert weights.load_model("tiny")[1].sha256 == sha
    with pytest.raises(CheckpointError, match=f"ships in the repository as artifacts/{src.name} and has no url"):
        weights.download("tiny", progress=False)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "tiny.safetensors").write_bytes(b"not weights")
    with pytest.raises(CheckpointError, match="tiny.safetensors: sha256 .* does not match"):
        weights.load_model("tiny")


def test_list_models_says_where_each_file_is(tmp_path, monkeypatch, use_registry, tiny_checkpoint):
    from simclr_watches.weights import loading

    src, sha = tiny_checkpoint
    monkeypatch.setenv("SIMCLR_WATCHES_HOME", str(tmp_path / "cache"))
    use_registry({"shipped": {"arch": "resnet18", "sha256": sha, "size": 1, "artifact": src.name},
                  "remote": {"arch": "resnet18", "sha256": sha, "size": 1, "url": "http://127.0.0.1:9/x"}}, src.parent)
    monkeypatch.setattr(loading, "DEFAULT_MODEL", "shipped")
    rows = {m["name"]: m for m in weights.list_models()}
    assert rows["shipped"]["status"] == "ready" and rows["shipped"]["file"] == str(src) and rows["shipped"]["default"]
    assert rows["remote"]["file"] is None and not rows["remote"]["default"]
    assert "run `simclr-watches download remote`" in rows["remote"]["status"]


# Issue 12: an unregistered download never replaces or shadows a registered file.


@pytest.mark.slow
def test_cli_unregistered_download_named_like_a_registered_file_leaves_it_alone(server, tmp_path, monkeypatch,
                                                                                 tiny_checkpoint):
    """A URL ending in the default model's file name once overwrote its verified cache copy."""
    from helpers import run_cli

    src, sha = tiny_checkpoint
    shipped, _ = weights.load_registry()[weights.DEFAULT_MODEL].members
    name = f"{shipped}.safetensors"
    server.files[f"/a/{name}"] = server.files[f"/b/{name}"] = src.read_bytes()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / name).write_bytes((weights.ARTIFACTS_DIR / name).read_bytes())  # a verified registered copy
    before = (cache / name).read_bytes()
    paths = []
    for mirror in ("a", "b"):
        proc = run_cli("download", "--url", f"{server}/{mirror}/{name}", "--sha256", sha, env={"SIMCLR_WATCHES_HOME": str(cache)})
        assert proc.returncode == 0, proc.stderr
        paths.append(Path(proc.stdout.strip()))
    assert paths[0] != paths[1] and all(p.parent == cache / "unregistered" and p.read_bytes() == src.read_bytes() for p in paths)
    assert (cache / name).read_bytes() == before
    _, info = weights.load_model()  # the default model still loads, verified
    assert info.id == weights.DEFAULT_MODEL


def test_registered_name_takes_a_mirror_but_not_another_digest(server, tmp_path, register, tiny_checkpoint):
    src, sha = tiny_checkpoint
    server.files["/mirror/tiny.safetensors"] = src.read_bytes()
    server.files["/other.safetensors"] = DATA
    register(sha256=sha, size=src.stat().st_size, artifact="tiny.safetensors")
    with pytest.raises(CheckpointError, match=f"tiny: --sha256 {SHA} is not the registered {sha}"):
        weights.download("tiny", url=f"{server}/other.safetensors", sha256=SHA, progress=False)
    with pytest.raises(CheckpointError, match="other.safetensors: .*; deleted the download"):  # a mirror serving other bytes
        weights.download("tiny", url=f"{server}/other.safetensors", progress=False)
    assert not (tmp_path / "cache" / "tiny.safetensors").exists()
    path = weights.download("tiny", url=f"{server}/mirror/tiny.safetensors", sha256=sha.upper(), progress=False)
    assert path == tmp_path / "cache" / "tiny.safetensors" and sha256_file(path) == sha


def test_unregistered_names_stay_inside_the_cache(server, tmp_path):
    for name, url in [("../../escape", f"{server}/good.bin"), (None, f"{server}/..%2F..%2Fx"), (None, f"{server}/")]:
        assert weights.unregistered_path(url, SHA, name).parent == tmp_path / "cache" / "unregistered"
    path = weights.download("../../escape", url=f"{server}/good.bin", sha256=SHA, progress=False)
    assert path.parent == tmp_path / "cache" / "unregistered" and path.name.endswith("escape.safetensors")
