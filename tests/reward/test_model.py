"""RewardModel properties that hold for any weights: ranges, order, padding, batching, bad input, files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from onerec.io import OnerecError
from tests.reward.conftest import random_model, tiny_config


def _inputs(seed: int = 0, B: int = 3, S: int = 4, m: int = 5, n_items: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    history = torch.randint(0, n_items, (B, 7), generator=g)
    history[0, 3:] = -1  # a short history
    sessions = torch.stack([torch.stack([torch.randperm(n_items, generator=g)[:m] for _ in range(S)]) for _ in range(B)])
    return history, sessions


def test_towers_are_probabilities_and_reward_is_weighted_sum() -> None:
    """Every tower is in (0, 1) with shape (B, S); reward = Σ_t weights[t] · p_t."""
    model = random_model()
    history, sessions = _inputs()
    probs = model.score(history, sessions)
    assert set(probs) == set(model.towers) | {"reward"}
    for t in model.towers:
        p = probs[t]
        assert p.shape == (3, 4), f"{t}: shape {tuple(p.shape)}"
        assert bool(((p > 0) & (p < 1)).all()), f"{t}: outside (0, 1): {p.min()}..{p.max()}"
    expected = sum(model.config.weights.get(t, 0.0) * probs[t] for t in model.towers)
    torch.testing.assert_close(probs["reward"], expected)


@pytest.mark.parametrize("keys", ["target", "item"])
def test_session_score_is_order_free_without_position(keys: str) -> None:
    """With position=False, permuting a session's items leaves session scores unchanged and permutes item scores
    (queries/keys from e_i or from v_i alike)."""
    model = random_model(tiny_config(attention_keys=keys))
    history, sessions = _inputs()
    perm = torch.tensor([3, 0, 4, 1, 2])
    a, b = model.score(history, sessions), model.score(history, sessions[..., perm])
    for t in a:
        torch.testing.assert_close(a[t], b[t], msg=f"{t} changed under permutation")
    ia, ib = model.score_items(history, sessions), model.score_items(history, sessions[..., perm])
    for t in ia:
        torch.testing.assert_close(ia[t][..., perm], ib[t], msg=f"item-level {t} did not permute with the items")


def test_position_embedding_makes_order_matter() -> None:
    """With position=True (documented effect), the same items in another order get a different score."""
    model = random_model(tiny_config(position=True))
    history, sessions = _inputs()
    a = model.score(history, sessions)["reward"]
    b = model.score(history, sessions[..., [4, 3, 2, 1, 0]])["reward"]
    assert (a - b).abs().max() > 1e-6, "position embedding had no effect"


@pytest.mark.parametrize("keys", ["target", "item"])
def test_padding_and_batching_do_not_change_scores(keys: str) -> None:
    """Trailing -1 padding, and scoring sessions one by one instead of in a batch, give the same scores."""
    model = random_model(tiny_config(attention_keys=keys))
    history, sessions = _inputs()
    padded = torch.cat([sessions, torch.full((3, 4, 2), -1)], dim=-1)
    full = model.score(history, sessions)
    torch.testing.assert_close(model.score(history, padded)["reward"], full["reward"])
    one = model.score(history[1:2], sessions[1:2, 2:3])["reward"]
    torch.testing.assert_close(one[0, 0], full["reward"][1, 2])


def test_attention_keys_from_the_item_change_the_scores() -> None:
    """attention_keys = "item" computes the attention pattern from v_i instead of e_i = v_i * u: same weights,
    different scores (and the dense, attention-free model is untouched by the setting)."""
    history, sessions = _inputs()
    a = random_model(tiny_config(attention_keys="target")).score(history, sessions)["reward"]
    b = random_model(tiny_config(attention_keys="item")).score(history, sessions)["reward"]
    assert (a - b).abs().max() > 1e-6, "attention_keys had no effect"
    flat = [random_model(tiny_config(attention=False, attention_keys=k)).score(history, sessions)["reward"]
            for k in ("target", "item")]
    torch.testing.assert_close(flat[0], flat[1])


def test_unseen_items_are_scored_from_features() -> None:
    """Two unseen items (fallback id) with identical features and content get identical item scores."""
    model = random_model(unseen=(5, 6))
    for key in ("item_idx", "item_num", "content"):
        buf = getattr(model.item_encoder, key)
        buf[6] = buf[5]
    history, _ = _inputs(B=1)
    sessions = torch.tensor([[[5, 1, 2], [6, 1, 2]]])
    items = model.score_items(history, sessions)
    for t, p in items.items():
        torch.testing.assert_close(p[0, 0, 0], p[0, 1, 0], msg=f"{t}: unseen items differ beyond their features")


def test_empty_history_and_no_user_are_allowed() -> None:
    """A user without history (all -1) and without user id still gets finite probabilities."""
    model = random_model()
    _, sessions = _inputs(B=2)
    probs = model.score(torch.full((2, 4), -1), sessions)
    assert bool(torch.isfinite(probs["reward"]).all()), probs["reward"]


@pytest.mark.parametrize(
    ("sessions", "users", "message"),
    [
        (torch.tensor([[[1, 2, 30]]]), None, "unknown item id"),
        (torch.tensor([[[1, 2, -3]]]), None, "unknown item id"),
        (torch.tensor([[[1, 2, 3], [-1, -1, -1]]]), None, "empty session"),
        (torch.tensor([[[1, 2, 3]]]), torch.tensor([6]), "unknown user id"),
        (torch.tensor([[1, 2, 3]]), None, "expected history"),
    ],
)
def test_bad_input_is_a_clear_error(sessions: torch.Tensor, users: torch.Tensor | None, message: str) -> None:
    """Unknown items/users, empty sessions and wrong shapes raise OnerecError naming the problem."""
    model = random_model()
    with pytest.raises(OnerecError, match=message):
        model.score(torch.tensor([[1, 2]]), sessions, users)


def test_save_load_round_trip(tmp_path: Path) -> None:
    """A saved and reloaded model gives exactly the same scores and keeps config, towers and meta."""
    from onerec.reward.model import RewardModel

    model = random_model(tiny_config(position=True))
    model.save(tmp_path / "rm")
    loaded = RewardModel.load(tmp_path / "rm")
    history, sessions = _inputs()
    users = torch.tensor([0, 1, 5])
    a, b = model.score(history, sessions, users), loaded.score(history, sessions, users)
    for t in a:
        torch.testing.assert_close(a[t], b[t], rtol=0, atol=0)
    assert loaded.config == model.config and loaded.towers == model.towers and loaded.meta == model.meta


def test_load_rejects_non_model_dir(tmp_path: Path) -> None:
    """Loading a directory without reward.json / reward.safetensors is an OnerecError."""
    from onerec.reward.model import RewardModel

    with pytest.raises(OnerecError, match="not a reward model directory"):
        RewardModel.load(tmp_path)


@pytest.mark.parametrize("name", ["kuairand.toml", "demo.toml", "tiny.toml"])
def test_shipped_configs_load(name: str) -> None:
    """Every shipped [reward] table loads into a valid RewardConfig."""
    from onerec.config import load_section
    from onerec.reward import RewardConfig

    cfg = load_section(RewardConfig, "reward", Path(__file__).resolve().parents[2] / "configs" / name)
    assert isinstance(cfg, RewardConfig) and cfg.towers, cfg


def test_config_rejects_bad_values() -> None:
    """Unknown towers, d_model not divisible by n_heads and out-of-range quantiles are ConfigErrors."""
    from onerec.config import ConfigError

    for kwargs in ({"towers": ["xtr"]}, {"d_model": 10, "n_heads": 3}, {"swt_quantile": 1.0}, {"towers": []}):
        with pytest.raises(ConfigError):
            tiny_config(**kwargs)


def test_match_counts_by_hand() -> None:
    """match_counts = log1p(# other real items of the session sharing each feature slot), 0 on padding."""
    import numpy as np

    model = random_model(tiny_config(match_features=True))
    idx = model.item_encoder.item_idx.numpy()
    sessions = torch.tensor([[3, 7, 3, -1], [0, 1, 2, 4]])
    got = model.match_counts(sessions).numpy()
    for n, row in enumerate(sessions.tolist()):
        for i, a in enumerate(row):
            for s in range(idx.shape[1]):
                want = 0 if a < 0 or idx[a, s] < 0 else sum(
                    1 for j, b in enumerate(row) if j != i and b >= 0 and idx[b, s] == idx[a, s])
                assert got[n, i, s] == pytest.approx(np.log1p(want)), (n, i, s)
    assert got[0, 0].min() >= np.log1p(1) - 1e-6, "an item repeated in its session shares every slot with it"


@pytest.mark.parametrize("keys", ["target", "item"])
def test_attention_key_bias_has_no_effect_and_gets_no_gradient(keys: str) -> None:
    """Softmax ignores a bias shared by every key of a query, so the key third of each qkv bias is held at 0: a
    non-zero value there changes no score and its gradient is exactly 0 (a 2-rank run can then not drift on it)."""
    model = random_model(tiny_config(attention_keys=keys))
    history, sessions = _inputs()
    blocks = [b for b in model.modules() if getattr(b, "attention", False) and hasattr(b, "qkv")]
    assert blocks, "the tiny reward model has no attention block"
    before = model.score(history, sessions)["reward"]
    with torch.no_grad():
        for b in blocks:
            d = b.qkv.bias.shape[0] // 3
            b.qkv.bias[d:2 * d] = torch.randn(d)
    torch.testing.assert_close(model.score(history, sessions)["reward"], before)
    session_logits, item_logits = model(history, sessions)  # eval mode (no dropout), with autograd
    sum(v.sum() for v in session_logits.values()).backward()
    for b in blocks:
        d = b.qkv.bias.shape[0] // 3
        assert b.qkv.bias.grad is not None and b.qkv.bias.grad[:d].abs().sum() > 0, "no gradient to the query bias"
        assert torch.equal(b.qkv.bias.grad[d:2 * d], torch.zeros(d)), "the key bias got a gradient"
