import pytest
from PIL import Image

from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.retrieval.search import Hit, QueryResult
from simclr_watches.retrieval.sheet import LABEL_H, THUMB, write_sheet


def test_sheet_png_and_html(make_catalog, tmp_path):
    root = make_catalog(3)
    results = [
        QueryResult(str(root / "w000.png"), [Hit(1, str(root / "w000.png"), 0.99, 0), Hit(2, str(root / "w001.png"), 0.5, 1)],
                    box=[10, 10, 60, 60]),
        QueryResult("missing.png", error="missing.png: no such file"),
    ]
    png, page = write_sheet(results, tmp_path / "out" / "sheet.png")
    img = Image.open(png)
    assert img.size == (3 * (THUMB + 8), THUMB + LABEL_H + 8)  # one answered row: query + 2 hits
    # The box is drawn in red on the query thumbnail.
    px = img.convert("RGB").load()
    assert any(px[x, y] == (255, 40, 40) for x in range(4, THUMB) for y in range(4, THUMB))
    text = page.read_text()
    assert text.count("data:image/jpeg;base64,") == 3 and "#2 0.500" in text and "error: missing.png" in text


def test_sheet_needs_png_and_an_answer(tmp_path):
    with pytest.raises(SimclrWatchesError, match="is a .png file"):
        write_sheet([QueryResult("q", [Hit(1, "x", 1.0, 0)])], tmp_path / "s.jpg")
    with pytest.raises(SimclrWatchesError, match="no answered query"):
        write_sheet([QueryResult("q", error="bad")], tmp_path / "s.png")
    assert not list(tmp_path.iterdir())
