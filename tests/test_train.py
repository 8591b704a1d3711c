"""Seed-model training loop (single process): schedule, exact resume, determinism, accumulation,
early stopping, bf16 autocast, logs."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from onerec.checkpoint import load_run
from onerec.train import lr_at, train_command

sys.path.insert(0, str(Path(__file__).parent))
from train_fixture import make_fixture, write_config  # noqa: E402

BASE = ("train.max_steps=6", "train.eval_every=2", "train.save_every=2", "train.patience=0",
        "train.tensorboard=false")


class _Cut(Exception):
    pass


def _rows(run: Path, kind: str) -> list[dict]:
    rows = [json.loads(ln) for ln in (run / "train_log.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


def _losses(run: Path, key: str = "loss") -> torch.Tensor:
    return torch.tensor([r[key] for r in _rows(run, "train")], dtype=torch.float64)


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train")
    data, tok = make_fixture(root)
    return {"root": root, "data": data, "tok": tok, "config": write_config(root / "tiny_train.toml")}


def _train(fx: dict[str, Path], name: str, *overrides: str, resume: bool = False, cut_at: int = 0) -> dict:
    def on_step(step: int) -> None:
        if step == cut_at:
            raise _Cut

    return train_command(fx["data"], fx["tok"], fx["config"], fx["root"] / name, overrides=BASE + overrides,
                         resume=resume, on_step=on_step if cut_at else None)


def test_lr_schedule_warmup_then_cosine() -> None:
    """Linear warmup to lr, then cosine to min_ratio * lr (values worked out by hand)."""
    got = [lr_at(s, 1.0, 4, 12, 0.1) for s in (0, 3, 4, 8, 12, 20)]
    want = [0.25, 1.0, 1.0, 0.1 + 0.9 * 0.5, 0.1, 0.1]
    assert all(math.isclose(g, w, abs_tol=1e-12) for g, w in zip(got, want)), f"lr schedule {got} != {want}"


def test_resume_reproduces_uninterrupted_run_exactly(fx: dict[str, Path]) -> None:
    """Cut after step 5 (last checkpoint at 4, dropout on) and resumed: loss curve and weights are bitwise equal."""
    dropout = "model.dropout=0.2"
    _train(fx, "whole", dropout)
    with pytest.raises(_Cut):
        _train(fx, "cut", dropout, cut_at=5)
    assert json.loads((fx["root"] / "cut/state/trainer.json").read_text())["step"] == 4, "checkpoint not at step 4"
    _train(fx, "cut", dropout, resume=True)
    assert [r["step"] for r in _rows(fx["root"] / "cut", "train")] == list(range(1, 7)), "log steps not 1..6"
    torch.testing.assert_close(_losses(fx["root"] / "cut"), _losses(fx["root"] / "whole"), rtol=0, atol=0,
                               msg=lambda m: f"resumed loss curve differs: {m}")
    a, b = load_run(fx["root"] / "whole")[0].state_dict(), load_run(fx["root"] / "cut")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run's weights differ from the uninterrupted run's"


def test_two_seeded_runs_are_identical(fx: dict[str, Path]) -> None:
    """Two runs with the same seeds (dropout on) log the same losses and write the same weights."""
    infos = [_train(fx, name, "model.dropout=0.2", "train.max_steps=2") for name in ("seed_a", "seed_b")]
    torch.testing.assert_close(_losses(fx["root"] / "seed_a"), _losses(fx["root"] / "seed_b"), rtol=0, atol=0)
    assert infos[0]["weights_sha256"] == infos[1]["weights_sha256"], "same seed, different weights"


def test_accumulation_equals_full_batch(fx: dict[str, Path]) -> None:
    """2 accumulated micro-batches of 4 follow the curve of one batch of 8 (aux loss off: it is per micro-batch)."""
    _train(fx, "accum", "model.aux_loss_coef=0.0", "train.micro_batch_size=4", "train.max_steps=3")
    _train(fx, "full", "model.aux_loss_coef=0.0", "train.micro_batch_size=8", "train.max_steps=3")
    torch.testing.assert_close(_losses(fx["root"] / "accum"), _losses(fx["root"] / "full"), rtol=1e-5, atol=1e-6,
                               msg=lambda m: f"accumulation changes the loss curve: {m}")


def test_early_stopping_keeps_best_weights(fx: dict[str, Path]) -> None:
    """A diverging run stops `patience` validations after its best one; RUN/model.safetensors is that best step."""
    from onerec.batching import SampleTable, seed_samples
    from onerec.dist import DistInfo
    from onerec.validation import validate
    import polars as pl

    info = _train(fx, "early", "train.lr=0.3", "train.warmup_steps=0", "train.eval_every=1", "train.patience=2",
                  "train.max_steps=12", "train.grad_clip=0.0")
    vals = _rows(fx["root"] / "early", "val")
    best = min(range(len(vals)), key=lambda i: vals[i]["val_ntp_loss"])
    assert info["stopped_early"] and info["steps"] < 12, f"did not stop early: {info['steps']} steps"
    assert len(vals) - 1 - best == 2, f"stopped {len(vals) - 1 - best} validations after the best, patience 2"
    model, run_info = load_run(fx["root"] / "early")
    samples = pl.read_parquet(fx["data"] / "samples.parquet")
    valid = SampleTable.from_frame(seed_samples(samples, None, "valid"))
    val = validate(model, valid, len(valid), 4, DistInfo(), lambda: torch.autocast("cpu", enabled=False))
    assert math.isclose(val, vals[best]["val_ntp_loss"], rel_tol=1e-6), \
        f"saved weights give val loss {val}, best logged {vals[best]['val_ntp_loss']}"


def test_select_by_validation_recall(fx: dict[str, Path]) -> None:
    """select_metric = recall@5: every validation logs recall/NDCG from beam search, the kept weights are the
    step with the best logged recall, and an independent search with those weights gives that same figure;
    the recall and NDCG figures follow their definitions against a hand-built ranked list."""
    from onerec.batching import SampleTable, seed_samples
    from onerec.validation import ranking_figures, validate_ranking
    import polars as pl

    info = _train(fx, "by_recall", "train.select_metric=\"recall@5\"", "train.eval_every=1", "train.max_steps=5",
                  "train.select_beam=8", "train.lr=0.01", "train.warmup_steps=0")
    vals = _rows(fx["root"] / "by_recall", "val")
    recalls = [v["val_recall@5"] for v in vals]
    assert all("val_ndcg@5" in v and 0.0 <= v["val_recall@5"] <= 1.0 for v in vals), vals
    best = max(range(len(vals)), key=lambda i: (recalls[i], -i))  # first best
    assert info["best_step"] == vals[best]["step"], f"kept step {info['best_step']}, logged {recalls}"
    assert info["best_val_recall@5"] == recalls[best]
    model, _ = load_run(fx["root"] / "by_recall")
    samples = pl.read_parquet(fx["data"] / "samples.parquet")
    valid = SampleTable.from_frame(seed_samples(samples, None, "valid"))
    again = validate_ranking(model, valid, min(len(valid), 2048), 5, 8)
    assert again["recall@5"] == recalls[best], f"saved weights give {again}, best logged {recalls[best]}"
    ranked = np.array([[3, 1, 2, -1, -1], [7, 8, 9, 4, 5]])
    recall, ndcg = ranking_figures(ranked, [np.array([1]), np.array([5, 6])], 5)
    assert math.isclose(recall, 1.0 + 0.5)
    assert math.isclose(ndcg, 1 / math.log2(3) + (1 / math.log2(6)) / (1 + 1 / math.log2(3)))


def test_selection_follows_the_metric_not_the_loss(fx: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """With a scripted validation NDCG that peaks at the 3rd validation, the kept weights are step 3's and
    patience counts from there, whatever the loss does."""
    import onerec.train as T

    script = iter([0.1, 0.2, 0.5, 0.4, 0.3, 0.45])
    monkeypatch.setattr(T, "ranking_on_rank0", lambda *a, **k: (lambda v: {"recall@3": 0.0, "ndcg@3": v})(next(script)))
    info = _train(fx, "scripted", "train.select_metric=\"ndcg@3\"", "train.eval_every=1", "train.max_steps=6",
                  "train.patience=3")
    vals = _rows(fx["root"] / "scripted", "val")
    assert info["best_step"] == 3 and info["best_val_ndcg@3"] == 0.5, info
    assert info["stopped_early"] and len(vals) == 6, f"{len(vals)} validations, stopped {info['stopped_early']}"
    assert [v["best_val_ndcg@3"] for v in vals] == [0.1, 0.2, 0.5, 0.5, 0.5, 0.5]


def test_select_metric_is_checked() -> None:
    from onerec.config import ConfigError
    from onerec.train import TrainConfig

    for bad in ("recall", "recall@0", "auc@10", "ndcg@x"):
        with pytest.raises(ConfigError, match="select_metric"):
            TrainConfig(select_metric=bad)


def test_bf16_autocast_trains_close_to_fp32(fx: dict[str, Path]) -> None:
    """bf16 autocast (CPU) gives a finite first-step loss within 2e-2 of fp32's."""
    _train(fx, "bf16", "train.precision=\"bf16\"", "train.max_steps=1")
    _train(fx, "fp32", "train.max_steps=1")
    bf16, fp32 = _losses(fx["root"] / "bf16"), _losses(fx["root"] / "fp32")
    assert torch.isfinite(bf16).all() and abs(bf16[0] - fp32[0]) < 2e-2, f"bf16 {bf16.tolist()} vs fp32 {fp32.tolist()}"


