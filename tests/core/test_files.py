"""Reading user files: regular files only (a FIFO is refused, never waited on), bounded, hashed."""

from __future__ import annotations

import hashlib
import os
import signal

import pytest

from helpers import deadline
from simclr_watches.core.errors import FileReadError
from simclr_watches.core.files import open_in_folder, open_regular, read_json, read_limited, sha256_file
from simclr_watches.core.outputs import read_prefix, try_read_json_object

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo") or not hasattr(signal, "SIGALRM"), reason="POSIX only")


@needs_fifo
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "marker.json"
    os.mkfifo(fifo)
    with deadline(10):
        with pytest.raises(FileReadError, match="a FIFO"):
            open_regular(fifo)
        with pytest.raises(FileReadError, match="a FIFO"):
            read_limited(fifo, 100)
        assert read_prefix(fifo) == b""
        assert try_read_json_object(fifo) is None


def test_try_read_json_object_answers_none_for_anything_but_a_json_object(tmp_path):
    cases = {"ok.json": b'{"format": "x"}', "list.json": b"[1]", "bad.json": b"{", "latin1.json": b'{"a": "\xe9"}'}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    assert try_read_json_object(tmp_path / "ok.json") == {"format": "x"}
    assert [try_read_json_object(tmp_path / n) for n in ("list.json", "bad.json", "latin1.json", "missing.json")] == [None] * 4
    assert try_read_json_object(tmp_path) is None
    with pytest.raises(FileReadError, match="bad.json: not a readable JSON file"):
        read_json(tmp_path / "bad.json")  # the raising reader, for files a user hands in


def test_sha256_file(tmp_path):
    data = os.urandom(3 << 20)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == sha256_file(tmp_path / "f", chunk=4096) == hashlib.sha256(data).hexdigest()


@needs_fifo
def test_a_fifo_where_an_output_goes_is_refused_not_waited_on(tmp_path):
    """A FIFO named like one of our files is foreign: the marker tests must not block reading it."""
    from simclr_watches.core.outputs import PNG, OutputError, prepare_output
    from simclr_watches.retrieval.index import INDEX_OUTPUT
    from simclr_watches.weights import DESCRIPTION_OUTPUT

    (tmp_path / "idx").mkdir()
    for fifo in (tmp_path / "idx" / "index.json", tmp_path / "m.json", tmp_path / "sheet.png"):
        os.mkfifo(fifo)
    with deadline(20):
        for path, kind in ((tmp_path / "idx", INDEX_OUTPUT), (tmp_path / "m.json", DESCRIPTION_OUTPUT),
                           (tmp_path / "sheet.png", PNG)):
            with pytest.raises(OutputError, match="not replaced, even with --force"):
                prepare_output(path, kind, force=True)


def test_open_in_folder_opens_or_creates_a_regular_file_and_never_follows_a_link(tmp_path):
    def error(path, why):
        return FileReadError(path, why)

    fd = open_in_folder(tmp_path, "new.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, error)
    os.write(fd, b"line\n")
    os.close(fd)
    assert (tmp_path / "new.txt").read_bytes() == b"line\n"
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "link.txt").symlink_to(victim)
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "nowhere")
    for name in ("link.txt", "dangling.txt"):
        with pytest.raises(FileReadError, match=rf"{name}: a symbolic link, not a file \(refused\)"):
            open_in_folder(tmp_path, name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, error)
    assert victim.read_text() == "precious" and not (tmp_path / "nowhere").exists()
    os.mkfifo(tmp_path / "fifo")
    with deadline(10), pytest.raises(FileReadError, match="fifo: a FIFO"):
        open_in_folder(tmp_path, "fifo", os.O_RDONLY, error)
    with pytest.raises(FileNotFoundError):
        open_in_folder(tmp_path, "missing", os.O_RDONLY, error)
    dir_fd = os.open(tmp_path, os.O_RDONLY)
    try:
        fd = open_in_folder(tmp_path, "new.txt", os.O_RDONLY, error, dir_fd=dir_fd)
        assert os.read(fd, 10) == b"line\n"
        os.close(fd)
    finally:
        os.close(dir_fd)
