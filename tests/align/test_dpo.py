"""DPO rounds and the sampling server on the tiny pipeline run (simulated world, toy model)."""

from __future__ import annotations

import dataclasses

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from onerec import checkpoint as ckpt
from onerec.align import sampler as S
from onerec.align.dpo import AlignConfig, left_pad, load_policy, train_round, user_histories
from onerec.batching import SampleTable, seed_samples


def _pairs(run: Path) -> pl.DataFrame:
    return pl.read_parquet(run / "align" / "round_1" / "pairs.parquet")


def test_reference_never_changes(tiny_pipeline_run: Path) -> None:
    """After a round the seed run's weights are bit-identical, and the stored reference log-probs are the
    seed model's own log-probs of the pairs."""
    info = json.loads((tiny_pipeline_run / "model" / "run.json").read_text())
    assert ckpt.sha256_file(tiny_pipeline_run / "model" / "model.safetensors") == info["weights_sha256"]
    ref, _ = ckpt.load_run(tiny_pipeline_run / "model")
    pairs = _pairs(tiny_pipeline_run).head(8)
    window = ref.config.max_history
    hist = left_pad([np.asarray(h) for h in pairs["history"].to_list()], window)
    with torch.no_grad():
        chosen = ref.sequence_logp(hist, torch.tensor(pairs["chosen"].to_list()))
    torch.testing.assert_close(chosen.double(), torch.tensor(pairs["ref_chosen_logp"].to_numpy()), atol=1e-4, rtol=1e-4)


def test_pairs_prefer_higher_reward_and_distinct_sessions(tiny_pipeline_run: Path) -> None:
    """Every pair's chosen session scores at least its rejected one and the two differ; items are distinct."""
    pairs = _pairs(tiny_pipeline_run)
    assert pairs.height > 0
    assert (pairs["chosen_reward"] >= pairs["rejected_reward"]).all()
    assert all(c != r for c, r in zip(pairs["chosen"].to_list(), pairs["rejected"].to_list()))
    assert all(len(set(c)) == len(c) for c in pairs["chosen"].to_list()), "a session repeats an item"


def test_dpo_round_raises_the_margin_and_policy_moves(tiny_pipeline_run: Path) -> None:
    """Training on pairs raises the policy's log-prob margin of chosen over rejected; the policy's parameters
    change while the reference model (a separate load) stays as it was."""
    data = tiny_pipeline_run / "data"
    policy, _, _, _ = load_policy(tiny_pipeline_run / "model")
    reference, _, _, _ = load_policy(tiny_pipeline_run / "model")
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    pairs = _pairs(tiny_pipeline_run)
    samples = pl.read_parquet(data / "samples.parquet")
    sessions = pl.read_parquet(data / "sessions.parquet", columns=["session", "high_quality"])
    table = SampleTable.from_frame(seed_samples(samples, sessions, "train"))
    cfg = AlignConfig(steps=30, lr=3e-3, batch_size=8, pair_batch_size=16, beta=0.5, dpo_weight=1.0)
    log = train_round(policy, pairs, table, cfg, round_index=1, log=lambda _: None)
    assert log[0]["pref_loss"] == pytest.approx(np.log(2), abs=1e-3), "DPO loss must start at ln 2 (policy = ref)"
    first, last = np.mean([r["margin"] for r in log[:3]]), np.mean([r["margin"] for r in log[-3:]])
    assert last > first + 0.05, f"margin did not rise: {first:.4f} -> {last:.4f}"
    moved = any(not torch.equal(p, reference.state_dict()[k]) for k, p in policy.state_dict().items())
    assert moved, "policy parameters did not change"
    for k, v in reference.state_dict().items():
        assert torch.equal(v, before[k]), f"reference parameter {k} changed"


