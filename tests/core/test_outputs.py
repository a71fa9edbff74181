"""Outputs (issue 12): nothing a command writes may destroy data it did not write.

Every command checks its outputs before any work: an output may not equal, contain or
lie inside an input; ``--force`` replaces only what simclr-watches wrote and recognises;
anything else is refused with one line on stderr and exit code 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from simclr_watches.cli import app
from helpers import draw_watch

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "pretrain-cpu-tiny.toml"
runner = CliRunner()


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def _subprocess(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simclr_watches", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "80"})


def _refused(res, path, *words: str) -> str:
    """Asserts a one-line `error:` on stderr naming ``path``, exit code 2, no traceback; returns the line."""
    code = res.exit_code if hasattr(res, "exit_code") else res.returncode
    out = res.output if hasattr(res, "output") else res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert code == 2, out
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], res.stderr
    assert "Traceback" not in out
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (and of ``root`` itself if it is a file)."""
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _photos(root: Path, n: int = 3) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        draw_watch(i, 64).save(root / f"w{i}.png")
    return root


def _groups(root: Path) -> Path:
    for g in range(3):
        _photos(root / f"g{g}", 2)
    return root


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def photos(tmp_path) -> Path:
    return _photos(tmp_path / "photos")


@pytest.fixture
def index(photos, small_checkpoint, tmp_path) -> Path:
    res = _cli("build-index", photos, "--out", tmp_path / "idx", "--checkpoint", small_checkpoint, "--n-trees", 2)
    assert res.exit_code == 0, res.output
    return tmp_path / "idx"


# --- 1. --force never destroys what simclr-watches did not write -------------------------------------------


@pytest.mark.slow
def test_build_index_onto_its_own_catalog_is_refused_and_keeps_every_photo(photos, small_checkpoint):
    before = _tree(photos)
    res = _subprocess("build-index", photos, "--out", photos, "--force", "--checkpoint", small_checkpoint)
    _refused(res, photos, "is also an input")
    assert _tree(photos) == before


@pytest.mark.parametrize("where, words", [
    (lambda photos: photos / "idx", "lies inside the input"),
    (lambda photos: photos.parent, "contains the input"),
])
def test_build_index_inside_or_around_its_catalog_is_refused(photos, small_checkpoint, where, words):
    before = _tree(photos.parent)
    _refused(_cli("build-index", photos, "--out", where(photos), "--force", "--checkpoint", small_checkpoint),
             where(photos), words)
    assert _tree(photos.parent) == before


def _foreign_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    draw_watch(7).save(folder / "holiday.png")
    return folder


def _foreign_file(name: str):
    def make(tmp_path: Path) -> Path:
        path = tmp_path / name
        path.write_bytes(b"not written by simclr-watches")
        return path

    return make


def _foreign_png(tmp_path: Path) -> Path:
    path = tmp_path / "holiday.png"
    draw_watch(3).save(path)
    return path


