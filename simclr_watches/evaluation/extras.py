"""The optional ``eval`` extra: imagehash (the ``phash`` method) and matplotlib (the Recall@k plot).

A plain ``pip install simclr-watches`` has neither. ``evaluate`` then refuses ``phash``
before any work and skips the plot with a note, instead of failing after the work.
"""

from __future__ import annotations

import importlib
from typing import Iterable

from simclr_watches.core.errors import SimclrWatchesError

INSTALL_EVAL = 'pip install "simclr-watches[eval]"'
METHOD_MODULES = {"phash": "imagehash"}  # method name -> the module of the eval extra it needs
PLOT_MODULE = "matplotlib"
PLOT_SKIPPED = f"plot skipped: {PLOT_MODULE} is not installed ({INSTALL_EVAL} draws it)"


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (it is then imported)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def check_method_modules(names: Iterable[str]) -> None:
    """Checks that the methods named can run: each one's optional module is installed.

    Raises:
        SimclrWatchesError: a method needs a module of the eval extra that is missing.
    """
    for name in names:
        module = METHOD_MODULES.get(name)
        if module is not None and not installed(module):
            raise SimclrWatchesError(f"method {name} needs {module}, which is not installed: {INSTALL_EVAL}")
