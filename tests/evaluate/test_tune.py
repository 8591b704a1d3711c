"""`onerec tune` chooses a decoding knob on the validation split only, by the same harness as `onerec evaluate`,
and `--apply` makes the choice the run's default for evaluate and serve without touching the weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest

from onerec.cli import main
from onerec.io import OnerecError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train_fixture import make_fixture, write_config  # noqa: E402

EVAL = ["--set", "eval.m=3", "--set", "eval.beam_size=8", "--set", "eval.max_history=8", "--set", "eval.threads=1",
        "--set", "eval.progress=false", "--set", "eval.bootstrap=0"]
GRID = "0,0.5,2,8"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny next-session data directory (train / 16 valid / 8 test) and two 4-step runs on it: with the item head
    and without."""
    from onerec.train import train_command

    root = tmp_path_factory.mktemp("tune")
    data, tok = make_fixture(root, n_train=48, n_valid=24)
    samples = pl.read_parquet(data / "samples.parquet")
    samples.with_columns(pl.when(pl.col("sample") >= 64).then(pl.lit("test")).otherwise(pl.col("split"))
                         .alias("split")).write_parquet(data / "samples.parquet")
    base = ("train.max_steps=4", "train.eval_every=2", "train.patience=0", "train.tensorboard=false")
    config = write_config(root / "tiny.toml")
    train_command(data, tok, config, root / "ih", overrides=(*base, "model.item_head=true"))
    train_command(data, tok, config, root / "plain", overrides=base)
    return {"root": root, "data": data, "ih": root / "ih", "plain": root / "plain"}


def _valid_metrics(run: Path, *extra: str) -> dict:
    assert main(["evaluate", "--run", str(run), *EVAL, "--set", "eval.split=valid", *extra]) == 0
    return json.loads((run / "metrics.json").read_text())["models"]["onerec"]


def test_tune_picks_the_first_best_grid_value_and_matches_evaluate(runs: dict[str, Path], capsys) -> None:
    """Every grid value is scored on the 16 validation samples; the choice is the first value with the highest
    metric, and each row equals what `onerec evaluate --set eval.split=valid` reports at that value."""
    run = runs["ih"]
    assert main(["tune", "--run", str(run), "--grid", GRID, "--metric", "session_recall@3", *EVAL]) == 0
    entry = json.loads((run / "tuning.json").read_text())["item_head_weight"]
    assert entry["split"] == "valid" and entry["n_samples"] == 16 and entry["grid"] == [0.0, 0.5, 2.0, 8.0]
    scores = [row["metrics"]["session_recall@3"] for row in entry["results"]]
    assert entry["best"] == entry["grid"][scores.index(max(scores))], f"{entry['best']} for {scores}"
    assert entry["applied"] is False and "decoding" not in json.loads((run / "run.json").read_text())
    for row in entry["results"][::3]:
        evaluated = _valid_metrics(run, "--set", f"eval.item_head_weight={row['value']}")
        for name in ("session_recall@3", "recall@10", "ndcg@10", "valid_item_rate", "duplicate_rate"):
            assert evaluated[name] == pytest.approx(row["metrics"][name]), (row["value"], name)
        assert row["metrics"]["valid_item_rate"] == 1.0 and row["metrics"]["duplicate_rate"] == 0.0
    assert "<- best" in capsys.readouterr().out


def test_apply_makes_the_choice_the_runs_default_and_keeps_the_weights(runs: dict[str, Path]) -> None:
    """--apply writes run.json's decoding table; load_run then sets the weight, evaluate without an explicit
    eval.item_head_weight scores as with it, and model.safetensors is byte-identical."""
    from onerec.checkpoint import load_run

    run = runs["ih"]
    weights = (run / "model.safetensors").read_bytes()
    assert main(["tune", "--run", str(run), "--grid", "8,0.5", "--metric", "recall@10", "--apply", *EVAL]) == 0
    best = json.loads((run / "tuning.json").read_text())["item_head_weight"]["best"]
    assert json.loads((run / "run.json").read_text())["decoding"] == {"item_head_weight": best}
    assert load_run(run)[0].item_head_weight == best
    assert (run / "model.safetensors").read_bytes() == weights
    implicit = _valid_metrics(run)
    explicit = _valid_metrics(run, "--set", f"eval.item_head_weight={best}")
    assert implicit["recall@10"] == explicit["recall@10"] and implicit["ndcg@10"] == explicit["ndcg@10"]
    # an explicit setting still overrides the recorded one: it scores as the tuning row of that value
    rows = {row["value"]: row["metrics"] for row in json.loads((run / "tuning.json").read_text())["item_head_weight"]
            ["results"]}
    other = 0.5 if best != 0.5 else 8.0
    overridden = _valid_metrics(run, "--set", f"eval.item_head_weight={other}")
    assert overridden["recall@10"] == pytest.approx(rows[other]["recall@10"])
    assert overridden["ndcg@10"] == pytest.approx(rows[other]["ndcg@10"])


@pytest.mark.parametrize("args, message", [
    (["--set", "eval.split=test"], "validation split only"),
    (["--grid", "1,x"], "'x' is not a number"),
    (["--grid", "1,-2"], "finite and >= 0"),
    (["--grid", "1,1"], "listed twice"),
    (["--knob", "beam_size"], "expected one of"),
    (["--metric", "recall@7"], "not a metric"),
])
def test_bad_tune_requests_are_one_line_errors(runs: dict[str, Path], tmp_path: Path, capsys, args, message) -> None:
    """Test split, bad grids, unknown knobs and metrics: exit 2, one line naming the problem, nothing written."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs["ih"], run)
    (run / "tuning.json").unlink(missing_ok=True)
    before = (run / "run.json").read_text()
    argv = ["tune", "--run", str(run), "--grid", "1,2", *EVAL, *args]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, (code, err)
    assert not (run / "tuning.json").exists() and (run / "run.json").read_text() == before


def test_knob_the_model_lacks_is_refused_before_scoring(runs: dict[str, Path], capsys) -> None:
    """item_head_weight > 0 on a model without the item head, copy_gate_bias without the copy head: refused."""
    for knob, grid, message in (("item_head_weight", "0,1", "no item head"), ("copy_gate_bias", "0,1", "no copy head")):
        code = main(["tune", "--run", str(runs["plain"]), "--knob", knob, "--grid", grid, *EVAL])
        assert code == 2 and message in capsys.readouterr().err
    assert not (runs["plain"] / "tuning.json").exists()


def test_a_broken_decoding_table_is_a_clear_load_error(runs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from onerec.checkpoint import load_run

    for decoding, message in (({"beam": 3}, "unknown decoding knob"), ({"item_head_weight": "2"}, "finite number"),
                              ({"item_head_weight": float("nan")}, "finite number"), ([1], "must be a table")):
        run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        shutil.copytree(runs["ih"], run)
        info = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps(info | {"decoding": decoding}))
        with pytest.raises(OnerecError, match=message):
            load_run(run)
