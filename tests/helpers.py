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


def lite0_pair(from_stage: int, scale: float, shift: float = 0.0):
    """Two EfficientNet-Lite0 encoders (seeded, eval): the second a copy whose first block of each
    stage from ``from_stage`` on is scaled and shifted, so the two share stages ``< from_stage`` only."""
    import copy

    from simclr_watches.model import Encoder

    torch.manual_seed(0)
    a = Encoder("efficientnet_lite0").eval()
    b = copy.deepcopy(a)
    with torch.no_grad():
        for stage in b.stages()[from_stage:]:
            for p in stage[0].parameters():
                p.mul_(scale).add_(shift)
    return a, b


CHROMIUM = "/usr/bin/chromium"


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): stdlib only.

    Chromium reads commands from its fd 3 and writes replies and events to its fd 4, each a
    JSON message ended by a NUL byte. One page is opened and attached (flat sessions).

    Example::

        with Chromium(width=1200, height=900) as browser:
            browser.goto("http://127.0.0.1:8000/")
            browser.wait_for("document.title")
    """

    def __init__(self, width: int = 1200, height: int = 900, mobile: bool = False, binary: str = CHROMIUM):
        import tempfile

        # Chromium's helper processes may still be closing files in the profile as it is removed.
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True)
        to_child, self._out = os.pipe()
        self._in, from_child = os.pipe()

        def fds():  # the child's fd 3 and 4 are the pipe ends Chromium expects
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", f"--user-data-dir={self._profile.name}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=fds,
            pass_fds=(3, 4), start_new_session=True)  # its own process group: close() ends every process of it
        os.close(to_child)
        os.close(from_child)
        self._next, self._buffer, self.session = 0, b"", None
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True, session=False)["sessionId"]
        for domain in ("Page", "Runtime", "DOM"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for fd in (self._in, self._out):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the browser and its renderer, GPU and utility processes
        self.proc.wait(10)
        self._profile.cleanup()

    def send(self, method: str, session: bool = True, timeout: float = 30, **params) -> dict:
        """Sends one command (to the page's session unless ``session=False``) and returns its result.

        Raises:
            RuntimeError: the command failed; TimeoutError: no reply within ``timeout`` seconds.
        """
        import json
        import select
        import time

        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        end = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError(f"{method}: no reply from Chromium in {timeout} s")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its pipe")
            self._buffer += chunk

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def wait_for(self, expression: str, timeout: float = 60):
        """Polls a JavaScript expression until it is truthy; returns its value.

        Raises:
            TimeoutError: still falsy after ``timeout`` seconds (with its last value).
        """
        import time

        end, value = time.monotonic() + timeout, None
        while time.monotonic() < end:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{expression} still {value!r} after {timeout} s")

    def set_files(self, selector: str, *paths: Path) -> None:
        """Chooses files in the ``<input type=file>`` at ``selector`` (as a user would: its change event fires)."""
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.send("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])

    def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) at the middle of the first element matching ``selector``."""
        import json

        box = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView();"
                            f" const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self, path: Path) -> Path:
        """Writes a PNG of the page as shown."""
        import base64

        Path(path).write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        return Path(path)


@contextlib.contextmanager
def serving(*args, env: dict[str, str] | None = None, timeout: float = 120) -> Iterator[tuple[subprocess.Popen, str, list[str]]]:
    """``simclr-watches serve ARGS --port 0`` as a real process; yields it, the URL it printed and its stderr lines so far.

    The server is stopped (SIGTERM, then SIGKILL) when the block ends.

    Raises:
        RuntimeError: the process ended before printing ``open URL`` (its stderr attached).
    """
    import re
    import threading

    proc = subprocess.Popen([sys.executable, "-m", "simclr_watches", "serve", *map(str, args), "--port", "0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200", **(env or {})})
    lines: list[str] = []
    try:
        with deadline(int(timeout)):
            for line in proc.stderr:
                lines.append(line.rstrip("\n"))
                if m := re.match(r"open (http://\S+)", line):
                    break
            else:
                raise RuntimeError(f"serve exited {proc.wait()} before printing its URL:\n" + "\n".join(lines))
        threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in proc.stderr), daemon=True).start()
        yield proc, m[1], lines
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
