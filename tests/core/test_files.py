"""Reading user files: regular files only (a FIFO is refused, never waited on), bounded, hashed."""

from __future__ import annotations

import hashlib
import os
import signal

import pytest

from helpers import deadline
from simclr_watches.core.errors import FileReadError
from simclr_watches.core.files import open_regular, read_json, read_limited, sha256_file
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
