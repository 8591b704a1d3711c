"""`onerec data prepare`: writes the directory and prints a summary; bad input exits 2 with one error line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onerec.cli import main


def test_prepare_command(kr_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command exits 0, writes summary.json, and applies --set overrides."""
    out = tmp_path / "d"
    code = main(["data", "prepare", "--source", "kuairand", "--input", str(kr_folder), "--out", str(out),
                 "--set", "data.session_max_items=3"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads((out / "data_config.json").read_text())["session_max_items"] == 3
    assert f"{summary['users']:,} users" in capsys.readouterr().out, "readable summary printed"


def test_prepare_command_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing input folder exits 2 with a single `error:` line and writes nothing."""
    code = main(["data", "prepare", "--source", "kuairand", "--input", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err, (code, err)
    assert not (tmp_path / "d").exists(), "no output on error"
