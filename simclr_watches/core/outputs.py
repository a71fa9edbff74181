"""Where a command may write: every output is checked before any work starts.

The rule, for every command that writes a file or folder:

- a missing output is created (its parent folder must be writable);
- an existing *empty* folder may be used;
- an existing output that this program recognises as its own, of the same kind,
  is replaced only with ``--force``;
- anything else (a foreign file or folder, a link, a file where a folder goes) is
  refused, even with ``--force``;
- an output that equals, contains or lies inside one of the command's inputs is refused.

Each module describes what it writes as an :class:`OutputKind` whose ``owned``
test recognises its earlier outputs by a marker written into them (a PNG
``tEXt`` chunk, an HTML ``<meta name="generator">``, a JSON ``"format"`` key, a
safetensors header, ...). The tests read a bounded prefix of a regular file (a
FIFO or a device is never opened for reading), never unpickle anything and never
follow a user's file further than that.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from simclr_watches.core.atomic import temp_target
from simclr_watches.core.errors import FileReadError, SimclrWatchesError
from simclr_watches.core.files import open_regular, read_json

GENERATOR = "simclr-watches"
PNG_KEY = "Software"  # standard PNG tEXt keyword; its value marks our PNGs
HTML_META = f'<meta name="generator" content="{GENERATOR}">'
PREFIX_BYTES = 4096  # how much of a file a marker test reads
JSON_LIMIT = 16 << 20  # largest JSON file a marker test parses whole

Owned = Callable[[Path], bool]


class OutputError(SimclrWatchesError):
    """An output path that cannot or may not be written."""


@dataclass(frozen=True)
class OutputKind:
    """What a command writes at one path, and how to recognise an earlier one.

    Attributes:
        noun: what it is, for messages (``"index folder"``).
        folder: a folder (else a file).
        owned: does this existing path (non-empty folder or file) hold our own output of this kind?
        suffix: the suffix a file must have (lower case, with the dot), or None.
        taken: message part when our own output is there and ``--force`` was not given.
    """

    noun: str
    folder: bool
    owned: Owned
    suffix: str | None = None
    taken: str = "already exists; use --force to replace it"

    @property
    def a_noun(self) -> str:
        """The noun with its indefinite article."""
        return f"{'an' if self.noun[0] in 'aeiou' else 'a'} {self.noun}"


def read_prefix(path: Path, size: int = PREFIX_BYTES) -> bytes:
    """The first ``size`` bytes of a regular file (b"" if it is none or cannot be read)."""
    try:
        with open_regular(path) as f:
            return f.read(size)
    except (FileReadError, OSError):
        return b""


def png_info():
    """PNG text chunks that mark a PNG as ours: pass as ``pnginfo=`` to ``Image.save``."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PNG_KEY, GENERATOR)
    return info


def png_owned(path: Path) -> bool:
    """A PNG whose text chunks (before its pixel data) carry our marker."""
    from PIL import Image

    try:
        with open_regular(path) as f, Image.open(f, formats=["PNG"]) as img:
            return img.info.get(PNG_KEY) == GENERATOR
    except Exception:  # not a regular file, or one of the many types PIL raises for a foreign or broken file
        return False


def html_owned(path: Path) -> bool:
    """An HTML page whose head carries our ``<meta name="generator">``."""
    return HTML_META.encode() in read_prefix(path)


def json_format_owned(fmt: str) -> Owned:
    """A test for a JSON file of ours that starts with ``{"format": fmt`` (we write that key first).

    Only the file's first bytes are read, so a large sidecar costs nothing to recognise.
    """
    pattern = re.compile(rb'^\s*\{\s*"format"\s*:\s*' + re.escape(json.dumps(fmt).encode()))

    def owned(path: Path) -> bool:
        return pattern.match(read_prefix(path)) is not None

    return owned


def try_read_json_object(path: Path) -> dict | None:
    """A JSON object file of at most ``JSON_LIMIT`` bytes, parsed; None if it is anything else.

    For marker tests, which must answer rather than raise: :func:`simclr_watches.core.files.read_json`
    with every failure (not a regular file, too large, not JSON) and a non-object as None.
    """
    try:
        data = read_json(path, JSON_LIMIT)
    except FileReadError:
        return None
    return data if isinstance(data, dict) else None


