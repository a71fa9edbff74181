from __future__ import annotations

import json

import pytest
from PIL import Image

from simclr_watches.core.errors import ImageReadError, SimclrWatchesError
from simclr_watches.data.images import load_image
from simclr_watches.data.manifest import load_items
from simclr_watches.data.pack import PACK_FILE, pack_images
from simclr_watches.train.catalog_cache import build_cache

from helpers import catalog_manifest, draw_watch


def test_packs_one_kind_of_a_manifest_as_small_copies_pretrain_reads(tmp_path):
    manifest = catalog_manifest(tmp_path / "data")
    items = load_items(manifest, kind="packshot")
    desc = pack_images([it.path for it in items], manifest.parent, tmp_path / "packed", side=32)
    out = tmp_path / "packed"
    copies = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert copies == [f"images/g{g}/{n}.jpg" for g in range(3) for n in (1, 2)]  # no lifestyle photo
    assert all(max(Image.open(out / c).size) == 32 for c in copies)
    assert json.loads((out / PACK_FILE).read_text())["files"]["images/g1/2.jpg"] == "images/g1/2.png"
    assert desc["count"] == 6 and desc["side"] == 32
    assert len(build_cache(out, 32, progress=False)) == 6


def test_transparency_stays_a_png_and_small_images_are_not_enlarged(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    cut = draw_watch(1, 40).convert("RGBA")
    alpha = Image.new("L", (40, 40), 0)
    alpha.paste(255, (10, 10, 30, 30))
    cut.putalpha(alpha)
    cut.save(src / "cut.png")
    pack_images([src / "cut.png"], src, tmp_path / "out", side=64)
    copy = load_image(tmp_path / "out" / "cut.png")
    assert copy.rgb.size == (40, 40) and copy.alpha is not None
    assert copy.alpha.tobytes() == alpha.tobytes()


def test_an_earlier_pack_is_replaced_only_with_force_and_a_bad_image_writes_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        draw_watch(i, 48).save(src / f"w{i}.png")
    out = tmp_path / "out"
    pack_images(sorted(src.glob("*.png")), src, out, side=24)
    with pytest.raises(SimclrWatchesError, match="already holds a packed catalog"):
        pack_images(sorted(src.glob("*.png")), src, out, side=24)
    (src / "w1.png").write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="w1.png"):
        pack_images(sorted(src.glob("*.png")), src, out, side=16, force=True)
    assert json.loads((out / PACK_FILE).read_text())["side"] == 24  # the earlier pack is intact
    pack_images([src / "w0.png"], src, out, side=16, force=True)
    assert sorted(p.name for p in out.iterdir()) == [PACK_FILE, "w0.jpg"]

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SimclrWatchesError, match="exists and is not"):
        pack_images([src / "w0.png"], src, foreign, force=True)
