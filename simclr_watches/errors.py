"""Errors a user can act on. The CLI prints them as one line, without a traceback."""

from __future__ import annotations

from pathlib import Path


class SimclrWatchesError(Exception):
    """Base class: a problem with the user's input, files or settings."""


class ImageReadError(SimclrWatchesError):
    """An image file that cannot be used; carries the file and the reason."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ConfigError(SimclrWatchesError):
    """A config file or override that names an unknown key or has a wrong type."""


class CheckpointError(SimclrWatchesError):
    """A checkpoint or weights file that is missing, corrupt or of another architecture."""


class IndexFormatError(SimclrWatchesError):
    """An index directory that is missing, incomplete, or built by another model or format."""
