"""simclr-watches: visual similarity search for a watch catalog, learned without labels.

The Python API (README.md, "Python API")::

    from simclr_watches import Searcher, build_index, load_model

    build_index("catalog", "my-index")                  # what `simclr-watches build-index` runs
    result = Searcher("my-index").search_one("photo.jpg", top_k=5)

Public names are imported on first use (PEP 562 module ``__getattr__``): ``import
simclr_watches`` loads neither torch nor the model code, so the CLI starts fast. The
package imports none of its modules itself, so ``from simclr_watches import __version__``
in any of them makes no import cycle.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_API = {
    "build_index": "simclr_watches.retrieval.index",
    "BuildReport": "simclr_watches.retrieval.index",
    "Searcher": "simclr_watches.retrieval.search",
    "QueryResult": "simclr_watches.retrieval.search",
    "Hit": "simclr_watches.retrieval.search",
    "LocalizeConfig": "simclr_watches.retrieval.localize",
    "load_model": "simclr_watches.weights.loading",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """Imports a public name's module on first access and caches the name here."""
    try:
        module = _API[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public API, loaded or not (for tab completion)."""
    return sorted(__all__)
