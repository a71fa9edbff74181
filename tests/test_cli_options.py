"""Options that several commands share are declared once: same flag, default, type and help everywhere."""

from __future__ import annotations

import pytest
import typer

from simclr_watches.cli import app

SHARED = ("checkpoint", "batch_size", "device", "force")


def _params(name: str) -> dict:
    """Command name -> its option called ``name`` (a click parameter), for every command that has one."""
    commands = typer.main.get_command(app).commands
    return {cmd: p for cmd, c in commands.items() for p in c.params if p.name == name and p.param_type_name == "option"}


@pytest.mark.parametrize("name", SHARED)
def test_a_shared_option_is_the_same_in_every_command(name):
    params = _params(name)
    assert len(params) >= 3, params
    described = {(tuple(p.opts), tuple(p.secondary_opts), p.default, p.is_flag, p.min, p.max, p.help) for p in params.values()}
    assert len(described) == 1, described


def test_every_command_with_a_device_defaults_to_auto():
    """evaluate defaulted to cpu, every other command to auto."""
    params = _params("device")
    assert set(params) == {"build-index", "search", "pretrain", "evaluate", "add", "serve"}
    assert {cmd: p.default for cmd, p in params.items()} == dict.fromkeys(params, "auto")


def test_the_shared_options_cover_the_commands_that_write_or_embed():
    assert set(_params("force")) == {"build-index", "search", "synth", "export", "pretrain", "augment-preview", "demo",
                                     "evaluate", "train-box"}
    assert set(_params("batch_size")) == {"build-index", "search", "evaluate", "add"}
    assert set(_params("checkpoint")) == {"build-index", "search", "demo", "add", "serve"}  # export takes a CHECKPOINT argument
