"""Seeded fuzz: a catalog of byte-level mutations of valid JPEG, PNG and WebP files.

Every mutated file must be indexed or skipped with a one-line reason, and the run must
end normally, from the library and from the command line. The originals carry EXIF
(orientation, make, model) as phone photos do, since the EXIF parser is part of what
a corrupt file attacks.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import struct
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

from helpers import draw_watch
from simclr_watches.retrieval.index import SIDECAR_FILE, build_index, load_index

# Pillow warns about the corrupt metadata it skips; simclr_watches.data.images silences that outside pytest too.
pytestmark = pytest.mark.filterwarnings(r"ignore::UserWarning:PIL\..*")

SEED = 6  # its mutants include corrupt EXIF tags that made Pillow raise struct.error and TypeError before issue 12
PER_FORMAT = 110  # x 3 formats = 330 mutated files
FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
HUGE = (0, 1, 0x3FFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF)


def _original(fmt: str, seed: int) -> bytes:
    """A small watch photo in ``fmt`` with an EXIF block (orientation 6, make, model)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "maker"
    exif[0x0110] = "model"
    buf = io.BytesIO()
    draw_watch(seed, size=48).save(buf, fmt, exif=exif)
    return buf.getvalue()


def _flip_bits(d: bytearray, rng: random.Random) -> bytearray:
    for _ in range(rng.randint(1, 16)):
        d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
    return d


def _truncate(d: bytearray, rng: random.Random) -> bytearray:
    return d[: rng.randrange(len(d))]


def _insert_run(d: bytearray, rng: random.Random) -> bytearray:
    i = rng.randrange(len(d))
    d[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 256)))
    return d


def _delete_run(d: bytearray, rng: random.Random) -> bytearray:
    i = rng.randrange(len(d))
    del d[i : i + rng.randint(1, 256)]
    return d


def _dimension_fields(d: bytearray) -> list[tuple[int, int, str]]:
    """(offset, byte length, byte order) of the width and height fields of a PNG, JPEG or WebP file."""
    fields = []
    if d.startswith(b"\x89PNG"):
        fields += [(16, 4, "big"), (20, 4, "big")]  # IHDR
    for marker in (b"\xff\xc0", b"\xff\xc2"):  # JPEG start of frame
        if (i := d.find(marker)) >= 0:
            fields += [(i + 5, 2, "big"), (i + 7, 2, "big")]
    if (i := d.find(b"VP8X")) >= 0:  # WebP extended header: canvas size
        fields += [(i + 12, 3, "little"), (i + 15, 3, "little")]
    if (i := d.find(b"VP8 ")) >= 0:  # WebP lossy frame
        fields += [(i + 14, 2, "little"), (i + 16, 2, "little")]
    return [f for f in fields if f[0] + f[1] <= len(d)]


def _fields(d: bytearray) -> list[tuple[int, int]]:
    """(offset, byte length) of header fields: dimensions, depth and colour type, EXIF entries' tag, type and count."""
    fields = [(o, n) for o, n, _ in _dimension_fields(d)]
    if d.startswith(b"\x89PNG"):
        fields += [(24, 1), (25, 1), (28, 1)]  # IHDR depth, colour type, interlace
    for marker in (b"\xff\xc0", b"\xff\xc2"):  # JPEG start of frame: precision, components
        if (i := d.find(marker)) >= 0:
            fields += [(i + 4, 1), (i + 9, 1)]
    for order, magic in (("<", b"II*\x00"), (">", b"MM\x00*")):  # EXIF (a TIFF header): the entries of IFD0
        if (i := d.find(magic)) >= 0:
            ifd = i + struct.unpack_from(order + "I", d, i + 4)[0]
            for e in range(struct.unpack_from(order + "H", d, ifd)[0]):
                fields += [(ifd + 2 + 12 * e, 2), (ifd + 4 + 12 * e, 2), (ifd + 6 + 12 * e, 4)]
    return [(o, n) for o, n in fields if o + n <= len(d)]


def _fix_png_crc(d: bytearray) -> bytearray:
    """Recomputes the PNG chunks' checksums, so that a changed field reaches the parser instead of failing the CRC."""
    i = 8
    while d.startswith(b"\x89PNG") and i + 12 <= len(d):
        end = i + 8 + struct.unpack_from(">I", d, i)[0]
        if end + 4 > len(d):
            break
        d[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(d[i + 4 : end])))
        i = end + 4
    return d


