"""The Python API: ``from simclr_watches import ...``, loaded on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import simclr_watches


def test_importing_the_package_loads_no_torch_and_no_model_code():
    code = ("import sys, simclr_watches; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('simclr_watches')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['simclr_watches']"


def test_public_names_are_the_library_functions():
    from simclr_watches import Searcher, build_index, load_model
    from simclr_watches.retrieval.index import build_index as build
    from simclr_watches.retrieval.search import Searcher as S
    from simclr_watches.weights import load_model as load

    assert (build_index, Searcher, load_model) == (build, S, load)
    assert {"build_index", "Searcher", "load_model", "QueryResult", "Hit"} <= set(dir(simclr_watches))
    assert all(getattr(simclr_watches, name).__doc__ for name in simclr_watches.__all__ if name != "__version__")
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        simclr_watches.nope  # noqa: B018