def test_logs_throughput_and_tensorboard(fx: dict[str, Path]) -> None:
    """Every step is logged with positive tokens/s and samples/s, and TensorBoard events are written."""
    _train(fx, "tb", "train.max_steps=2", "train.tensorboard=true")
    rows = _rows(fx["root"] / "tb", "train")
    assert [r["step"] for r in rows] == [1, 2], f"logged steps {[r['step'] for r in rows]}"
    assert all(r["tokens_per_s"] > 0 and r["samples_per_s"] > 0 for r in rows), f"throughput missing: {rows}"
    assert list((fx["root"] / "tb" / "tb").glob("events.out.tfevents.*")), "no TensorBoard event file in RUN/tb"


def test_shipped_configs_have_valid_train_tables() -> None:
    """tiny/small/base each carry a [train] table that loads into TrainConfig with global batch = k * micro."""
    from onerec.config import load_section, read_toml
    from onerec.train import TrainConfig

    for name in ("tiny", "small", "base"):
        path = Path(__file__).resolve().parents[1] / "configs" / f"{name}.toml"
        assert "train" in read_toml(path), f"{path} has no [train] table"
        cfg = load_section(TrainConfig, "train", path)
        micro = cfg.micro_batch_size or cfg.batch_size
        assert cfg.batch_size % micro == 0, f"{name}: batch {cfg.batch_size} vs micro {micro}"


