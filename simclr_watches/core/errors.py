"""Errors a user can act on. The CLI prints them as one line, without a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def one_line(text: str) -> str:
    """``text`` on one line: its lines joined by spaces (third-party messages can span several)."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


class SimclrWatchesError(Exception):
    """Base class: a problem with the user's input, files or settings."""


class FileReadError(SimclrWatchesError):
    """A file handed in by the user that cannot be read; carries the file and the reason."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = one_line(reason)
        super().__init__(f"{path}: {self.reason}")


class ImageReadError(FileReadError):
    """An image file that cannot be used; carries the file and the reason."""


class NotAnImageError(ImageReadError):
    """Bytes that are no image of a decoded format (a server answers 415, not 400)."""


class ImageTooLargeError(ImageReadError):
    """An image of more pixels than the limit (a server answers 413)."""


class NoReadableImagesError(SimclrWatchesError):
    """A folder whose image files were all unusable; carries why each one was skipped.

    The CLI prints every reason (``skipped PATH: REASON``) before this error's own line.
    """

    def __init__(self, folder: Path | str, skipped: Sequence[ImageReadError]):
        self.folder = Path(folder)
        self.skipped = list(skipped)
        super().__init__(f"{folder}: none of the {len(self.skipped)} image files could be read")


class ConfigError(SimclrWatchesError):
    """A config file or override that names an unknown key, or has a wrong type or an out-of-range value."""


class CheckpointError(SimclrWatchesError):
    """A checkpoint or weights file that is missing, corrupt or of another architecture."""


class IndexFormatError(SimclrWatchesError):
    """An index directory that is missing, incomplete, or built by another model or format."""
