"""Helpers shared by the tests (fixtures stay in conftest.py): import them with ``from helpers import ...``.

* Generated images: :func:`draw_watch`, a crude watch per seed; evaluation data of them:
  :func:`groups_folder` (groups of two views) and :func:`catalog_manifest` (packshots and lifestyle photos).
* Augmentation: :data:`OFF`, a config with every augmentation switched off.
* Hostile input (issue 12): the CLI as a real process (:func:`run_cli`), the contract of a user
  error (:func:`assert_user_error`: exit 2, one line on stderr, no traceback), and a pickle that
  would run code if loaded (:func:`pickle_file`), and a time limit for code that could hang
  (:func:`deadline`).
* Pretraining: :func:`tiny`, the seconds-long CPU pretraining config.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageDraw

from simclr_watches.train.augment import AugmentConfig
from simclr_watches.train.config import PretrainConfig, load_pretrain_config


def draw_watch(seed: int, size: int = 96) -> Image.Image:
    """A crude front-facing 'watch' on white: coloured case and dial, strap, two hands.

    Different seeds give clearly different colours and shapes, so a test catalog has
    distinct items that the ImageNet encoder can tell apart.
    """
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    c = size // 2
    strap = tuple(int(v) for v in rng.integers(0, 200, 3))
    case = tuple(int(v) for v in rng.integers(40, 230, 3))
    dial = tuple(int(v) for v in rng.integers(0, 255, 3))
    w = int(size * rng.uniform(0.18, 0.3))
    d.rectangle([c - w // 2, 0, c + w // 2, size], fill=strap)
    r = int(size * rng.uniform(0.28, 0.38))
    box = [c - r, c - r, c + r, c + r]
    (d.ellipse if seed % 2 else d.rounded_rectangle)(box, fill=case)
    ri = int(r * 0.8)
    d.ellipse([c - ri, c - ri, c + ri, c + ri], fill=dial)
    for ang, length in ((rng.uniform(0, 2 * math.pi), 0.7), (rng.uniform(0, 2 * math.pi), 0.5)):
        d.line([c, c, c + ri * length * math.cos(ang), c + ri * length * math.sin(ang)], fill=(20, 20, 20), width=3)
    return img


def groups_folder(root: Path, n_groups: int = 4) -> Path:
    """n_groups sub-folders of 2 views (the drawing and a shrunk, shifted copy) plus a singleton."""
    for g in range(n_groups):
        d = root / f"g{g}"
        d.mkdir(parents=True)
        w = draw_watch(g, 64)
        w.save(d / "a.png")
        view = Image.new("RGB", (64, 64), (255, 255, 255))
        view.paste(w.resize((56, 56)), (5, 3))
        view.save(d / "b.png")
    (root / "single").mkdir()
    draw_watch(99, 64).save(root / "single" / "a.png")
    return root


def catalog_manifest(root: Path) -> Path:
    """Three groups; g0 and g1 are one family; each group: 2 packshots and 1 lifestyle photo."""
    rows = []
    for g, family in ((0, "fam01"), (1, "fam01"), (2, "fam2")):
        d = root / "images" / f"g{g}"
        d.mkdir(parents=True)
        draw_watch(g, 64).save(d / "1.png")
        draw_watch(g, 64).rotate(90).save(d / "2.png")
        life = Image.new("RGB", (64, 64), (90, 120, 60))
        life.paste(draw_watch(g, 40), (12, 12))
        life.save(d / "3.png")
        for n, kind in ((1, "packshot"), (2, "packshot"), (3, "lifestyle")):
            rows.append({"path": f"images/g{g}/{n}.png", "group_id": f"g{g}", "family": family, "kind": kind})
    path = root / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "group_id", "family", "kind"])
        w.writeheader()
        w.writerows(rows)
    return path


# Everything off: each augmentation test switches on what it checks.
OFF = AugmentConfig(
    size=32, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0, rotation_p=0, perspective_p=0,
    background_p=0, small_paste_p=0, occlude_p=0, jitter_p=0, grayscale_p=0, gamma_p=0, cast_p=0,
    illumination_p=0, blur_p=0,
)


def run_cli(*args, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs ``python -m simclr_watches ARGS`` (this interpreter, PYTHONPATH inherited); text output captured."""
    return subprocess.run([sys.executable, "-m", "simclr_watches", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=timeout)


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Asserts exit code 2 and a last stderr line ``error: ...`` holding every fragment; returns that line.

    Progress bars and ``skipped PATH: REASON`` reports may come before it; no other error line.
    """
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), proc.stderr[-3000:]
    assert [line for line in lines[:-1] if line.startswith("error")] == [], proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


class _Payload:
    """Unpickling this creates the folder ``marker``: proof that a file's code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def pickle_file(path: Path) -> Path:
    """A torch file holding an object whose unpickling would create ``path.with_name("ran")``; returns ``path``."""
    torch.save({"conv1.weight": torch.zeros(1), "x": _Payload(path.with_name("ran"))}, path)
    return path


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raises TimeoutError in the block once it has run ``seconds`` (POSIX): a test that would hang fails instead."""

    def expire(*_) -> None:
        raise TimeoutError(f"blocked for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


TINY = Path(__file__).resolve().parent.parent / "configs" / "pretrain-cpu-tiny.toml"


def tiny(*overrides: str) -> PretrainConfig:
    """configs/pretrain-cpu-tiny.toml (EfficientNet-Lite0, random init, 32 px views) with dotted overrides."""
    return load_pretrain_config(TINY, overrides)
