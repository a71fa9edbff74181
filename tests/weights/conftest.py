"""A registry of one's own for a test: a real ``weights.toml`` in tmp_path, read in place of the shipped one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from simclr_watches.weights import _hub, _registry


@pytest.fixture
def use_registry(tmp_path: Path, monkeypatch) -> Callable[..., Path]:
    """Returns ``use(entries, artifacts=None) -> registry file``.

    ``entries`` maps each name to its fields (as in ``configs/weights.toml``); the file is
    written as TOML and read by every loader from then on; ``artifacts`` replaces the
    repository's ``artifacts/`` folder.
    """

    def use(entries: dict[str, dict[str, Any]], artifacts: Path | None = None) -> Path:
        path = tmp_path / "weights.toml"
        path.write_text("".join(f"[{json.dumps(name)}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items())
                                for name, fields in entries.items()), encoding="utf-8")
        monkeypatch.setattr(_registry, "REGISTRY_PATH", path)
        if artifacts is not None:
            monkeypatch.setattr(_hub, "ARTIFACTS_DIR", artifacts)
        return path

    return use
