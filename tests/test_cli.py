"""`onerec ... --help` shows what the option help says (rich markup must not eat `[table]` names)."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from onerec.cli import _register, app


def _leaves(cmd, path: tuple[str, ...] = ()):
    if hasattr(cmd, "commands"):  # a group (typer may bundle its own click)
        for name, sub in cmd.commands.items():
            yield from _leaves(sub, path + (name,))
    else:
        yield path, cmd


_register()
LEAVES = list(_leaves(typer.main.get_command(app)))


def test_every_stage_is_a_command() -> None:
    names = {" ".join(p) for p, _ in LEAVES}
    for stage in ("data prepare", "embed", "tokenize", "train", "evaluate", "reward train", "align", "serve",
                  "pipeline", "simulate"):
        assert any(n == stage or n.startswith(stage) for n in names), f"no `onerec {stage}` in {sorted(names)}"


@pytest.mark.parametrize("path,cmd", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_help_keeps_bracketed_table_names(path: tuple[str, ...], cmd) -> None:
    wanted = {m for p in cmd.params for m in re.findall(r"\[[a-z_]+\]", (getattr(p, "help", None) or "").replace("\\[", "["))}
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    missing = [w for w in wanted if w not in result.output]
    assert not missing, f"`onerec {' '.join(path)} --help` lost {missing}"
