import json

import pytest

from simclr_watches.demo import run_demo
from simclr_watches.core.errors import SimclrWatchesError


def test_demo_writes_catalog_index_query_and_sheet(tmp_path, small_checkpoint):
    res = run_demo(tmp_path / "demo", n=4, seed=1, top_k=3, checkpoint=str(small_checkpoint))
    out = tmp_path / "demo"
    assert len(list((out / "catalog" / "images").iterdir())) == 4 and (out / "catalog" / "attributes.csv").is_file()
    assert (out / "index" / "index.json").is_file() and res.query == out / "query.jpg" and res.query.is_file()
    assert res.files == [out / "sheet.png", out / "sheet.html"] and all(f.stat().st_size > 0 for f in res.files)
    assert res.source.parent == out / "catalog" / "images"
    assert len(res.result.hits) == 3 and res.result.box is not None
    assert res.source_rank in (None, 1, 2, 3)
    assert json.loads((out / "demo.json").read_text())["format"] == "simclr-watches-demo"
    # A second run rebuilds the demo it wrote, but only when asked to (make demo passes --force).
    with pytest.raises(SimclrWatchesError, match="already exists; use --force"):
        run_demo(tmp_path / "demo", n=4, seed=1, top_k=3, checkpoint=str(small_checkpoint))
    again = run_demo(tmp_path / "demo", n=4, seed=1, top_k=3, checkpoint=str(small_checkpoint), force=True)
    assert again.source == res.source and [h.path for h in again.result.hits] == [h.path for h in res.result.hits]


@pytest.mark.slow
def test_demo_with_the_shipped_model_finds_the_source_first(tmp_path):
    res = run_demo(tmp_path / "demo", n=12, seed=0, top_k=3)
    assert res.source_rank == 1, [(h.rank, h.path, h.score) for h in res.result.hits]
