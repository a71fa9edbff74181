"""The CLI's error contract (issue 12): a user error or an OSError is one line naming the file, exit 2."""

from __future__ import annotations

import errno

import pytest
from typer.testing import CliRunner

from helpers import assert_user_error, run_cli
from simclr_watches import weights
from simclr_watches.cli import app


@pytest.mark.slow
def test_cli_a_folder_where_a_file_is_written_is_one_line(small_checkpoint, tmp_path):
    (tmp_path / "m.safetensors").mkdir()
    line = assert_user_error(run_cli("export", small_checkpoint, "--out", tmp_path / "m.safetensors"), "is a folder")
    assert str(tmp_path / "m.safetensors") in line


def test_disk_full_is_one_line_naming_the_file(monkeypatch, tmp_path):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out.safetensors"))

    monkeypatch.setattr(weights, "export_encoder", full)
    res = CliRunner().invoke(app, ["export", str(tmp_path / "in.safetensors"), "--out", str(tmp_path / "out.safetensors")])
    assert res.exit_code == 2
    assert res.stderr == f"error: {tmp_path / 'out.safetensors'}: No space left on device\n"


def test_other_exceptions_are_bugs_and_keep_their_traceback(monkeypatch, tmp_path):
    def bug(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(weights, "export_encoder", bug)
    res = CliRunner().invoke(app, ["export", str(tmp_path / "in.safetensors"), "--out", str(tmp_path / "o.safetensors")])
    assert res.exit_code == 1 and isinstance(res.exception, KeyError)


@pytest.mark.parametrize("message", ["first line\n  second line", "a [bold]path[/bold] and [/x]"])
def test_messages_print_as_one_literal_line(monkeypatch, message, tmp_path):
    from simclr_watches.core.errors import SimclrWatchesError

    def fail(*args, **kwargs):
        raise SimclrWatchesError(message)

    monkeypatch.setattr(weights, "export_encoder", fail)
    res = CliRunner().invoke(app, ["export", str(tmp_path / "in.safetensors"), "--out", str(tmp_path / "o.safetensors")])
    assert res.exit_code == 2 and res.stderr == f"error: {' '.join(p.strip() for p in message.splitlines())}\n"


@pytest.mark.slow
def test_cli_skipped_file_whose_path_looks_like_markup(make_catalog, small_checkpoint, tmp_path):
    """A catalog path holding '[/x]' was parsed as rich markup and crashed build-index after the index was written."""
    root = make_catalog(2)
    (root / "[").mkdir()
    (root / "[" / "x].png").write_bytes(b"not a png")
    proc = run_cli("build-index", root, "--out", tmp_path / "idx", "--checkpoint", small_checkpoint, "--n-trees", 2)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"skipped {root}/[/x].png: not an image" in proc.stderr


@pytest.mark.slow
def test_cli_notes_print_paths_that_look_like_markup_literally(make_catalog, small_checkpoint, tmp_path):
    """The index folder's name is printed in the closing note: '[/x]' in it must not be read as rich markup."""
    root = make_catalog(2)
    out = tmp_path / "idx[/x]"
    proc = run_cli("build-index", root, "--out", out, "--checkpoint", small_checkpoint, "--n-trees", 2)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"into {out}" in proc.stderr
