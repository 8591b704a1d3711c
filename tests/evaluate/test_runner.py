"""`onerec baseline` and `onerec evaluate` score the model and the baselines on one split and write metrics.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest

from onerec.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train_fixture import make_fixture, write_config  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny next-session data directory with train/valid/test samples and a 6-step OneRec run on it."""
    from onerec.train import train_command

    root = tmp_path_factory.mktemp("evaluate")
    data, tok = make_fixture(root, n_train=48, n_valid=16)
    samples = pl.read_parquet(data / "samples.parquet")
    samples = samples.with_columns(
        pl.when(pl.col("sample") >= 56).then(pl.lit("test")).otherwise(pl.col("split")).alias("split")
    )
    samples.write_parquet(data / "samples.parquet")
    config = write_config(root / "tiny.toml")
    overrides = ("train.max_steps=6", "train.eval_every=3", "train.patience=0", "train.tensorboard=false")
    train_command(data, tok, config, root / "run", overrides=overrides)
    return {"root": root, "data": data, "run": root / "run"}


EVAL = ["--set", "eval.m=3", "--set", "eval.beam_size=8", "--set", "eval.max_history=8", "--set", "eval.threads=1"]


def test_evaluate_writes_same_metrics_for_every_model(trained: dict[str, Path]) -> None:
    """metrics.json holds onerec, popularity and the given baseline under the same metric names, on 8 test sessions."""
    pop_dir = trained["root"] / "pop"
    assert main(["baseline", "popularity", "--data", str(trained["data"]), "--out", str(pop_dir), *EVAL]) == 0
    assert main(["evaluate", "--run", str(trained["run"]), "--baseline", str(pop_dir), "--json", *EVAL]) == 0
    result = json.loads((trained["run"] / "metrics.json").read_text())
    assert result["protocol"] == "session" and result["split"] == "test", f"{result['protocol']} {result['split']}"
    names = {"session_recall@3", "session_ndcg@3", "recall@10", "ndcg@10", "recall@50", "ndcg@50", "n_sessions"}
    for model in ("onerec", "popularity"):
        missing = names - set(result["models"][model])
        assert not missing, f"{model} lacks {sorted(missing)}"
        assert result["models"][model]["n_sessions"] == 8, f"{model} scored {result['models'][model]['n_sessions']} sessions"
    assert result["models"]["popularity"]["recall@10"] == pytest.approx(
        json.loads((pop_dir / "baseline.json").read_text())["test"]["recall@10"]
    ), "the stored baseline must score the same as when it was trained"


def test_generated_sessions_are_healthy(trained: dict[str, Path]) -> None:
    """Trie-constrained beam search gives valid_item_rate 1 and duplicate_rate 0 (EVAL.md §4)."""
    assert main(["evaluate", "--run", str(trained["run"]), *EVAL]) == 0
    onerec = json.loads((trained["run"] / "metrics.json").read_text())["models"]["onerec"]
    assert onerec["valid_item_rate"] == 1.0, f"valid_item_rate {onerec['valid_item_rate']}"
    assert onerec["duplicate_rate"] == 0.0, f"duplicate_rate {onerec['duplicate_rate']}"
    assert len(onerec["code_entropy"]) == 3, f"entropy per level: {onerec['code_entropy']}"


def test_baseline_from_other_data_is_refused(trained: dict[str, Path], tmp_path: Path, capsys) -> None:
    """A baseline trained on another data directory is an error (exit 2), and metrics.json is not rewritten."""
    other_data, _ = make_fixture(tmp_path / "other", n_train=48, n_valid=16, seed=1)
    samples = pl.read_parquet(other_data / "samples.parquet")
    samples.with_columns(pl.when(pl.col("sample") >= 56).then(pl.lit("test")).otherwise(pl.col("split")).alias("split")
                         ).write_parquet(other_data / "samples.parquet")
    assert main(["baseline", "popularity", "--data", str(other_data), "--out", str(tmp_path / "pop"), *EVAL]) == 0
    before = (trained["run"] / "metrics.json").read_bytes() if (trained["run"] / "metrics.json").exists() else b""
    code = main(["evaluate", "--run", str(trained["run"]), "--baseline", str(tmp_path / "pop"), *EVAL])
    assert code == 2, f"exit code {code}"
    assert "trained on" in capsys.readouterr().err, "the error must say which data the baseline was trained on"
    after = (trained["run"] / "metrics.json").read_bytes() if (trained["run"] / "metrics.json").exists() else b""
    assert before == after, "metrics.json changed although evaluation failed"


