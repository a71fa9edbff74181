"""Synthetic watch catalog: determinism, attribute coverage, CSV, and where the watch sits."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simclr_watches.data.synth import (
    CASE_COLORS, CSV_COLUMNS, SHAPES, STRAP_TYPES, WatchAttributes, make_catalog, render_watch, sample_attributes,
)

BASE = WatchAttributes(shape="round", case_color="silver", dial_color="black", strap_type="leather",
                       strap_color="brown", strap_width=0.6)


def _pixels(attrs: WatchAttributes, size: int = 96, seed: int = 0) -> np.ndarray:
    return np.asarray(render_watch(attrs, size, seed), dtype=np.int16)


def test_render_is_deterministic_and_sized():
    img = render_watch(BASE, 96, seed=3)
    assert img.size == (96, 96) and img.mode == "RGB"
    assert np.array_equal(_pixels(BASE, seed=3), _pixels(BASE, seed=3))


@pytest.mark.parametrize("change", [
    {"shape": "square"}, {"shape": "tonneau"}, {"shape": "cushion"}, {"case_color": "gold"},
    {"dial_color": "blue"}, {"strap_type": "metal", "strap_color": "silver"}, {"strap_type": "cord"},
    {"strap_color": "tan"}, {"strap_width": 0.4}, {"bezel": "diver"}, {"indices": "numerals"},
])
def test_each_attribute_changes_the_image(change):
    diff = np.abs(_pixels(BASE) - _pixels(dataclasses.replace(BASE, **change)))
    assert diff.max(axis=2).astype(bool).mean() > 0.005, change


def test_sampling_reaches_every_shape_and_strap_type():
    rng = np.random.default_rng(0)
    drawn = [sample_attributes(rng) for _ in range(200)]
    assert {a.shape for a in drawn} == set(SHAPES)
    assert {a.strap_type for a in drawn} == set(STRAP_TYPES)
    assert {a.case_color for a in drawn} == set(CASE_COLORS)
    for a in drawn:
        if a.strap_type in ("metal", "mesh"):
            assert a.strap_color == a.case_color


@pytest.mark.parametrize("shape", SHAPES)
def test_watch_is_centred_on_white(shape):
    attrs = dataclasses.replace(BASE, shape=shape, case_color="black")
    px = _pixels(attrs, size=128)
    h = px.shape[0]
    corners = [px[:8, :8], px[:8, -8:], px[-8:, :8], px[-8:, -8:]]
    assert all(c.min() >= 250 for c in corners)
    fg = np.argwhere(px.min(axis=2) < 200)
    top, left = fg.min(axis=0)
    bottom, right = fg.max(axis=0)
    assert abs((left + right) / 2 - h / 2) < h * 0.06 and abs((top + bottom) / 2 - h / 2) < h * 0.06
    assert (px[h // 2 - 10:h // 2 + 10, h // 2 - 10:h // 2 + 10].min(axis=2) < 200).mean() > 0.5


def _read(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_catalog_csv_matches_files_and_is_reproducible(tmp_path):
    csv_path = make_catalog(tmp_path / "a", n=6, seed=7, size=64, progress=False)
    rows = _read(csv_path)
    assert tuple(rows[0]) == CSV_COLUMNS
    files = sorted(p.relative_to(csv_path.parent).as_posix() for p in (csv_path.parent / "images").iterdir())
    assert [r["path"] for r in rows] == files and len(files) == 6
    for r in rows:
        assert Image.open(csv_path.parent / r["path"]).size == (64, 64)
        assert r["shape"] in SHAPES and r["strap_type"] in STRAP_TYPES and r["case_color"] in CASE_COLORS
    again = make_catalog(tmp_path / "b", n=6, seed=7, size=64, progress=False)
    assert _read(again) == rows
    for r in rows:
        assert (csv_path.parent / r["path"]).read_bytes() == (again.parent / r["path"]).read_bytes()
    other = make_catalog(tmp_path / "c", n=6, seed=8, size=64, progress=False)
    assert _read(other) != rows


def test_cli_synth(tmp_path):
    from typer.testing import CliRunner

    from simclr_watches.cli import app

    result = CliRunner().invoke(app, ["synth", str(tmp_path / "cat"), "--n", "3", "--seed", "1", "--size", "48"])
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip().splitlines()[-1]) == tmp_path / "cat" / "attributes.csv"
    assert len(_read(tmp_path / "cat" / "attributes.csv")) == 3