def owned_folder(entries: Mapping[str, Owned], required: str | None = None, others: Owned | None = None) -> Owned:
    """A test for a folder of ours: every entry is one we write, and the marker entry is there.

    Args:
        entries: name -> test of the entry of that name.
        required: the entry that marks the folder as ours (must be present and pass its test).
        others: test for entries of any other name (None: no other names).

    A temporary left by :mod:`simclr_watches.core.atomic` (``.NAME.tmp-PID-XXXXXXXX``) is ours too.
    """

    def owned(path: Path) -> bool:
        try:
            children = list(path.iterdir())
        except OSError:
            return False
        if required is not None and required not in {c.name for c in children}:
            return False
        return all(_entry_owned(c, entries, others) for c in children)

    return owned


def _entry_owned(child: Path, entries: Mapping[str, Owned], others: Owned | None) -> bool:
    if child.is_symlink():
        return False
    if child.name in entries:
        return entries[child.name](child)
    if temp_target(child.name) is not None:
        return True
    return others is not None and others(child)


PNG = OutputKind("PNG image", folder=False, owned=png_owned, suffix=".png")
HTML = OutputKind("HTML page", folder=False, owned=html_owned, suffix=".html")


def _resolved(path: Path | str) -> Path:
    path = Path(path).expanduser()
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare the plain absolute path
        return Path(os.path.abspath(path))


def check_disjoint(output: Path | str, inputs: Iterable[Path | str | None]) -> None:
    """Refuses an output that equals, lies inside or contains one of ``inputs`` (None entries are skipped).

    Raises:
        OutputError: naming the output and the input.
    """
    out = _resolved(output)
    for given in inputs:
        if given is None:
            continue
        inp = _resolved(given)
        if out == inp:
            problem = "is also an input of this command"
        elif out.is_relative_to(inp):
            problem = f"lies inside the input {given}"
        elif inp.is_relative_to(out):
            problem = f"contains the input {given}"
        else:
            continue
        raise OutputError(f"{output}: {problem}; write the output elsewhere")


def check_writable(path: Path) -> None:
    """Refuses a path whose folder cannot be written.

    The folder is the path's parent, or its nearest existing ancestor when missing
    folders are to be created; an existing folder at the path is probed too. Writing is
    probed by creating and removing a temporary file there.

    Raises:
        OutputError: naming the path and the folder.
    """
    folder = path.parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    for place in [folder, path] if path.is_dir() else [folder]:
        if not place.is_dir():
            raise OutputError(f"{path}: cannot be written, {place} is not a folder")
        try:
            fd, probe = tempfile.mkstemp(prefix=f".{GENERATOR}-probe-", dir=place)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise OutputError(f"{path}: cannot write in {place}: {e.strerror or e}") from None


def _foreign(path: Path, found: str, kind: OutputKind) -> OutputError:
    return OutputError(f"{path}: {found} {kind.a_noun} written by {GENERATOR}; not replaced, even with --force")


def _is_empty_dir(path: Path) -> bool:
    with os.scandir(path) as it:
        return next(it, None) is None


def prepare_output(path: Path | str, kind: OutputKind, *, force: bool = False,
                   inputs: Iterable[Path | str | None] = ()) -> bool:
    """Checks that ``path`` may be written as ``kind``, before any work.

    Args:
        force: the user allows replacing an earlier output of ours.
        inputs: the command's inputs, which the output must neither equal, contain nor lie in.

    Returns:
        True if something is there that the write replaces (an empty folder or our own
        earlier output, with ``force``), False if ``path`` is missing.

    Raises:
        OutputError: a one-line reason naming ``path``.
    """
    path = Path(path)
    check_disjoint(path, inputs)
    if kind.suffix is not None and path.suffix.lower() != kind.suffix:
        raise OutputError(f"{path}: the {kind.noun} must be a {kind.suffix} file")
    if path.is_symlink():
        raise _foreign(path, "is a symbolic link, not", kind)
    if not path.exists():
        check_writable(path)
        return False
    if path.is_dir() != kind.folder:
        raise _foreign(path, f"is a {'folder' if path.is_dir() else 'file'}, not", kind)
    if kind.folder and _is_empty_dir(path):
        check_writable(path)
        return True
    if not kind.owned(path):
        raise _foreign(path, "exists and is not", kind)
    if not force:
        raise OutputError(f"{path}: {kind.taken}")
    check_writable(path)
    return True
