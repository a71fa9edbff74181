import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from simclr_watches.cli import app

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_build_index_then_search_json(make_catalog, small_checkpoint, tmp_path):
    root = make_catalog(4)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    res = _run("build-index", root, "--out", tmp_path / "idx", "--checkpoint", small_checkpoint, "--n-trees", 3)
    assert res.exit_code == 0, res.output
    assert "corrupt.png" in res.stderr and "indexed 4 images" in res.stderr and "skipped 1" in res.stderr

    query = root / "w002.png"
    res = _run("search", query, root / "corrupt.png", "--index", tmp_path / "idx", "--json", "-k", 2)
    assert res.exit_code == 1  # one query failed, the other was answered
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert set(obj) == {"query", "box", "results"} and obj["query"] == str(query)
    x0, y0, x1, y1 = obj["box"]
    assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
    assert obj["results"][0] == {"rank": 1, "id": 2, "path": str(query.resolve()), "score": pytest.approx(1.0, abs=1e-4)}
    assert set(obj["results"][1]) == {"rank", "id", "path", "score"}
    assert "corrupt.png" in res.stderr and "1 of 2 queries failed" in res.stderr


def test_no_localize_gives_the_plain_json_contract(make_catalog, small_checkpoint, tmp_path):
    root = make_catalog(3)
    _run("build-index", root, "--out", tmp_path / "idx", "--checkpoint", small_checkpoint)
    res = _run("search", root / "w001.png", "--index", tmp_path / "idx", "--json", "--no-localize")
    obj = json.loads(res.stdout)
    assert res.exit_code == 0 and set(obj) == {"query", "results"} and len(obj["results"]) == 3
    assert obj["results"][0]["path"] == str((root / "w001.png").resolve()) and obj["results"][0]["score"] > 0.999


@pytest.mark.slow
def test_table_output_and_folder_queries(make_catalog, small_checkpoint, tmp_path):
    root = make_catalog(3)
    assert _run("build-index", root, "-o", tmp_path / "idx", "--checkpoint", small_checkpoint).exit_code == 0
    res = _run("search", root, "--index", tmp_path / "idx", "-k", 1)
    assert res.exit_code == 0
    for name in ("w000.png", "w001.png", "w002.png"):
        assert name in res.stdout
    assert "rank" in res.stdout and "score" in res.stdout


def test_user_errors_are_one_line_exit_2(tmp_path, small_checkpoint, make_catalog):
    (tmp_path / "empty").mkdir()
    res = _run("build-index", tmp_path / "empty", "--out", tmp_path / "idx", "--checkpoint", small_checkpoint)
    assert res.exit_code == 2 and "no image files" in res.stderr and "Traceback" not in res.output
    res = _run("search", tmp_path / "q.png", "--index", tmp_path / "nope")
    assert res.exit_code == 2 and "no such index folder" in res.stderr
    res = _run("build-index", make_catalog(1), "--out", tmp_path / "idx", "--checkpoint", "no-such-model")
    assert res.exit_code == 2 and "no-such-model: neither a checkpoint file nor a registered model" in res.stderr


def test_info_describes_index_and_checkpoint(make_catalog, small_checkpoint, tmp_path):
    _run("build-index", make_catalog(2), "-o", tmp_path / "idx", "--checkpoint", small_checkpoint)
    info = json.loads(_run("info", tmp_path / "idx").stdout)
    assert info["count"] == 2 and info["dim"] == 512 and "items" not in info
    assert json.loads(_run("info", small_checkpoint).stdout)["arch"] == "resnet18"


@pytest.mark.slow
def test_real_process_json_stdout_is_clean(make_catalog, small_checkpoint, tmp_path):
    root = make_catalog(3)
    cmd = [sys.executable, "-m", "simclr_watches"]
    subprocess.run(cmd + ["build-index", str(root), "--out", str(tmp_path / "idx"), "--checkpoint", str(small_checkpoint)],
                   check=True, capture_output=True)
    out = subprocess.run(cmd + ["search", str(root / "w000.png"), "--index", str(tmp_path / "idx"), "--json"],
                         check=True, capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"})
    assert [json.loads(line)["query"] for line in out.stdout.splitlines()] == [str(root / "w000.png")]


def test_export_prints_the_registry_fields(small_checkpoint, tmp_path):
    res = _run("export", small_checkpoint, "--out", tmp_path / "m.safetensors")
    assert res.exit_code == 0, res.output
    desc = json.loads(res.stdout)
    assert desc["file"] == "m.safetensors" and desc["arch"] == "resnet18" and desc["size"] > 0
    (tmp_path / "bad.json").write_text("{nope")
    res = _run("export", small_checkpoint, "--out", tmp_path / "n.safetensors", "--metrics", tmp_path / "bad.json")
    assert res.exit_code == 2 and "bad.json: not a readable JSON file" in res.stderr
    assert not (tmp_path / "n.safetensors").exists()


def test_models_lists_the_registry_and_the_default():
    from simclr_watches.weights import DEFAULT_MODEL

    res = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert f"{DEFAULT_MODEL} (default)" in res.stdout and "efficientnet_lite0-imagenet" in res.stdout
