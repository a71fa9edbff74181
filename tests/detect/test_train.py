"""The box head's training sources: what is read, cut out, left out and counted."""

from __future__ import annotations

from PIL import Image

from simclr_watches.detect.config import BoxConfig, BoxDataConfig
from simclr_watches.detect.train import load_sources


def test_unreadable_packshots_and_objects_are_skipped_logged_and_counted(make_catalog, tmp_path):
    catalog = make_catalog(12)
    (catalog / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    objects = tmp_path / "objects"
    objects.mkdir()
    for i in range(3):
        img = Image.new("RGB", (64, 64))
        img.paste((200, 40 * i, 90), (16, 16, 48, 48))  # a bright object on black
        img.save(objects / f"obj{i}.png")
    (objects / "obj9.png").write_bytes(b"")
    cfg = BoxConfig(data=BoxDataConfig(catalog=str(catalog), objects=str(objects), objects_every=1, synthetic=0,
                                       held_aside=0.5))
    lines: list[str] = []
    sources = load_sources(cfg, lines.append)
    counts = sources.counts
    assert (counts["unreadable_packshots"], counts["unreadable_objects"], counts["objects"]) == (1, 1, 3)
    assert counts["train_watches"] + counts["held_aside_watches"] + counts["packshots_without_backdrop"] == 12
    assert any(line.startswith(f"skipped {catalog / 'broken.png'}: ") for line in lines)
    assert any(line == f"skipped {objects / 'obj9.png'}: empty file" for line in lines)
