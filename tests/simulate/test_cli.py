"""`onerec simulate` and `onerec simulate judge` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from onerec.cli import main


def test_bad_sizes_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--users 0 prints one error line naming the key and exits 2."""
    code = main(["simulate", "--out", str(tmp_path / "w"), "--users", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "simulate.users" in err, (code, err)


def test_judge_cli(tiny_world_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """judge reads JSON-lines sessions, prints means and writes one scored row per session."""
    sessions = tmp_path / "s.jsonl"
    sessions.write_text("\n".join(json.dumps({"user_id": u, "video_ids": [u, u + 1, u + 2, u + 3, u + 4]})
                                  for u in range(5)) + "\n")
    out = tmp_path / "scores.parquet"
    code = main(["simulate", "judge", "--world", str(tiny_world_dir), "--sessions", str(sessions),
                 "--out", str(out)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["sessions"] == 5, report
    scores = pl.read_parquet(out)
    assert scores.height == 5 and (scores["swt"] > 0).all(), scores


def test_judge_cli_unknown_video(tiny_world_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A session with an unknown video id exits 2 naming the id."""
    sessions = tmp_path / "s.jsonl"
    sessions.write_text(json.dumps({"user_id": 0, "video_ids": [0, 123456789]}) + "\n")
    code = main(["simulate", "judge", "--world", str(tiny_world_dir), "--sessions", str(sessions)])
    err = capsys.readouterr().err
    assert code == 2 and "123456789" in err, (code, err)