def _corrupt_field(d: bytearray, rng: random.Random) -> bytearray:
    """A header field set to random bytes, or one bit of it flipped (a near miss: a neighbouring tag or size)."""
    o, n = rng.choice(_fields(d))
    if rng.random() < 0.5:
        d[o : o + n] = rng.randbytes(n)
    else:
        d[o + rng.randrange(n)] ^= 1 << rng.randrange(8)
    return _fix_png_crc(d)


def _huge_dimension(d: bytearray, rng: random.Random) -> bytearray:
    """A width or height set to an extreme value (0, 1, or the most the field holds)."""
    o, n, order = rng.choice(_dimension_fields(d))
    d[o : o + n] = (rng.choice(HUGE) & ((1 << 8 * n) - 1)).to_bytes(n, order)
    return _fix_png_crc(d)


MUTATIONS: dict[str, Callable[[bytearray, random.Random], bytearray]] = {
    "bitflip": _flip_bits, "truncate": _truncate, "insert": _insert_run, "delete": _delete_run,
    "field": _corrupt_field, "hugedim": _huge_dimension,
}


@pytest.fixture(scope="module")
def fuzz_catalog(tmp_path_factory) -> Path:
    """PER_FORMAT mutants of each format, the mutation kinds in turn, named ``NNN-KIND.EXT``."""
    rng = random.Random(SEED)
    root = tmp_path_factory.mktemp("fuzz") / "catalog"
    root.mkdir()
    kinds = list(MUTATIONS)
    for f, (fmt, ext) in enumerate(FORMATS.items()):
        original = _original(fmt, f)
        for i in range(PER_FORMAT):
            kind = kinds[i % len(kinds)]
            (root / f"{f * PER_FORMAT + i:03d}-{kind}.{ext}").write_bytes(bytes(MUTATIONS[kind](bytearray(original), rng)))
    return root


def _files(root: Path) -> set[str]:
    return {str(p) for p in root.iterdir()}


@pytest.mark.slow
def test_build_index_indexes_or_skips_every_mutated_file(fuzz_catalog, small_checkpoint, tmp_path):
    total = len(FORMATS) * PER_FORMAT
    report = build_index(fuzz_catalog, tmp_path / "idx", checkpoint=str(small_checkpoint), progress=False, n_trees=2)
    assert report.count + len(report.skipped) == total
    # The mutations are neither all harmless nor all fatal: both outcomes are exercised.
    assert 0.1 * total < len(report.skipped) < 0.9 * total, Counter(r.split(" (")[0] for _, r in report.skipped)
    assert all(reason and "\n" not in reason for _, reason in report.skipped)
    sidecar = json.loads((tmp_path / "idx" / SIDECAR_FILE).read_text())
    indexed = {Path(p).name for p in load_index(tmp_path / "idx").paths}
    skipped = {Path(s["path"]).name for s in sidecar["skipped"]}
    assert not indexed & skipped and {Path(p).name for p in _files(fuzz_catalog)} == indexed | skipped
    # Every kind of mutation produced some unreadable file, and some of each format still decodes.
    assert {n.split("-")[1].split(".")[0] for n in skipped} == set(MUTATIONS)
    assert {n.rsplit(".", 1)[1] for n in indexed} == set(FORMATS.values())


@pytest.mark.slow
def test_cli_build_index_on_mutated_catalog_ends_normally(fuzz_catalog, small_checkpoint, tmp_path):
    total = len(FORMATS) * PER_FORMAT
    proc = subprocess.run(
        [sys.executable, "-m", "simclr_watches", "build-index", str(fuzz_catalog), "--out", str(tmp_path / "idx"),
         "--checkpoint", str(small_checkpoint), "--n-trees", "2"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    summary = re.search(r"indexed (\d+) images .*; skipped (\d+) unreadable file", proc.stderr)
    assert summary, proc.stderr[-2000:]
    indexed, skipped = map(int, summary.groups())
    assert indexed + skipped == total
    assert len(re.findall(r"^skipped \S+: \S", proc.stderr, re.M)) == skipped