def test_copy_gate_bias_needs_a_copy_head(trained: dict[str, Path], capsys) -> None:
    """eval.copy_gate_bias on a model without the copy head is a one-line error (exit 2), nothing written."""
    before = (trained["run"] / "metrics.json").read_bytes() if (trained["run"] / "metrics.json").exists() else b""
    code = main(["evaluate", "--run", str(trained["run"]), *EVAL, "--set", "eval.copy_gate_bias=1.0"])
    assert code == 2, f"exit code {code}"
    assert "no copy head" in capsys.readouterr().err
    after = (trained["run"] / "metrics.json").read_bytes() if (trained["run"] / "metrics.json").exists() else b""
    assert before == after, "metrics.json changed although evaluation failed"


def test_stored_sasrec_baseline_rescores_identically(trained: dict[str, Path]) -> None:
    """A SASRec baseline reloaded by `onerec evaluate --baseline` scores exactly what it scored when trained."""
    out = trained["root"] / "sasrec"
    tiny = ["--set", "sasrec.epochs=2", "--set", "sasrec.d_model=16", "--set", "sasrec.n_layers=1",
            "--set", "sasrec.max_len=8", "--set", "sasrec.threads=1"]
    assert main(["baseline", "sasrec", "--data", str(trained["data"]), "--out", str(out), *EVAL, *tiny]) == 0
    assert main(["evaluate", "--run", str(trained["run"]), "--baseline", str(out), *EVAL]) == 0
    stored = json.loads((out / "baseline.json").read_text())["test"]
    rescored = json.loads((trained["run"] / "metrics.json").read_text())["models"]["sasrec_ce"]
    for key in ("session_recall@3", "recall@10", "ndcg@50"):
        assert rescored[key] == pytest.approx(stored[key]), f"{key}: {rescored[key]} != stored {stored[key]}"


def test_per_sample_values_average_to_the_reported_figures(trained: dict[str, Path]) -> None:
    """RUN/per_sample.parquet holds one value per scored session and model; each column's mean is the figure in
    metrics.json, and metrics.json's 95 % interval brackets it."""
    assert main(["evaluate", "--run", str(trained["run"]), *EVAL]) == 0
    result = json.loads((trained["run"] / "metrics.json").read_text())
    table = pl.read_parquet(trained["run"] / "per_sample.parquet")
    assert table.height == 8, f"{table.height} rows for 8 test sessions"
    for model in ("onerec", "popularity"):
        for metric in ("session_recall@3", "recall@10", "ndcg@50"):
            column = table[f"{model}/{metric}"].to_numpy()
            assert column.mean() == pytest.approx(result["models"][model][metric]), f"{model} {metric}"
            lo, hi = result["uncertainty"]["models"][model]["ci95"][metric]
            assert lo <= result["models"][model][metric] <= hi, f"{model} {metric}: [{lo}, {hi}]"
    vs = result["uncertainty"]["models"]["popularity"]["vs_onerec"]["recall@10"]
    assert vs["diff"] == pytest.approx(result["models"]["popularity"]["recall@10"] - result["models"]["onerec"]["recall@10"])


