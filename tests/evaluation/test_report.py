"""Reports: tables, plot, failures page and results files; the evaluate command end to end."""

from __future__ import annotations

import json
import sys

from PIL import Image
from typer.testing import CliRunner

from helpers import groups_folder
from simclr_watches.cli import app
from simclr_watches.evaluation.method_names import parse_methods
from simclr_watches.evaluation.protocols import groups_task
from simclr_watches.evaluation.report import attributes_markdown, ranking_markdown
from simclr_watches.evaluation.runner import run

EVAL_EXTRA = 'pip install "simclr-watches[eval]"'


def test_ranking_markdown_is_a_table_per_task_with_its_protocol_columns(tmp_path):
    report = run("groups", [groups_task(groups_folder(tmp_path / "data"))], parse_methods("hist,thumb"), "data")
    lines = ranking_markdown(report).splitlines()
    assert lines[:4] == ["**groups** (8 queries, gallery 9)", "", "| method | R@1 | R@5 | R@10 | mAP@10 | MRR | N-S | s |",
                         "|---|---|---|---|---|---|---|---|"]
    assert lines[4].startswith("| hist | 1.000 | 1.000 | 1.000 |") and lines[5].startswith("| thumb | ")
    assert len(lines) == 6


def test_attributes_markdown_has_a_chance_row():
    res = {"k": 3, "queries": 4, "attributes": ["colour", "shape"], "methods": {"hist": {"colour": 0.5, "shape": 0.25}},
           "chance": {"colour": 0.125, "shape": 0.0}}
    assert attributes_markdown(res) == ("**attributes** (4 queries, share of top-3 agreeing)\n\n| method | colour | shape |\n"
                                        "|---|---|---|\n| hist | 0.500 | 0.250 |\n| chance | 0.125 | 0.000 |\n")


def test_evaluate_command_end_to_end(tmp_path):
    root = groups_folder(tmp_path / "data")
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "--protocol", "photo", str(root), "--methods", "hist,thumb",
                              "--severities", "mild,hard", "--out", str(out), "--failures", str(out / "f.html")])
    assert res.exit_code == 0, res.output
    assert "photo/mild" in res.output and "| hist |" in res.output
    payload = json.loads((out / "results.json").read_text())
    metrics = payload["tasks"]["photo/hard"]["methods"]["thumb"]
    assert payload["tasks"]["photo/hard"]["queries"] == 5
    assert 0.0 <= metrics["R@1"] <= metrics["R@5"] <= metrics["R@10"] <= 1.0
    assert (out / "results.md").read_text().startswith("**photo/mild**")
    assert Image.open(out / "recall_at_k.png").size[0] > 0
    assert (out / "f.html").read_text().count("data:image/jpeg;base64,") > 5

    bad = runner.invoke(app, ["evaluate", "--protocol", "groups", str(root), "--methods", "nope"])
    assert bad.exit_code == 2 and "unknown method 'nope'" in bad.output


def test_evaluate_without_matplotlib_skips_the_plot_with_a_note(tmp_path, monkeypatch):
    """A plain install (no eval extra) used to compute everything, then die with ModuleNotFoundError."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["evaluate", "--protocol", "groups", str(groups_folder(tmp_path / "data")),
                                   "--methods", "hist", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"plot skipped: matplotlib is not installed ({EVAL_EXTRA} draws it)" in res.stderr.splitlines()
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md"]
    assert "| hist | 1.000 |" in res.stdout


def test_phash_without_imagehash_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imagehash", None)  # import imagehash now fails
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["evaluate", "--protocol", "groups", str(groups_folder(tmp_path / "data")),
                                   "--methods", "hist,phash", "--out", str(out)])
    assert res.exit_code == 2
    assert res.stderr == f"error: method phash needs imagehash, which is not installed: {EVAL_EXTRA}\n"
    assert res.stdout == "" and not out.exists()  # hist did not run first
