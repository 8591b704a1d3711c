"""``onerec reward train | eval | score`` end to end on a small fixture, and their error lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from onerec.cli import main

TINY = """
[reward]
d_model = 16
n_heads = 2
epochs = 2
batch_size = 64
max_session_len = 8
max_history = 20
feature_buckets = 32
"""


@pytest.fixture(scope="module")
def trained(reward_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    (root / "tiny.toml").write_text(TINY)
    rc = main(["reward", "train", "--data", str(reward_data), "--out", str(root / "rm"), "--config", str(root / "tiny.toml"),
               "--set", "reward.seed=3"])
    assert rc == 0, f"train exited {rc}"
    return root / "rm"


def test_train_writes_model_files(trained: Path) -> None:
    """train writes reward.safetensors and reward.json with the resolved config (the --set override applied)."""
    info = json.loads((trained / "reward.json").read_text())
    assert (trained / "reward.safetensors").is_file()
    assert info["config"]["seed"] == 3 and info["config"]["d_model"] == 16, info["config"]


def test_eval_reports_auc_against_both_baselines(trained: Path, reward_data: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """eval --json prints, per tower, AUC of the model, the item-rate and the pointwise baselines; PNGs exist."""
    capsys.readouterr()
    assert main(["reward", "eval", "--rm", str(trained), "--data", str(reward_data), "--out", str(tmp_path), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    towers = json.loads((trained / "reward.json").read_text())["towers"]
    assert set(metrics["towers"]) == set(towers)
    for tower, entry in metrics["towers"].items():
        for key in ("auc_reward_model", "auc_item_rate", "auc_pointwise"):
            for k in (key, key + "_multi_item"):  # all test sessions, and those with >= 2 items
                assert k in entry and (np.isnan(entry[k]) or 0 <= entry[k] <= 1), (tower, entry)
        png = tmp_path / f"calibration_{tower}.png"
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG", f"missing calibration plot {png}"
    assert 0 < metrics["multi_item_test_sessions"] <= metrics["test_sessions"], metrics
    assert all(0 <= e["positives_multi_item"] <= e["positives"] for e in metrics["towers"].values()), metrics
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


def test_score_writes_one_row_per_session(trained: Path, tmp_path: Path) -> None:
    """score keeps the input rows and adds one probability column per tower plus reward."""
    frame = pl.DataFrame({"user": [0, 1, 2], "history": [[1, 2, 3], [], [4]], "items": [[5, 6, 7], [8], [9, 10, 11, 12]]},
                         schema={"user": pl.Int32, "history": pl.List(pl.Int32), "items": pl.List(pl.Int32)})
    frame.write_parquet(tmp_path / "in.parquet")
    assert main(["reward", "score", "--rm", str(trained), "--sessions", str(tmp_path / "in.parquet"),
                 "--out", str(tmp_path / "out.parquet")]) == 0
    out = pl.read_parquet(tmp_path / "out.parquet")
    towers = json.loads((trained / "reward.json").read_text())["towers"]
    assert out.height == 3 and out["items"].to_list() == frame["items"].to_list()
    for col in [*towers, "reward"]:
        assert col in out.columns, f"missing column {col}"
    for t in towers:
        assert ((out[t] > 0) & (out[t] < 1)).all(), f"{t} not a probability"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ({"history": [[1]], "items": [[]]}, "empty or null items"),
        ({"history": [[1]], "items": [[100000]]}, "unknown item id"),
        ({"items": [[1, 2]]}, "missing column(s) history"),
        ({"user": [99999], "history": [[1]], "items": [[1, 2]]}, "unknown user id"),
    ],
)
def test_score_bad_input_exits_2_with_one_line(trained: Path, tmp_path: Path, rows: dict, message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Bad session files end with exit status 2 and one `error: ...` line naming the problem."""
    schema = {"user": pl.Int32, "history": pl.List(pl.Int32), "items": pl.List(pl.Int32)}
    pl.DataFrame(rows, schema={k: v for k, v in schema.items() if k in rows}).write_parquet(tmp_path / "bad.parquet")
    capsys.readouterr()
    rc = main(["reward", "score", "--rm", str(trained), "--sessions", str(tmp_path / "bad.parquet"), "--out", str(tmp_path / "o.parquet")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and message in err and "\n" not in err, (rc, err)
    assert not (tmp_path / "o.parquet").exists(), "no output on error"