def test_item_embeddings_are_used_and_saved(fx: dict[str, Path]) -> None:
    """--emb sets model.item_emb_dim from the file and load_run restores the frozen embedding matrix."""
    from safetensors.numpy import save_file

    emb = fx["root"] / "emb"
    emb.mkdir(exist_ok=True)
    table = np.random.default_rng(0).normal(size=(24, 6)).astype(np.float32)
    save_file({"embeddings": table}, str(emb / "embeddings.safetensors"))
    train_command(fx["data"], fx["tok"], fx["config"], fx["root"] / "with_emb", emb=emb,
                  overrides=BASE + ("train.max_steps=1",))
    model, info = load_run(fx["root"] / "with_emb")
    assert info["model_config"]["item_emb_dim"] == 6, f"item_emb_dim {info['model_config']['item_emb_dim']}"
    assert torch.equal(model.item_embeddings, torch.from_numpy(table)), "embedding matrix not restored"


def test_loss_free_balancing_moves_expert_bias(fx: dict[str, Path]) -> None:
    """With model.loss_free_balance the trainer updates each MoE layer's expert bias after every step."""
    _train(fx, "lfb", "model.loss_free_balance=true", "model.balance_bias_rate=0.01", "train.max_steps=2")
    model, _ = load_run(fx["root"] / "lfb")
    biases = [b for k, b in model.state_dict().items() if k.endswith("expert_bias")]
    assert biases and all(b.abs().sum() > 0 for b in biases), f"expert biases unchanged: {biases}"


