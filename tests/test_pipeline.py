"""``onerec pipeline``: every stage completes, reruns skip what is done, a config change reruns downstream only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from onerec.pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "tiny_pipeline.toml"


def test_pipeline_writes_every_section(tiny_pipeline_run: Path) -> None:
    """Metrics for the model and its baselines, the alignment rounds, and a report with tables and images."""
    quality = json.loads((tiny_pipeline_run / "model" / "metrics.json").read_text())
    assert {"onerec", "popularity"} <= set(quality["models"]), quality["models"].keys()
    onerec = quality["models"]["onerec"]
    assert onerec["valid_item_rate"] == 1.0 and onerec["duplicate_rate"] == 0.0, onerec
    run = json.loads((tiny_pipeline_run / "model" / "run.json").read_text())  # the encoder sees each item's embedding
    emb_dim = json.loads((tiny_pipeline_run / "emb" / "embed.json").read_text())["config"]["dim"]
    assert run["emb"] and run["model_config"]["item_emb_dim"] == emb_dim > 0, (run["emb"], run["model_config"])
    rounds = json.loads((tiny_pipeline_run / "align" / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [0, 1], rounds
    for key in ("rm_reward_mean", "rm_reward_max", "judge_reward", "recall@10"):
        assert all(key in r for r in rounds), f"{key} missing from the alignment table"
    assert (tiny_pipeline_run / "align" / "round_1" / "pairs.parquet").is_file()
    sim = json.loads((tiny_pipeline_run / "rm" / "eval" / "metrics.json").read_text())["simulator"]
    assert {"logged", "invented", "all"} <= set(sim), sim.keys()
    for name, entry in sim.items():  # the judge's agreement with its own pointwise part is a correlation
        ceiling = entry["spearman_judge_no_session_effects"]
        assert -1.0 <= ceiling <= 1.0 and -1.0 <= entry["spearman_reward"] <= 1.0, (name, entry)
    html = (tiny_pipeline_run / "report.html").read_text()
    for title in ("Dataset", "Semantic IDs", "Training", "Quality", "Reward model", "Alignment", "Example generated"):
        assert title in html, f"report lacks the {title!r} section"
    assert html.count("<table>") >= 5 and "data:image/png;base64," in html


def test_rerun_skips_and_change_reruns_downstream_only(tiny_pipeline_run: Path, tmp_path: Path) -> None:
    """A second run skips every stage; changing align.steps reruns align and evaluate, nothing upstream."""
    run = tmp_path / "run"
    shutil.copytree(tiny_pipeline_run, run)
    status = run_pipeline(CONFIG, run, log=lambda _: None)
    stages = {k: v for k, v in status.items() if k != "report"}
    assert set(stages.values()) == {"skipped"}, stages
    status = run_pipeline(CONFIG, run, ["align.steps=2"], log=lambda _: None)
    ran = {k for k, v in status.items() if v == "ran"}
    assert ran == {"align", "evaluate"}, status


def test_tune_grid_tunes_the_item_head_on_validation_before_test(tmp_path: Path) -> None:
    """With pipeline.tune_grid the evaluate stage first runs `onerec tune --apply` on validation samples (capped at
    pipeline.tune_samples), then scores test; the grid and the cap are part of its fingerprint."""
    from onerec.config import load_section
    from onerec.pipeline import PipelineConfig, build_stages

    config = REPO / "configs" / "amazon_sports.toml"
    pcfg = load_section(PipelineConfig, "pipeline", config)
    stage = next(s for s in build_stages(pcfg, config, []) if s.name == "evaluate")
    tune, evaluate = stage.argv(tmp_path)
    assert tune[:5] == ["tune", "--run", str(tmp_path / "model"), "--grid", "0,1,2,3,5,10"] and "--apply" in tune
    assert tune[-2:] == ["--set", "eval.max_samples=4096"] and evaluate[0] == "evaluate"
    assert "pipeline" in stage.sections
    plain = load_section(PipelineConfig, "pipeline", REPO / "configs" / "tiny_pipeline.toml")
    stage = next(s for s in build_stages(plain, config, []) if s.name == "evaluate")
    assert [cmd[0] for cmd in stage.argv(tmp_path)] == ["evaluate"] and "pipeline" not in stage.sections
