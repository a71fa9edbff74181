"""The page in a real browser: headless Chromium against ``simclr-watches serve`` on 127.0.0.1.

Skipped where Chromium is missing (``.ci/run`` installs it). Chromium is driven over the
DevTools protocol on a pipe (tests/helpers.py ``Chromium``), so no test dependency is added.
"""

from __future__ import annotations

import os

import pytest

from helpers import CHROMIUM, Chromium, serving
from simclr_watches.retrieval.index import build_index

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM}")]

CARDS = "document.querySelectorAll('#grid .card')"


@pytest.mark.parametrize("width, height, mobile", [(1200, 900, False), (390, 844, True)], ids=["desktop", "phone"])
def test_upload_a_photo_see_the_watch_first_then_more_like_a_result(make_catalog, small_checkpoint, tmp_path,
                                                                     width, height, mobile):
    catalog = make_catalog(6)
    build_index(catalog, tmp_path / "idx", checkpoint=str(small_checkpoint), progress=False, n_trees=5)
    with serving(tmp_path / "idx", "--device", "cpu") as (_, url, _lines), Chromium(width, height, mobile) as browser:
        browser.goto(url)
        browser.wait_for("document.getElementById('meta').textContent.includes('6 catalog items')")
        browser.set_files("#pick", catalog / "w003.png")
        browser.wait_for(f"{CARDS}.length === 6")
        first = browser.evaluate(f"[...{CARDS}].map(c => c.querySelector('.name').textContent)")
        assert first[0] == "w003.png" and sorted(first) == [f"w{i:03d}.png" for i in range(6)]
        assert browser.evaluate("document.getElementById('took').textContent").endswith(" ms")
        assert browser.evaluate("getComputedStyle(document.getElementById('box')).display") == "block"
        assert browser.wait_for(f"[...{CARDS}].every(c => c.querySelector('img').naturalWidth > 0)")  # thumbnails shown
        if mobile:  # one column of panels, the grid within the screen's width
            assert browser.evaluate("document.getElementById('grid').getBoundingClientRect().right") <= width
        second = browser.evaluate(f"{CARDS}[1].dataset.id")
        browser.click("#grid .card:nth-child(2) img")
        browser.wait_for(f"document.getElementById('title').textContent === 'More like {first[1]}'")
        browser.wait_for(f"{CARDS}.length === 6 && {CARDS}[0].dataset.id === {second!r}")
        assert browser.evaluate(f"{CARDS}[0].querySelector('.name').textContent") == first[1]
        assert browser.evaluate("document.getElementById('status').className") != "error"