def test_chosen_nll_term_keeps_chosen_sessions_likely(tiny_pipeline_run: Path) -> None:
    """RPO's chosen-NLL term (``align.chosen_nll_weight``): after the same round from the same policy, the
    chosen sessions' mean log-prob is higher with the term than without it."""
    data = tiny_pipeline_run / "data"
    pairs = _pairs(tiny_pipeline_run)
    samples = pl.read_parquet(data / "samples.parquet")
    sessions = pl.read_parquet(data / "sessions.parquet", columns=["session", "high_quality"])
    table = SampleTable.from_frame(seed_samples(samples, sessions, "train"))
    chosen_logp = []
    for alpha in (0.0, 1.0):
        policy, _, _, _ = load_policy(tiny_pipeline_run / "model")
        cfg = AlignConfig(steps=30, lr=3e-3, batch_size=8, pair_batch_size=16, beta=0.5, dpo_weight=1.0,
                          chosen_nll_weight=alpha)
        train_round(policy, pairs, table, cfg, round_index=1, log=lambda _: None)
        hist = left_pad([np.asarray(h) for h in pairs["history"].to_list()], policy.config.max_history)
        policy.eval()
        with torch.no_grad():
            chosen_logp.append(float(policy.sequence_logp(hist, torch.tensor(pairs["chosen"].to_list())).mean()))
    assert chosen_logp[1] > chosen_logp[0], f"chosen log-prob with the NLL term <= without: {chosen_logp}"
    with pytest.raises(Exception, match="chosen_nll_weight"):
        AlignConfig(chosen_nll_weight=-1.0)


@pytest.fixture()
def policy_root(tiny_pipeline_run: Path, tmp_path: Path) -> Path:
    root = tmp_path / "align"
    root.mkdir()
    # LATEST names a policy directory inside the root: a symlink to the seed run
    (root / "seed").symlink_to(tiny_pipeline_run / "model")
    (root / "LATEST").write_text("seed\n")
    return root


def _serve_once(run: Path, root: Path, out: Path, monkeypatch: pytest.MonkeyPatch, rank: int, world: int) -> dict:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    return S.run_sample_server(root, run / "rm", run / "data", out, n_beams=4, session_len=3, shard_users=16,
                               max_users=48, once=True, log=lambda _: None)