def test_compare_pairs_runs_on_the_same_samples_only(trained: dict[str, Path], tmp_path: Path, capsys) -> None:
    """`onerec compare` of a run with itself gives zero differences; runs scored on other samples are refused."""
    import shutil

    assert main(["evaluate", "--run", str(trained["run"]), *EVAL]) == 0
    copy = tmp_path / "copy"
    shutil.copytree(trained["run"], copy)
    capsys.readouterr()
    assert main(["compare", "--a", str(trained["run"]), "--b", str(copy), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metrics"] and all(r["diff"] == 0 for r in result["metrics"].values()), result["metrics"]
    assert main(["compare", "--a", str(trained["run"]), "--b", str(copy), "--model-b", "popularity"]) == 0
    assert "recall@10" in capsys.readouterr().out
    assert main(["evaluate", "--run", str(copy), *EVAL, "--set", "eval.split=valid"]) == 0
    capsys.readouterr()
    assert main(["compare", "--a", str(trained["run"]), "--b", str(copy)]) == 2
    assert "different samples" in capsys.readouterr().err
    assert main(["compare", "--a", str(trained["run"]), "--b", str(tmp_path / "nothing")]) == 2


def test_item_wise_model_trains_on_every_session_item_and_answers_with_its_ranked_items(
        trained: dict[str, Path], capsys) -> None:
    """A TIGER-style run (model.max_session_items = 1) on session data: each positive of a training session is
    a target, and evaluation ranks its next items like a baseline (the first m are the session)."""
    from onerec.train import train_command

    root = trained["root"]
    overrides = ("model.max_session_items=1", "model.ffn=dense", "train.max_steps=4", "train.eval_every=2",
                 "train.patience=0", "train.tensorboard=false")
    train_command(trained["data"], trained["data"].parent / "tok", write_config(root / "tiny_iw.toml"),
                  root / "run_iw", overrides=overrides)
    assert "single-item targets" in capsys.readouterr().err, "session targets were not split into items"
    assert main(["evaluate", "--run", str(root / "run_iw"), *EVAL]) == 0
    result = json.loads((root / "run_iw" / "metrics.json").read_text())
    assert result["generation"] == "item-wise" and result["m"] == 1, result["generation"]
    onerec = result["models"]["onerec"]
    assert onerec["n_sessions"] == 8 and onerec["duplicate_rate"] == 0.0 and onerec["valid_item_rate"] == 1.0


def test_next_item_lists_score_a_session_model_like_an_item_wise_one(trained: dict[str, Path]) -> None:
    """eval.next_item_lists: the session model's ranked first items are its list (the first m its session), labelled
    as a diagnostic; the lists are as healthy as the beams and the baselines' figures do not move."""
    assert main(["evaluate", "--run", str(trained["run"]), *EVAL]) == 0
    beams = json.loads((trained["run"] / "metrics.json").read_text())
    assert main(["evaluate", "--run", str(trained["run"]), *EVAL, "--set", "eval.next_item_lists=true",
                 "--set", "eval.beam_size=50"]) == 0
    lists = json.loads((trained["run"] / "metrics.json").read_text())
    assert beams["generation"] == "session", beams["generation"]
    assert lists["generation"] == "next-item lists (diagnostic)" and lists["m"] == 1, lists["generation"]
    onerec = lists["models"]["onerec"]
    assert onerec["n_sessions"] == 8 and onerec["valid_item_rate"] == 1.0 and onerec["duplicate_rate"] == 0.0
    assert lists["models"]["popularity"] == pytest.approx(beams["models"]["popularity"]), "baselines must not move"


def test_spread_beams_behind_the_joint_top_beam_keep_the_session(trained: dict[str, Path]) -> None:
    """eval.spread_top = "joint": the session G is the joint search's top beam, so the session metrics equal the
    default scoring's, while the spread beams behind it (distinct first items) fill the deeper list."""
    assert main(["evaluate", "--run", str(trained["run"]), *EVAL]) == 0
    joint = json.loads((trained["run"] / "metrics.json").read_text())["models"]["onerec"]
    assert main(["evaluate", "--run", str(trained["run"]), *EVAL, "--set", "eval.spread_beams=true",
                 "--set", 'eval.spread_top="joint"']) == 0
    hybrid = json.loads((trained["run"] / "metrics.json").read_text())["models"]["onerec"]
    for name in ("session_recall@3", "session_ndcg@3", "item_coverage_top_beam"):
        assert hybrid[name] == pytest.approx(joint[name]), f"{name}: {hybrid[name]} vs {joint[name]}"
    assert hybrid["valid_item_rate"] == 1.0 and hybrid["duplicate_rate"] == 0.0


def test_spread_top_without_spread_beams_is_refused(trained: dict[str, Path], capsys) -> None:
    """eval.spread_top = "joint" alone would change nothing: a one-line config error, exit 2."""
    assert main(["evaluate", "--run", str(trained["run"]), *EVAL, "--set", 'eval.spread_top="joint"']) == 2
    err = capsys.readouterr().err
    assert "spread_beams" in err and "Traceback" not in err, err


def test_item_head_run_trains_loads_and_evaluates_healthy(trained: dict[str, Path], capsys) -> None:
    """A run trained with model.item_head logs its loss, reloads, and scores healthy sessions at any
    eval.item_head_weight; the weight changes the ranking inputs only. On a model without the head it is refused."""
    from onerec.train import train_command

    root = trained["root"]
    overrides = ("train.max_steps=4", "train.eval_every=2", "train.patience=0", "train.tensorboard=false",
                 "model.item_head=true", "train.log_every=1")
    train_command(trained["data"], root / "tok", write_config(root / "tiny_ih.toml"), root / "run_ih",
                  overrides=overrides)
    rows = [json.loads(line) for line in (root / "run_ih" / "train_log.jsonl").read_text().splitlines()]
    assert any(row.get("kind") == "train" and row.get("item_loss", 0) > 0 for row in rows), "no item_loss logged"
    for weight in ("0.0", "2.0"):
        assert main(["evaluate", "--run", str(root / "run_ih"), *EVAL, "--set", f"eval.item_head_weight={weight}"]) == 0
        onerec = json.loads((root / "run_ih" / "metrics.json").read_text())["models"]["onerec"]
        assert onerec["valid_item_rate"] == 1.0 and onerec["duplicate_rate"] == 0.0, f"weight {weight}: {onerec}"
    code = main(["evaluate", "--run", str(trained["run"]), *EVAL, "--set", "eval.item_head_weight=1.0"])
    assert code == 2 and "no item head" in capsys.readouterr().err, f"exit code {code}"
