"""Progress bars of the long stages (issue 10): on stderr only, silent with ``progress = false``, and never a
change to what a stage computes: the same seed gives the same outputs with the bar on or off."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from onerec.config import load_section

REPO = Path(__file__).resolve().parents[1]


def _bar_on_stderr(capsys: pytest.CaptureFixture[str], *expected: str) -> None:
    """The bar drew on stderr (every ``expected`` text there) and wrote nothing to stdout."""
    out, err = capsys.readouterr()
    assert out == "", f"a progress bar wrote to stdout: {out!r}"
    for text in expected:
        assert text in err, f"{text!r} not on stderr: {err[-300:]!r}"


def _silent(capsys: pytest.CaptureFixture[str]) -> None:
    out, err = capsys.readouterr()
    assert out == "" and err == "", f"progress = false still drew: stdout {out!r}, stderr {err[-300:]!r}"


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs with the bar on")


def test_embed_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Item-embedding training: batches with epoch and loss on stderr; identical embeddings and losses either way."""
    from onerec.embed import EmbedConfig
    from onerec.embed.encoder import train_aligned
    from onerec.embed.features import build_features
    from onerec.embed.pairs import co_engagement_pairs, train_positives
    from tests.embed.planted import make_data_dir

    data, _ = make_data_dir(tmp_path / "data", n_users=60)
    cfg = EmbedConfig(dim=8, hidden=16, epochs=2, batch_size=64, threads=1)
    samples = pl.read_parquet(data / "samples.parquet")
    positives, _ = train_positives(pl.read_parquet(data / "interactions.parquet"), samples)
    features = build_features(pl.read_parquet(data / "items.parquet"), cfg)
    pairs = co_engagement_pairs(positives, cfg.window_items, cfg.window_ms, cfg.max_pairs, cfg.seed)
    capsys.readouterr()
    on, log_on = train_aligned(features, pairs, cfg)
    _bar_on_stderr(capsys, "embed", "epoch=2/2", "loss=")
    off, log_off = train_aligned(features, pairs, dataclasses.replace(cfg, progress=False))
    _silent(capsys)
    np.testing.assert_array_equal(on, off, err_msg="the bar changed the embeddings")
    assert [e["loss"] for e in log_on] == [e["loss"] for e in log_off]


def test_sasrec_bar_and_its_validation(capsys: pytest.CaptureFixture[str]) -> None:
    """SASRec training (loss, valid NDCG@10) and its validation passes draw bars; the model is the same either way."""
    from onerec.evaluate import protocols
    from onerec.evaluate.baselines import sasrec
    from tests.evaluate.baselines.test_sasrec import N_ITEMS, _planted, _tiny

    loo = protocols.leave_one_out(_planted(40), N_ITEMS, max_history=8)

    def fit(progress: bool) -> tuple[sasrec.SASRec, dict]:
        def validate(rec: sasrec.SASRecRecommender) -> float:
            return protocols.evaluate_next_item(rec, loo.valid, progress=progress, desc="sasrec valid")["ndcg@10"]

        cfg = _tiny(epochs=2, eval_every=1, dropout=0.2, threads=1, progress=progress)
        return sasrec.fit(loo.train_sequences, N_ITEMS, cfg, validate=validate)

    capsys.readouterr()
    m_on, s_on = fit(True)
    _bar_on_stderr(capsys, "sasrec", "loss=", "valid_ndcg@10=", "sasrec valid")
    m_off, s_off = fit(False)
    _silent(capsys)
    _same_state(m_on.state_dict(), m_off.state_dict())
    timeless = [[{k: v for k, v in r.items() if k != "seconds"} for r in s["history"]] for s in (s_on, s_off)]
    assert timeless[0] == timeless[1], timeless


@pytest.mark.parametrize("micro_batch_size", [0, 32], ids=["sequential", "accumulating"])
def test_reward_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str], micro_batch_size: int) -> None:
    """Reward-model training, both loops: loss and valid loss on stderr; the same weights either way."""
    from onerec.reward.train import train_reward
    from tests.reward.conftest import make_reward_data, tiny_config

    data = make_reward_data(tmp_path / "data", n_users=20, n_items=30)
    cfg = tiny_config(epochs=2, dropout=0.1, micro_batch_size=micro_batch_size)
    capsys.readouterr()
    on = train_reward(data, tmp_path / "on", cfg)
    _bar_on_stderr(capsys, "reward", "loss=", "valid_loss=")
    off = train_reward(data, tmp_path / "off", dataclasses.replace(cfg, progress=False))
    _silent(capsys)
    _same_state(on.state_dict(), off.state_dict())
    assert [e["train_loss"] for e in on.meta["train_log"]] == [e["train_loss"] for e in off.meta["train_log"]]


