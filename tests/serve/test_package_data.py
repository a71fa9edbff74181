"""The page ships in the wheel (pyproject package-data) and is found from an installed package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import simclr_watches
from simclr_watches.serve.app import PAGE, page_html

REPO = Path(simclr_watches.__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_holds_the_page(tmp_path):
    src = tmp_path / "src"  # a copy: building writes build/ and egg-info next to the sources
    shutil.copytree(REPO / "simclr_watches", src / "simclr_watches", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("simclr_watches-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read(f"simclr_watches/serve/{PAGE}") == page_html()


def test_the_page_is_read_as_package_data():
    assert page_html() == (REPO / "simclr_watches" / "serve" / PAGE).read_bytes()
    assert page_html().startswith(b"<!doctype html>")
