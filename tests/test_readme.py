"""README.md's "Python API" example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import draw_watch

README = Path(__file__).resolve().parent.parent / "README.md"


def python_api_example() -> str:
    """The first ```python block of README.md's "## Python API" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)
    assert blocks, "README.md's Python API section has no python code block"
    return blocks[0]


def _run_example(folder: Path, make_catalog, monkeypatch, capsys) -> str:
    make_catalog(5, subdir="catalog")
    draw_watch(3, size=128).rotate(10, fillcolor=(255, 255, 255)).save(folder / "photo.jpg")
    monkeypatch.chdir(folder)
    exec(compile(python_api_example(), str(README), "exec"), {"__name__": "readme_example"})
    return capsys.readouterr().out


def test_the_python_api_example_runs(tmp_path, make_catalog, small_checkpoint, monkeypatch, capsys):
    """The example as written; only the default model is swapped for the small test checkpoint."""
    import simclr_watches.weights.loading as loading

    monkeypatch.setattr(loading, "DEFAULT_MODEL", str(small_checkpoint))
    out = _run_example(tmp_path, make_catalog, monkeypatch, capsys).splitlines()
    assert (tmp_path / "my-index" / "index.json").is_file()
    assert re.fullmatch(r"watch found at \[\d+, \d+, \d+, \d+\]", out[0]), out
    hits = out[1:6]
    assert [h.split()[0] for h in hits] == ["1", "2", "3", "4", "5"]
    assert all(h.split()[2].isdigit() and h.split()[3].startswith(str(tmp_path / "catalog")) for h in hits)
    assert [line.split(" -> ")[0] for line in out[6:9]] == [str(Path("catalog") / f"w{i:03d}.png") for i in range(3)]
    # Each catalog image finds itself.
    assert all(line.endswith(str(tmp_path / "catalog" / f"w{i:03d}.png")) for i, line in enumerate(out[6:9]))
    assert out[9] == f"{small_checkpoint} (1, 512)"


@pytest.mark.slow
def test_the_python_api_example_runs_with_the_shipped_model(tmp_path, make_catalog, monkeypatch, capsys):
    out = _run_example(tmp_path, make_catalog, monkeypatch, capsys).splitlines()
    assert out[1].split()[3].endswith("w003.png"), out  # the photo shows catalog watch 3
    assert out[-1] == "watches-lite0-v1-ens-attr-ms2 (1, 2672)"