def test_two_samplers_never_write_the_same_pair(tiny_pipeline_run: Path, policy_root: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranks 0 and 1 cover disjoint users; a rerun writes nothing new; shards round-trip through read_shards."""
    out = tmp_path / "shards"
    first = _serve_once(tiny_pipeline_run, policy_root, out, monkeypatch, 0, 2)
    second = _serve_once(tiny_pipeline_run, policy_root, out, monkeypatch, 1, 2)
    assert first["shards"] > 0 and second["shards"] > 0
    again = _serve_once(tiny_pipeline_run, policy_root, out, monkeypatch, 0, 2)
    assert again["shards"] == 0 and again["skipped_existing"] == first["shards"], again
    _, _, version, sha = load_policy(policy_root / "seed")
    pairs, counts = S.read_shards(out, version, sha, log=lambda _: None)
    assert counts["pairs"] == first["pairs"] + second["pairs"]
    per_rank = [set(pl.read_parquet(p)["user"].to_list()) for p in sorted(out.glob("*-r000-*"))]
    other = [set(pl.read_parquet(p)["user"].to_list()) for p in sorted(out.glob("*-r001-*"))]
    assert not set().union(*per_rank) & set().union(*other), "two samplers wrote pairs for the same user"
    assert pairs.select(["user", "sample"]).is_duplicated().sum() == 0


def test_killed_sampler_leaves_no_partial_shard(tiny_pipeline_run: Path, policy_root: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A sampler dying inside its second shard leaves only the first shard (no temp file); a restart fills the rest."""
    out = tmp_path / "shards"
    real = S.write_shard
    calls = {"n": 0}

    def dying(frame: pl.DataFrame, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            with S.atomic_path(path) as tmp:
                tmp.write_bytes(b"PAR1 half written")
                raise KeyboardInterrupt("killed mid-shard")
        real(frame, path)

    monkeypatch.setattr(S, "write_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        _serve_once(tiny_pipeline_run, policy_root, out, monkeypatch, 0, 1)
    assert [p.name for p in out.iterdir()] == [S.shard_name(load_policy(policy_root / "seed")[2], 0, 0)]
    monkeypatch.setattr(S, "write_shard", real)
    resumed = _serve_once(tiny_pipeline_run, policy_root, out, monkeypatch, 0, 1)
    assert resumed["skipped_existing"] == 1 and resumed["shards"] == 2, resumed


def test_foreign_and_empty_shards_are_skipped(tiny_pipeline_run: Path, tmp_path: Path) -> None:
    """Shards from another tokenizer and empty shards are skipped with a count; the valid ones are read."""
    pairs = _pairs(tiny_pipeline_run).drop("round")
    version = pairs["policy_version"][0]
    sha = pairs["codes_sha256"][0]
    S.write_shard(pairs, tmp_path / S.shard_name(version, 0, 0))
    S.write_shard(pairs.with_columns(pl.lit("other").alias("codes_sha256")), tmp_path / S.shard_name(version, 0, 1))
    S.write_shard(pairs.head(0), tmp_path / S.shard_name(version, 0, 2))
    read, counts = S.read_shards(tmp_path, version, sha, log=lambda _: None)
    assert read.height == pairs.height
    assert counts["skipped_other_tokenizer"] == 1 and counts["skipped_empty"] == 1, counts


def test_user_histories_are_training_users(tiny_pipeline_run: Path) -> None:
    """Sampled users come from the training split, with their history left-padded to the model window."""
    users, samples, hist = user_histories(tiny_pipeline_run / "data", 20)
    train = pl.read_parquet(tiny_pipeline_run / "data" / "samples.parquet").filter(pl.col("split") == "train")
    assert set(samples.tolist()) <= set(train["sample"].to_list())
    assert hist.shape == (len(users), 20) and (hist[:, -1] >= 0).all()


def test_evaluation_uses_the_configured_split(tiny_pipeline_run: Path) -> None:
    """align.eval_split = "valid" evaluates on validation users and records the split; an unknown split is refused."""
    from onerec.align.dpo import evaluate_policy
    from onerec.config import ConfigError
    from onerec.reward.model import RewardModel

    with pytest.raises(ConfigError):
        AlignConfig(eval_split="train")  # type: ignore[arg-type]
    policy, trie, _, _ = load_policy(tiny_pipeline_run / "model")
    rm = RewardModel.load(tiny_pipeline_run / "rm")
    cfg = AlignConfig(n_beams=4, session_len=3, eval_users=8, eval_beams=4, eval_split="valid")
    result = evaluate_policy(policy, trie, rm, tiny_pipeline_run / "data", cfg)
    valid_users = (pl.read_parquet(tiny_pipeline_run / "data" / "samples.parquet", columns=["user", "split"])
                   .filter(pl.col("split") == "valid")["user"].n_unique())
    assert result["split"] == "valid" and 0 < result["users"] <= min(8, valid_users), result
    assert "recall@10" in result and "rm_reward_max" in result, sorted(result)
    assert result["recall_beams"] == 4, "eval_recall_beams = 0 searches Recall@10 with eval_beams"
    wide = evaluate_policy(policy, trie, rm, tiny_pipeline_run / "data",
                           dataclasses.replace(cfg, eval_recall_beams=8))
    assert wide["recall_beams"] == 8 and wide["rm_reward_max"] == result["rm_reward_max"], \
        "eval_recall_beams widens only the Recall search, not the N sessions the RM towers average over"
    with pytest.raises(ConfigError, match="eval_recall_beams"):
        AlignConfig(eval_recall_beams=-1)


def test_ntp_term_uses_the_seed_models_session_rule(tiny_pipeline_run: Path, tmp_path: Path) -> None:
    """align.ntp_sessions = "seed" takes the rule M_0 was trained on from its run.json (so a seed model
    trained on every session, as on KuaiRand-Pure, is not regularised towards the ~100 high-quality samples);
    an explicit rule wins; a missing run.json is a clear error; an unknown rule is refused."""
    from onerec.align.dpo import ntp_rule
    from onerec.config import ConfigError
    from onerec.io import OnerecError

    seed = tiny_pipeline_run / "model"
    own = json.loads((seed / "run.json").read_text())["train_config"]["seed_sessions"]
    assert ntp_rule(seed, AlignConfig()) == own
    run = tmp_path / "m"
    run.mkdir()
    info = json.loads((seed / "run.json").read_text())
    for rule in ("all", "high_quality"):
        info["train_config"]["seed_sessions"] = rule
        (run / "run.json").write_text(json.dumps(info))
        assert ntp_rule(run, AlignConfig()) == rule
    assert ntp_rule(run, AlignConfig(ntp_sessions="all")) == "all"
    with pytest.raises(OnerecError, match="run.json"):
        ntp_rule(tmp_path / "missing", AlignConfig())
    with pytest.raises(ConfigError):
        AlignConfig(ntp_sessions="some")  # type: ignore[arg-type]


def test_seed_reference_anchors_every_round_to_m0(tiny_pipeline_run: Path, tmp_path: Path) -> None:
    """align.reference = "seed": round 2's stored reference log-probs are M_0's log-probs of its pairs, not
    those of the round-1 policy that sampled them (the default, "previous"); an unknown value is refused."""
    from onerec.align.dpo import reference_logps, run_alignment
    from onerec.config import ConfigError
    from onerec.io import OnerecError

    run = tiny_pipeline_run
    common = dict(rounds=2, user_share=0.2, n_beams=6, session_len=3, steps=4, batch_size=16, pair_batch_size=8,
                  eval_users=8, eval_beams=4, lr=3e-3, progress=False)
    stored, rows = {}, {}
    for ref in ("previous", "seed"):
        out = tmp_path / ref
        m0 = rows["previous"][0] if rows else None  # the second run reuses M_0's evaluation (seed_metrics)
        rows[ref] = run_alignment(run / "model", run / "rm", run / "data", out, AlignConfig(reference=ref, **common),
                                  log=lambda _: None, seed_metrics=m0)["rounds"]
        stored[ref] = pl.read_parquet(out / "round_2" / "pairs.parquet")
    keys = ["version", "recall@10", "rm_reward_mean", "rm_reward_max"]
    for t in (0, 1):  # M_0 (reused) and round 1 (reference M_0 either way) are the same; round 2 differs
        assert [rows["seed"][t][k] for k in keys] == [rows["previous"][t][k] for k in keys], t
    assert rows["seed"][2]["version"] != rows["previous"][2]["version"]
    with pytest.raises(OnerecError, match="seed_metrics"):
        run_alignment(run / "model", run / "rm", run / "data", tmp_path / "bad", AlignConfig(**common),
                      log=lambda _: None, seed_metrics={**rows["seed"][0], "version": "other"})
    m0, _, _, _ = load_policy(run / "model")
    m1, _, _, _ = load_policy(tmp_path / "seed" / "round_1")
    for ref, model in (("seed", m0), ("previous", m1)):
        pairs = stored[ref]
        assert pairs.height > 0
        fresh = reference_logps(model, pairs)
        np.testing.assert_allclose(pairs["ref_chosen_logp"].to_numpy(), fresh["ref_chosen_logp"].to_numpy(), atol=1e-4)
        np.testing.assert_allclose(pairs["ref_rejected_logp"].to_numpy(), fresh["ref_rejected_logp"].to_numpy(),
                                   atol=1e-4)
    other = reference_logps(m1, stored["seed"])  # M_1 and M_0 disagree on these pairs: the anchor is not a no-op
    assert np.abs(other["ref_chosen_logp"].to_numpy() - stored["seed"]["ref_chosen_logp"].to_numpy()).max() > 1e-3
    with pytest.raises(ConfigError, match="reference"):
        AlignConfig(reference="initial")  # type: ignore[arg-type]


def test_reward_model_of_another_item_set_is_refused_before_writing(tiny_pipeline_run: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An RM whose catalogue size differs from the policy's is a clear error and leaves no output directory."""
    from onerec.align.dpo import run_alignment
    from onerec.io import OnerecError
    from onerec.reward.model import RewardModel

    load = RewardModel.load

    def other_items(path):  # the same RM, but claiming one more item than the policy has
        rm = load(path)
        rm.n_items += 1
        return rm

    monkeypatch.setattr(RewardModel, "load", staticmethod(other_items))
    run, out = tiny_pipeline_run, tmp_path / "align"
    with pytest.raises(OnerecError, match="different item sets"):
        run_alignment(run / "model", run / "rm", run / "data", out, AlignConfig(rounds=1, n_beams=4, session_len=3,
                      steps=1, batch_size=8, pair_batch_size=4, eval_users=4, eval_beams=4, progress=False),
                      log=lambda _: None)
    assert not out.exists(), "nothing may be written for refused inputs"


def test_policy_run_does_not_inherit_the_parents_decoding_choice(tiny_pipeline_run: Path, tmp_path: Path) -> None:
    """A decoding knob the parent run recorded (`onerec tune --apply`) was chosen for the parent's weights: the
    saved policy's run.json drops it and keeps the rest of the parent's info."""
    from onerec.align.dpo import save_policy

    parent = json.loads((tiny_pipeline_run / "model" / "run.json").read_text()) | {"decoding": {"copy_gate_bias": 1.0}}
    policy, _ = ckpt.load_run(tiny_pipeline_run / "model")
    save_policy(policy, parent, tmp_path / "round_1", 1, AlignConfig())
    info = json.loads((tmp_path / "round_1" / "run.json").read_text())
    assert "decoding" not in info and info["n_items"] == parent["n_items"] and info["align_round"] == 1
    assert ckpt.load_run(tmp_path / "round_1")[0].copy_gate_bias == 0.0