# (command line with OUT for the output, what to put there); every one with --force.
FOREIGN_CASES = {
    "build-index folder": (["build-index", "{photos}", "--out", "{out}", "--checkpoint", "{ckpt}"], _foreign_folder),
    "build-index file": (["build-index", "{photos}", "--out", "{out}", "--checkpoint", "{ckpt}"], _foreign_file("notes")),
    "synth": (["synth", "{out}", "--n", "2", "--size", "32"], _foreign_folder),
    "pretrain": (["pretrain", "{photos}", "--out", "{out}", "--config", str(TINY), "--device", "cpu"], _foreign_folder),
    "evaluate": (["evaluate", "--protocol", "groups", "{groups}", "--methods", "hist", "--out", "{out}"], _foreign_folder),
    "evaluate --plot": (["evaluate", "--protocol", "groups", "{groups}", "--methods", "hist", "--out", "{tmp}/ev",
                         "--plot", "{out}"], _foreign_png),
    "evaluate --failures": (["evaluate", "--protocol", "groups", "{groups}", "--methods", "hist", "--out", "{tmp}/ev",
                             "--failures", "{out}"], _foreign_file("page.html")),
    "demo": (["demo", "--out", "{out}", "--n", "2", "--checkpoint", "{ckpt}"], _foreign_folder),
    "export": (["export", "{ckpt}", "--out", "{out}"], _foreign_file("model.safetensors")),
    "export description": (["export", "{ckpt}", "--out", "{tmp}/notes.safetensors"], _foreign_file("notes.json")),
    "search --sheet": (["search", "{photos}/w0.png", "--index", "{index}", "--sheet", "{out}"], _foreign_png),
    "search --sheet html": (["search", "{photos}/w0.png", "--index", "{index}", "--sheet", "{tmp}/page.png"],
                            _foreign_file("page.html")),
    "augment-preview": (["augment-preview", "{photos}", "--out", "{out}", "--config", str(TINY)], _foreign_png),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", FOREIGN_CASES)
def test_force_never_replaces_what_simclr_watches_did_not_write(case, tmp_path, photos, index, small_checkpoint):
    template, make = FOREIGN_CASES[case]
    out = make(tmp_path)
    before = _tree(out)
    values = {"photos": photos, "out": out, "ckpt": small_checkpoint, "groups": _groups(tmp_path / "data"),
              "index": index, "tmp": tmp_path}
    res = _cli(*[arg.format(**values) for arg in template], "--force")
    _refused(res, out, "not replaced, even with --force")
    assert _tree(out) == before
    assert not [p for p in tmp_path.iterdir() if ".old-" in p.name or ".tmp-" in p.name]


def test_without_force_a_foreign_folder_is_not_written_into(tmp_path):
    """synth used to add images/ and attributes.csv to any existing folder."""
    out = _foreign_folder(tmp_path)
    before = _tree(out)
    _refused(_cli("synth", out, "--n", "2", "--size", "32"), out, "not a synthetic catalog written by simclr-watches")
    assert _tree(out) == before


def test_index_is_replaced_only_with_force_and_an_empty_folder_is_used(photos, small_checkpoint, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    args = ["build-index", photos, "--out", out, "--checkpoint", small_checkpoint, "--n-trees", 2]
    assert _cli(*args).exit_code == 0 and (out / "index.json").is_file()
    _refused(_cli(*args), out, "already exists; use --force")
    draw_watch(5, 64).save(photos / "w5.png")
    assert _cli(*args, "--force").exit_code == 0
    assert json.loads((out / "index.json").read_text())["count"] == 4


def test_an_index_with_a_foreign_file_added_is_not_replaced(index, photos, small_checkpoint):
    (index / "my-notes.txt").write_text("keep me")
    _refused(_cli("build-index", photos, "--out", index, "--force", "--checkpoint", small_checkpoint), index,
             "not an index folder")
    assert (index / "my-notes.txt").read_text() == "keep me"


def test_synth_replaces_its_own_catalog_with_force(tmp_path):
    out = tmp_path / "cat"
    assert _cli("synth", out, "--n", "3", "--size", "32").exit_code == 0
    _refused(_cli("synth", out, "--n", "2", "--size", "32"), out, "already exists; use --force")
    assert _cli("synth", out, "--n", "2", "--size", "32", "--force").exit_code == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["00000.png", "00001.png"]


@pytest.mark.slow
def test_search_sheet_is_marked_and_replaced_only_with_force(photos, index, tmp_path):
    sheet = tmp_path / "s.png"
    args = ["search", photos / "w0.png", "--index", index, "--sheet", sheet, "-k", 2]
    assert _cli(*args).exit_code == 0
    assert Image.open(sheet).info.get("Software") == "simclr-watches"
    assert '<meta name="generator" content="simclr-watches">' in sheet.with_suffix(".html").read_text()
    _refused(_cli(*args), sheet, "already exists; use --force")
    assert _cli(*args, "--force").exit_code == 0


def test_augment_preview_is_replaced_only_with_force_and_never_written_into_the_catalog(photos, tmp_path):
    out = tmp_path / "grid.png"
    args = ["augment-preview", photos, "--config", TINY, "-n", 2, "--out"]
    assert _cli(*args, out).exit_code == 0
    _refused(_cli(*args, out), out, "already exists; use --force")
    assert _cli(*args, out, "--force").exit_code == 0
    _refused(_cli(*args, photos / "grid.png"), photos / "grid.png", "lies inside the input")
    assert not (photos / "grid.png").exists()


def test_evaluate_outputs_are_replaced_only_with_force(tmp_path):
    data, out = _groups(tmp_path / "data"), tmp_path / "ev"
    args = ["evaluate", "--protocol", "groups", data, "--methods", "hist", "--out", out, "--failures", out / "f.html"]
    assert _cli(*args).exit_code == 0
    assert json.loads((out / "results.json").read_text())["format"] == "simclr-watches-evaluation"
    _refused(_cli(*args), out, "already exists; use --force")
    res = _cli(*args, "--force")
    assert res.exit_code == 0, res.output
    _refused(_cli("evaluate", "--protocol", "groups", data, "--methods", "hist", "--out", data / "g0", "--force"),
             data / "g0", "lies inside the input")


@pytest.mark.slow
def test_pretrain_force_starts_a_recognised_run_afresh(tmp_path, umask_022):
    photos, run = _photos(tmp_path / "photos", 6), tmp_path / "run"
    args = ["pretrain", photos, "--config", TINY, "--out", run, "--device", "cpu"]
    assert _cli(*args).exit_code == 0
    _refused(_cli(*args), run, "already holds a run", "--force")
    _refused(_cli(*args, "--resume", "--force"), run, "give one of them")
    res = _cli(*args, "--force", "--set", "train.epochs=1")
    assert res.exit_code == 0, res.output
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert stat.S_IMODE((run / "encoder.safetensors").stat().st_mode) == 0o644  # 0666 & ~022, not 0600
    _refused(_cli("pretrain", photos, "--config", TINY, "--out", photos / "run"), photos / "run", "lies inside")


def test_export_gets_the_normal_mode_and_is_replaced_only_with_force(small_checkpoint, tmp_path, umask_022):
    out = tmp_path / "m.safetensors"
    assert _cli("export", small_checkpoint, "--out", out).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o644 and stat.S_IMODE(out.with_suffix(".json").stat().st_mode) == 0o644
    _refused(_cli("export", small_checkpoint, "--out", out), out, "already exists; use --force")
    assert _cli("export", small_checkpoint, "--out", out, "--force").exit_code == 0


def test_export_never_writes_over_its_input(small_checkpoint, tmp_path):
    src = tmp_path / "m.safetensors"
    src.write_bytes(small_checkpoint.read_bytes())
    before = _tree(tmp_path)
    _refused(_cli("export", src, "--out", src, "--force"), src, "is also an input")
    # A source not named .safetensors: the output's description would be the source's own.
    other = tmp_path / "w.bin"
    other.write_bytes(small_checkpoint.read_bytes())
    assert _cli("export", small_checkpoint, "--out", tmp_path / "w.safetensors").exit_code == 0
    (tmp_path / "w.safetensors").rename(tmp_path / "keep.safetensors")
    described = _tree(tmp_path / "w.json")
    _refused(_cli("export", other, "--out", tmp_path / "w.safetensors", "--force"), tmp_path / "w.json", "is also an input")
    assert _tree(tmp_path / "w.json") == described
    # The output's description is the source itself.
    named_json = tmp_path / "c.json"
    named_json.write_bytes(small_checkpoint.read_bytes())
    _refused(_cli("export", named_json, "--out", tmp_path / "c.safetensors", "--force"), named_json, "is also an input")
    # ... or the metrics file.
    (tmp_path / "e.json").write_text('{"R@1": 0.5}')
    _refused(_cli("export", src, "--out", tmp_path / "e.safetensors", "--metrics", tmp_path / "e.json", "--force"),
             tmp_path / "e.json", "is also an input")
    assert _tree(src) == {".": before["m.safetensors"]} and (tmp_path / "e.json").read_text() == '{"R@1": 0.5}'


def test_demo_refuses_a_given_catalog_inside_its_folder(photos, small_checkpoint):
    before = _tree(photos.parent)
    _refused(_cli("demo", "--out", photos.parent, "--catalog", photos, "--checkpoint", small_checkpoint, "--force"),
             photos.parent, "contains the input")
    assert _tree(photos.parent) == before


@pytest.mark.slow
def test_the_makefile_demo_runs_twice(small_checkpoint, tmp_path):
    recipe = (REPO / "Makefile").read_text().split("\ndemo:", 1)[1].splitlines()[1]
    args = recipe.split("simclr-watches", 1)[1].split()
    out = ["--out", tmp_path / "demo", "--n", 3, "--checkpoint", small_checkpoint]
    for _ in range(2):
        res = _cli(*args, *out)
        assert res.exit_code == 0, res.output
    assert (tmp_path / "demo" / "sheet.png").is_file()


# --- 2. outputs are checked before any work ---------------------------------------------------------------


@pytest.mark.slow
def test_sheet_in_proc_fails_before_the_search_in_one_line(photos, index):
    res = _subprocess("search", photos / "w0.png", "--index", index, "--sheet", "/proc/x.png")
    _refused(res, "/proc/x.png", "cannot write")
    assert res.stdout == ""  # no result was printed: the search did not run


@pytest.mark.parametrize("sheet, words", [
    ("/proc/x.png", "cannot write in /proc"),
    ("{tmp}/s.jpg", "is a .png file"),
    ("{photos}/w1.png/s.png", "is not a folder"),
    ("{index}/s.png", "lies inside the input"),
    ("{photos}/w0.png", "is also an input"),
])
def test_sheet_paths_are_checked_before_any_work(sheet, words, photos, index, tmp_path, monkeypatch):
    import simclr_watches.retrieval.search as search_mod

    def no_search(*a, **k):
        raise AssertionError("the search ran before the sheet path was checked")

    monkeypatch.setattr(search_mod, "Searcher", no_search)
    sheet = sheet.format(tmp=tmp_path, photos=photos, index=index)
    _refused(_cli("search", photos / "w0.png", "--index", index, "--sheet", sheet), sheet, words)


@pytest.mark.parametrize("option, path, words", [
    ("--failures", "/proc/f.html", "cannot write in /proc"),
    ("--plot", "{tmp}/plot.jpg", "must be a .png"),
    ("--out", "/proc/ev", "cannot write in /proc"),
])
def test_evaluate_outputs_are_checked_before_any_work(option, path, words, tmp_path, monkeypatch):
    import simclr_watches.evaluation.method_names as method_names

    def no_methods(*a, **k):
        raise AssertionError("methods were loaded before the outputs were checked")

    monkeypatch.setattr(method_names, "parse_methods", no_methods)
    path = path.format(tmp=tmp_path)
    _refused(_cli("evaluate", "--protocol", "groups", _groups(tmp_path / "data"), "--out", tmp_path / "ev",
                  option, path), path, words)


# --- the rules themselves, and a seeded fuzz of foreign folder contents -----------------------------------


def test_check_disjoint(tmp_path):
    from simclr_watches.core.outputs import OutputError, check_disjoint

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    for out, inp, words in [("a", "a", "is also an input"), ("a/b/c", "a", "lies inside the input"),
                            ("a", "a/b", "contains the input"), ("link/b", "a/b", "is also an input")]:
        with pytest.raises(OutputError, match=words):
            check_disjoint(tmp_path / out, [None, tmp_path / inp])
    check_disjoint(tmp_path / "ab", [tmp_path / "a"])  # a shared name prefix is not containment


def test_prepare_output_rules(tmp_path):
    from simclr_watches.core.outputs import PNG, OutputError, png_info, prepare_output
    from simclr_watches.data.synth import SYNTH_OUTPUT

    assert prepare_output(tmp_path / "new" / "x.png", PNG) is False and not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    assert prepare_output(tmp_path / "empty", SYNTH_OUTPUT) is True
    draw_watch(1).save(tmp_path / "ours.png", pnginfo=png_info())
    with pytest.raises(OutputError, match="already exists; use --force"):
        prepare_output(tmp_path / "ours.png", PNG)
    assert prepare_output(tmp_path / "ours.png", PNG, force=True) is True
    (tmp_path / "link.png").symlink_to(tmp_path / "ours.png")
    with pytest.raises(OutputError, match="is a symbolic link"):
        prepare_output(tmp_path / "link.png", PNG, force=True)
    (tmp_path / "d.png").mkdir()
    with pytest.raises(OutputError, match="is a folder, not a PNG image"):
        prepare_output(tmp_path / "d.png", PNG, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png", "empty", "link.png", "ours.png"]  # probes removed


def test_an_interrupted_output_of_ours_is_still_recognised(tmp_path):
    """What a killed command leaves (its marker, a temporary) can be replaced with --force."""
    from simclr_watches.evaluation.report import EVAL_OUTPUT
    from simclr_watches.core.outputs import OutputError, prepare_output
    from simclr_watches.train.run import RUN_OUTPUT

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1, "loss": 2.0}\n')
    (run / ".checkpoint.pt.tmp-4194305-0123abcd").write_bytes(b"PK half")
    ev = tmp_path / "ev"
    (ev / "simulated" / "mild").mkdir(parents=True)
    for folder, kind in ((run, RUN_OUTPUT), (ev, EVAL_OUTPUT)):
        with pytest.raises(OutputError, match="--force"):
            prepare_output(folder, kind)
        assert prepare_output(folder, kind, force=True) is True


def _kinds():
    from simclr_watches.demo import DEMO_OUTPUT
    from simclr_watches.evaluation.report import EVAL_OUTPUT
    from simclr_watches.retrieval.index import INDEX_OUTPUT
    from simclr_watches.train.run import RUN_OUTPUT
    from simclr_watches.data.synth import SYNTH_OUTPUT

    return [INDEX_OUTPUT, RUN_OUTPUT, DEMO_OUTPUT, EVAL_OUTPUT, SYNTH_OUTPUT]


OUR_NAMES = ["index.json", "index.ann", "embeddings.npy", "checkpoint.pt", "encoder.safetensors", "metrics.jsonl",
             "demo.json", "catalog", "index", "query.jpg", "sheet.png", "sheet.html", "results.json", "results.md",
             "recall_at_k.png", "simulated", "attributes.csv", "images"]
MARKERS = [b'{"format": "simclr-watches-index"', b'{"format": "simclr-watches-demo"}', b'{"epoch": 1}\n',
           b'{"format": "simclr-watches-evaluation"}', b"path,shape,case_color,dial_color,strap_type,strap_color\n",
           b"\x89PNG\r\n\x1a\n", b"PK\x03\x04", b'<meta name="generator" content="simclr-watches">', b""]


def test_fuzz_foreign_folders_are_never_replaced(tmp_path):
    """Random folders of our names with random or marker-like contents, plus one foreign entry, are refused."""
    from simclr_watches.core.outputs import OutputError, prepare_output

    rng = random.Random(12)
    kinds = _kinds()
    for trial in range(150):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        for name in rng.sample(OUR_NAMES, rng.randint(0, 6)):
            if rng.random() < 0.2:
                (folder / name).mkdir()
            else:
                (folder / name).write_bytes(rng.choice(MARKERS) + rng.randbytes(rng.randint(0, 64)))
        foreign = folder / rng.choice(["notes.txt", "photo.jpg", ".hidden", "data", "index.json.bak", ".x.tmp-1-zz"])
        foreign.write_bytes(rng.randbytes(rng.randint(0, 64)))
        before = _tree(folder)
        for kind in kinds:
            with pytest.raises(OutputError, match="not replaced, even with --force"):
                prepare_output(folder, kind, force=True)
        assert _tree(folder) == before