def test_split_tables_keep_positive_session_items_and_split_them_for_item_wise_models(tmp_path) -> None:
    """train.session_items = positive keeps only engaged items (train and valid); an item-wise model then gets
    one sample per engaged item, each with the session's history."""
    import polars as pl

    from onerec.train import _read_split_tables

    pl.DataFrame({
        "sample": [0, 1, 2], "session": [5, 6, 7], "split": ["train", "train", "valid"],
        "history": [[1, 2], [3], [4]], "history_ts": [[1, 2], [3], [4]],
        "target": [[7, 8, 9], [10, 11], [12, 13]],
        "target_positive": [[True, False, True], [False, False], [False, True]],
    }, schema_overrides={"history": pl.List(pl.Int32), "target": pl.List(pl.Int32)}).write_parquet(
        tmp_path / "samples.parquet")
    said: list[str] = []
    train, valid = _read_split_tables(tmp_path, 20, "all", log=said.append, session_items="positive")
    assert train.target.values.tolist() == [7, 9] and len(train) == 1, "sample 1 has no positive: dropped"
    assert valid.target.values.tolist() == [13]
    train, _ = _read_split_tables(tmp_path, 20, "all", item_wise=True, log=said.append, session_items="positive")
    assert train.target.values.tolist() == [7, 9] and len(train) == 2 and train.history.values.tolist() == [1, 2, 1, 2]
    assert any("single-item targets" in s for s in said) and any("3 of 7 target items" in s for s in said), said
    train, _ = _read_split_tables(tmp_path, 20, "all", log=said.append)
    assert train.target.values.tolist() == [7, 8, 9, 10, 11], "session_items = all keeps every shown item"


def test_split_tables_add_history_sessions_to_train_only(tmp_path) -> None:
    """train.history_sessions = 2: the earliest training history per user becomes extra training sessions of
    at most 2 items after the logged ones; validation is untouched; an item-wise model splits them too."""
    import polars as pl

    from onerec.train import _read_split_tables

    pl.DataFrame({
        "sample": [0, 1, 2], "session": [5, 6, 7], "split": ["train", "train", "valid"], "user": [0, 0, 0],
        "ts_ms": [10, 20, 30], "history": [[1, 2, 3, 4], [1, 2, 3, 4, 7], [1, 2, 3, 4, 7, 8]],
        "history_ts": [[1, 2, 3, 4], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]], "target": [[7], [8], [9]],
    }, schema_overrides={"history": pl.List(pl.Int32), "target": pl.List(pl.Int32)}).write_parquet(
        tmp_path / "samples.parquet")
    train, valid = _read_split_tables(tmp_path, 20, "all", log=lambda _: None, history_chunk=2)
    assert train.target.values.tolist() == [7, 8, 2, 3, 4], f"targets {train.target.values.tolist()}"
    assert train.target.lengths().tolist() == [1, 1, 2, 1] and len(set(train.sample.tolist())) == 4
    assert valid.target.values.tolist() == [9] and len(valid) == 1, "validation must not grow"
    train, _ = _read_split_tables(tmp_path, 20, "all", item_wise=True, log=lambda _: None, history_chunk=2)
    assert train.target.lengths().tolist() == [1] * 5
