"""``augment-preview``: the grid of catalog photos and their views."""

from __future__ import annotations

from PIL import Image
from typer.testing import CliRunner

from simclr_watches.cli import app

from helpers import TINY


def test_cli_augment_preview(make_catalog, tmp_path):
    res = CliRunner().invoke(app, ["augment-preview", str(make_catalog(4)), "--out", str(tmp_path / "g.png"),
                                   "--config", str(TINY), "-n", "3"])
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "g.png").size == (3 * 36 + 4, 3 * 36 + 4)