def test_evaluation_bar(capsys: pytest.CaptureFixture[str]) -> None:
    """Both harnesses: samples counted with a running Recall@K on stderr; the same metrics either way."""
    from onerec.evaluate import protocols
    from onerec.evaluate.baselines.popularity import Popularity
    from tests.evaluate.baselines.test_sasrec import N_ITEMS, _planted

    loo = protocols.leave_one_out(_planted(50), N_ITEMS, max_history=8)
    pop = Popularity.fit(loo.train_sequences, N_ITEMS)
    sessions = protocols.NextSessionSet(loo.test.history, [np.array([t, (t + 1) % N_ITEMS]) for t in loo.test.target])
    capsys.readouterr()
    item_on = protocols.evaluate_next_item(pop, loo.test, batch_size=8, progress=True, desc="popularity test")
    session_on = protocols.evaluate_next_session(pop, sessions, m=3, batch_size=8, progress=True)
    _bar_on_stderr(capsys, "popularity test", "recall@10=", "evaluate", "recall@50=")
    item_off = protocols.evaluate_next_item(pop, loo.test, batch_size=8)
    session_off = protocols.evaluate_next_session(pop, sessions, m=3, batch_size=8, progress=False)
    _silent(capsys)
    assert item_on == item_off and session_on == session_off


def test_pipeline_passes_progress_and_keeps_fingerprints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--set X.progress=false`` reaches every stage command (each loads it) and reruns nothing that is done."""
    import onerec.report
    from onerec import pipeline
    from onerec.embed import EmbedConfig
    from onerec.evaluate import EvalConfig
    from onerec.evaluate.baselines.sasrec import SASRecConfig
    from onerec.reward import RewardConfig
    from onerec.train import TrainConfig

    calls: list[list[str]] = []
    monkeypatch.setattr(pipeline, "_run_onerec", calls.append)  # record the stage commands, run none
    monkeypatch.setattr(onerec.report, "write_report", lambda out: out / "report.html")
    config, run = REPO / "configs" / "tiny_pipeline.toml", tmp_path / "run"
    pipeline.run_pipeline(config, run, log=lambda _: None)
    off = [f"{s}.progress=false" for s in ("embed", "sasrec", "reward", "eval", "train")]
    status = pipeline.run_pipeline(config, run, off, log=lambda _: None)
    assert {v for k, v in status.items() if k != "report"} == {"skipped"}, status
    calls.clear()
    pipeline.run_pipeline(config, run, off, start_from="embed", log=lambda _: None)
    tables = {"embed": [("embed", EmbedConfig)], "train": [("train", TrainConfig)],
              "baseline": [("eval", EvalConfig), ("sasrec", SASRecConfig)], "evaluate": [("eval", EvalConfig)],
              ("reward", "train"): [("reward", RewardConfig)]}
    checked = set()
    for argv in calls:
        key = tuple(argv[:2]) if argv[0] == "reward" else argv[0]
        if key not in tables:
            continue
        path = Path(argv[argv.index("--config") + 1])
        sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        for section, cls in tables[key]:
            assert load_section(cls, section, path, sets).progress is False, f"{section}.progress on in {argv}"
        checked.add(key)
    assert checked == set(tables), f"stage commands not seen: {set(tables) - checked}"


def test_align_bar(tiny_pipeline_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A DPO round: steps with the NTP and preference losses on stderr; the same weights either way."""
    from onerec.align.dpo import AlignConfig, load_policy, train_round
    from onerec.batching import SampleTable, seed_samples
    from tests.align.test_dpo import _pairs

    data = tiny_pipeline_run / "data"
    pairs = _pairs(tiny_pipeline_run)
    samples = pl.read_parquet(data / "samples.parquet")
    sessions = pl.read_parquet(data / "sessions.parquet", columns=["session", "high_quality"])
    table = SampleTable.from_frame(seed_samples(samples, sessions, "train"))
    cfg = AlignConfig(steps=4, lr=3e-3, batch_size=8, pair_batch_size=8, beta=0.5)
    states = []
    for progress in (True, False):
        policy, _, _, _ = load_policy(tiny_pipeline_run / "model")
        capsys.readouterr()
        train_round(policy, pairs, table, dataclasses.replace(cfg, progress=progress), round_index=1,
                    log=lambda _: None)
        if progress:
            _bar_on_stderr(capsys, "align round 1", "pref_loss=")
        else:
            _silent(capsys)
        states.append(policy.state_dict())
    _same_state(*states)
