"""Properties of the OneRec encoder-decoder: learning, masking, padding, seeding, configs."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from onerec.config import ConfigError, load_section
from onerec.io import OnerecError
from onerec.model.generate import generate_sessions
from onerec.model.onerec import ModelConfig, OneRec, time_gap_buckets
from onerec.tokenizer.codec import SemanticIds
from onerec.tokenizer.trie import CodeTrie

from .tiny import CONFIGS, catalogue, random_history, tiny_config, tiny_model


def test_tiny_model_overfits_and_beam_search_recovers_training_sessions():
    """A plain Adam loop drives the NTP loss of 4 sessions near 0 and the top beam is each training session."""
    ids, trie = catalogue(n_items=40, seed=0)
    model = OneRec(tiny_config(d_model=48, expert_d_ff=48, aux_loss_coef=0.0), ids)
    history = random_history(4, 6, 40, seed=1)
    sessions = torch.tensor([[3, 17, 25], [8, 3, 30], [11, 12, 13], [39, 0, 21]])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        out = model(history, sessions)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else out.ntp_loss.item()
    last = model(history, sessions).ntp_loss.item()
    assert last < 0.02, f"did not overfit: NTP loss {first:.3f} -> {last:.4f}"
    beams = generate_sessions(model, trie, history, n_items=3, beam_size=4)
    assert torch.equal(beams.items[:, 0], sessions), f"top beams {beams.items[:, 0].tolist()} != training sessions"


def test_left_and_right_padding_give_the_same_output():
    """Histories padded with -1 on the left or on the right encode to the same logits."""
    ids, _ = catalogue()
    model = tiny_model(ids)
    items = [[5, 9, 2], [7], [1, 1, 3, 4, 8]]
    left = torch.tensor([[-1] * (5 - len(r)) + r for r in items])
    right = torch.tensor([r + [-1] * (5 - len(r)) for r in items])
    sessions = torch.tensor([[1, 2], [3, 4], [5, 6]])
    out_left, out_right = model(left, sessions), model(right, sessions)
    for j, (a, b) in enumerate(zip(out_left.level_logits, out_right.level_logits)):
        torch.testing.assert_close(a, b, msg=f"level {j} logits depend on the padding side")


def test_history_beyond_max_history_is_ignored():
    """Only the max_history most recent items matter: older items do not change the output."""
    ids, _ = catalogue()
    model = tiny_model(ids, max_history=3)
    recent = [4, 5, 6]
    sessions = torch.tensor([[1, 2]])
    a = model(torch.tensor([[9, 9, 9] + recent]), sessions).level_logits[0]
    b = model(torch.tensor([[0, 1, 2] + recent]), sessions).level_logits[0]
    torch.testing.assert_close(a, b, msg="items older than max_history changed the logits")


def test_history_dropout_hides_items_in_training_only():
    """model.history_dropout masks random history items out of the encoder in train mode; eval mode is untouched."""
    ids, _ = catalogue()
    history = torch.tensor([[5, 9, 2, 7, 1, 3, 4, 8]] * 64)
    plain, hiding = tiny_model(ids), tiny_model(ids, history_dropout=0.5)
    hiding.load_state_dict(plain.state_dict())
    _, mask = plain.encode(history)
    _, eval_mask = hiding.encode(history)
    assert torch.equal(eval_mask, mask), "history dropout acted in eval mode"
    torch.manual_seed(0)
    _, train_mask = hiding.train().encode(history)
    assert train_mask[:, 0].all(), "the user token was hidden"
    hidden = (mask & ~train_mask).float().mean().item()
    assert 0.35 < hidden < 0.65, f"{hidden:.2f} of the history hidden at p = 0.5"
    assert not (train_mask & ~mask).any(), "a padded slot became visible"
    with pytest.raises(ConfigError, match="model.history_dropout"):
        tiny_config(history_dropout=1.0)


def test_decoder_is_causal_and_padded_items_are_not_targets():
    """Changing or padding later session items changes neither earlier items' logits nor their loss terms."""
    ids, _ = catalogue()
    model = tiny_model(ids)
    history = random_history(2, 6, 40, seed=2)
    a = model(history, torch.tensor([[1, 2, 3], [4, 5, 6]]))
    b = model(history, torch.tensor([[1, 2, 30], [4, 5, -1]]))
    for j in range(model.depth):
        torch.testing.assert_close(a.level_logits[j][:, :2], b.level_logits[j][:, :2],
                                   msg=f"level {j}: a later item changed earlier logits")
    c = model(history, torch.tensor([[1, 2], [4, 5]]))
    padded = model(history, torch.tensor([[1, 2, -1], [4, 5, -1]]))
    torch.testing.assert_close(c.ntp_loss, padded.ntp_loss, msg="padded session items entered the loss")
    assert c.n_tokens == padded.n_tokens == 4 * model.depth, f"token counts {c.n_tokens}, {padded.n_tokens}"


@pytest.mark.parametrize("copy_head", [False, True])
def test_sequence_probabilities_sum_to_one_over_all_codes(copy_head):
    """With every code combination an item, exp(sequence_logp) over all items sums to 1 (m = 1)."""
    codes = np.array(list(itertools.product(range(3), range(2), range(1))))  # 6 items, full code space
    ids = SemanticIds(codes, [3, 2, 1])
    model = tiny_model(ids, copy_head=copy_head)
    history = random_history(1, 4, 6, seed=3).expand(6, -1)
    total = model.sequence_logp(history, torch.arange(6)[:, None]).exp().sum().detach()
    torch.testing.assert_close(total, torch.tensor(1.0), msg=f"probabilities sum to {float(total):.6f}")


def test_same_seed_same_model_other_seed_differs():
    """Two models built from the same seed are identical; another seed gives other weights."""
    ids, _ = catalogue()
    a, b, c = tiny_model(ids), tiny_model(ids), tiny_model(ids, seed=1)
    history, sessions = random_history(3, 5, 40, seed=4), torch.tensor([[1, 2], [3, 4], [5, 6]])
    assert torch.equal(a(history, sessions).loss, b(history, sessions).loss), "same seed, different loss"
    assert not torch.equal(a.token_emb.weight, c.token_emb.weight), "seed 1 gave the weights of seed 0"


def test_dense_ablation_and_moe_reference_agree_on_interface():
    """The dense decoder FFN trains with aux loss 0; the loop-over-experts model gives the sorted model's loss."""
    ids, _ = catalogue()
    history, sessions = random_history(3, 5, 40, seed=5), torch.tensor([[1, 2], [3, 4], [5, 6]])
    dense = tiny_model(ids, ffn="dense")
    out = dense(history, sessions)
    assert float(out.aux_loss) == 0.0 and out.router == [], "dense model reported router statistics"
    moe = tiny_model(ids)
    fast = moe(history, sessions).loss
    moe.set_moe_impl("loop")
    torch.testing.assert_close(moe(history, sessions).loss, fast, msg="loop MoE model loss != sorted")


def test_loss_free_bias_updates_only_when_enabled():
    """update_balance_bias changes the expert bias only with model.loss_free_balance = true."""
    ids, _ = catalogue()
    history, sessions = random_history(3, 5, 40, seed=6), torch.tensor([[1, 2], [3, 4], [5, 6]])
    for enabled in (False, True):
        model = tiny_model(ids, loss_free_balance=enabled, balance_bias_rate=0.1)
        model.update_balance_bias(model(history, sessions).router)
        moved = float(model.dec_blocks[0].ffn.expert_bias.abs().sum())
        assert (moved > 0) == enabled, f"loss_free_balance={enabled}: bias moved by {moved}"


def test_item_embeddings_and_time_buckets_enter_the_encoder():
    """A frozen item-embedding matrix and time-gap buckets change the output; wrong shapes are errors."""
    ids, _ = catalogue()
    history, sessions = random_history(2, 5, 40, seed=7), torch.tensor([[1, 2], [3, 4]])
    emb = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    plain = tiny_model(ids)(history, sessions).loss
    with_emb = OneRec(tiny_config(item_emb_dim=8), ids, item_embeddings=emb)(history, sessions).loss
    assert not torch.equal(plain, with_emb), "item embeddings did not change the output"
    with pytest.raises(OnerecError, match="item embeddings have shape"):
        OneRec(tiny_config(item_emb_dim=4), ids, item_embeddings=emb)
    timed = tiny_model(ids, time_buckets=8)
    with pytest.raises(OnerecError, match="timestamps"):
        timed(history, sessions)
    ts0 = torch.zeros_like(history)
    ts1 = torch.arange(5).expand(2, -1) * 60_000
    assert not torch.equal(timed(history, sessions, ts0).loss, timed(history, sessions, ts1).loss), \
        "time gaps did not change the output"


def test_item_id_embedding_learns_only_history_rows():
    """``item_id_emb`` adds a learned per-item table to the encoder: it changes the output, and a backward
    pass gives gradient to exactly the rows of the items in the history (padding and other items get none)."""
    ids, _ = catalogue()
    history, sessions = torch.tensor([[-1, 3, 7], [5, 5, 9]]), torch.tensor([[1, 2], [3, 4]])
    plain = tiny_model(ids)(history, sessions).loss
    model = tiny_model(ids, item_id_emb=True)
    out = model(history, sessions)
    assert not torch.equal(plain, out.loss), "the item-id embedding did not change the output"
    out.loss.backward()
    touched = set(torch.nonzero(model.item_id_table.weight.grad.abs().sum(1)).flatten().tolist())
    assert touched == {3, 5, 7, 9}, f"gradient reached item rows {sorted(touched)}"


def test_time_gap_buckets_by_hand():
    """Buckets are floor(log2(1 + seconds before the newest item)), clamped, 0 on padding."""
    ts = torch.tensor([[-1, 0, 999_000, 1_002_000, 1_003_000]])
    valid = torch.tensor([[False, True, True, True, True]])
    got = time_gap_buckets(ts, valid, n_buckets=6)
    # gaps: -, 1003 s -> 9 (clamped 5), 4 s -> 2, 1 s -> 1, 0 s -> 0
    assert got.tolist() == [[0, 5, 2, 1, 0]], f"buckets {got.tolist()}"


def test_bad_inputs_and_configs_raise_clear_errors():
    """Unknown item ids and invalid configs raise OnerecError / ConfigError naming the problem."""
    ids, _ = catalogue()
    model = tiny_model(ids)
    with pytest.raises(OnerecError, match="history holds 1 item ids >= 40"):
        model(torch.tensor([[1, 40]]), torch.tensor([[1]]))
    with pytest.raises(OnerecError, match="decoder length"):
        model(torch.tensor([[1]]), torch.arange(7)[None, :])
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig(d_model=30, n_heads=4)
    with pytest.raises(ConfigError, match="top_k"):
        ModelConfig(n_experts=2, top_k=3)
    with pytest.raises(ConfigError, match="item_head_weight must be finite"):
        ModelConfig(item_head=True, item_head_weight=float("inf"))
    for partial in ({"item_head": True}, {"copy_head": True}):
        with pytest.raises(ConfigError, match="item_head_copy needs"):
            ModelConfig(item_head_copy=True, **partial)


@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_shipped_configs_load(name):
    """Every shipped config's [model] table loads and builds a model over a small catalogue."""
    config = load_section(ModelConfig, "model", CONFIGS / f"{name}.toml")
    ids = SemanticIds.from_levels(np.random.default_rng(0).integers(0, 16, size=(50, 3)), 16)
    model = OneRec(config, ids)
    counts = model.param_counts()
    assert 0 < counts["active"] <= counts["total"], f"{name}: parameter counts {counts}"
    assert isinstance(CodeTrie.from_codes(ids.codes, ids.level_sizes).depth, int)


def test_forward_flops_match_torch_flop_counter():
    """The analytic matmul FLOPs (the MFU numerator, attention aside) equal torch's FlopCounterMode count."""
    from torch.utils.flop_counter import FlopCounterMode

    ids, _ = catalogue(n_items=60, codebook=8, levels=2)
    emb = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    history, sessions = random_history(4, 9, 60, seed=8), torch.randint(0, 60, (4, 3))
    for overrides in ({}, {"ffn": "dense"}, {"copy_head": True}, {"item_head": True},
                      {"copy_head": True, "item_head": True, "item_head_copy": True}):
        model = OneRec(tiny_config(item_emb_dim=8, **overrides), ids, item_embeddings=emb)
        counter = FlopCounterMode(display=False)
        with counter:
            model(history, sessions)  # padded history slots cost the same as real ones
        expected = model.forward_flops(4, 9, 3, attention=False)
        assert counter.get_total_flops() == expected, f"{overrides}: counted {counter.get_total_flops()}, " \
                                                      f"analytic {expected}"


def test_copy_head_with_a_closed_gate_puts_all_mass_on_history_items():
    """Gate forced to copy: every level is the pointer wherever a history item matches the prefix, so the
    items of the history share probability 1 and no other item gets any; the pointer follows attention."""
    codes = np.array(list(itertools.product(range(4), range(3), range(1))))  # 12 items, full code space
    ids = SemanticIds(codes, [4, 3, 1])
    model = tiny_model(ids, copy_head=True)
    with torch.no_grad():
        model.copy_gate.weight.zero_()
        model.copy_gate.bias.fill_(-40.0)  # log-odds of generating: sigmoid(-40) ~ 4e-18
    history = torch.tensor([[-1, 2, 7, 7, 11], [0, 1, 2, 3, 4]])
    every = model.sequence_logp(history.repeat_interleave(12, 0), torch.arange(12).repeat(2)[:, None]).view(2, 12)
    prob = every.exp().detach()
    for row, hist in enumerate(history.tolist()):
        seen = sorted(set(hist) - {-1})
        torch.testing.assert_close(prob[row, seen].sum(), torch.tensor(1.0), msg=f"request {row}: history mass")
        others = [i for i in range(12) if i not in seen]
        assert float(prob[row, others].max()) < 1e-6, f"request {row}: non-history item got {prob[row, others]}"


def test_copy_gate_bias_moves_mass_between_history_and_new_items():
    """The inference-time gate bias: the history items' total probability falls as the bias rises, a large
    bias gives the plain level softmax (the head's generation part), and the probabilities still sum to 1."""
    codes = np.array(list(itertools.product(range(4), range(3), range(1))))  # 12 items, full code space
    model = tiny_model(SemanticIds(codes, [4, 3, 1]), copy_head=True, seed=2)
    history = torch.tensor([[-1, 2, 7, 7, 11]])
    seen = [2, 7, 11]

    def probs(bias: float) -> torch.Tensor:
        model.copy_gate_bias = bias
        return model.sequence_logp(history.repeat_interleave(12, 0), torch.arange(12)[:, None]).exp().detach()

    masses = []
    for bias in (-4.0, -1.0, 0.0, 1.0, 4.0):
        p = probs(bias)
        torch.testing.assert_close(p.sum(), torch.tensor(1.0), msg=f"bias {bias}: total")
        masses.append(float(p[seen].sum()))
    assert all(a > b for a, b in zip(masses, masses[1:])), f"history mass not falling with the bias: {masses}"
    with torch.no_grad():  # the same weights with the pointer's weight zeroed: the plain softmax
        plain = probs(0.0)
        model.copy_gate_bias = 60.0
        torch.testing.assert_close(probs(60.0), _no_copy(model, history), msg="large bias != generation alone")
    assert not torch.allclose(plain, probs(60.0)), "the bias changed nothing"
    model.copy_gate_bias = 0.0


def _no_copy(model, history):
    """sequence_logp of every item with the copy head's contribution removed (copy context dropped)."""
    hidden_model = copy.deepcopy(model)
    hidden_model.copy_q = None
    return hidden_model.sequence_logp(history.repeat_interleave(12, 0), torch.arange(12)[:, None]).exp().detach()


def test_copy_head_learns_to_repeat_a_history_item_faster_than_generation_alone():
    """On a task whose target is always the history's oldest item (random histories over 200 items), the
    pointer learns it: after the same 60 steps the copy-head model's loss is far below the plain model's."""
    ids, _ = catalogue(n_items=200, codebook=8, levels=2, seed=6)
    g = torch.Generator().manual_seed(6)
    losses = {}
    for copy_head in (False, True):
        model = OneRec(tiny_config(copy_head=copy_head, seed=6), ids).train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        g.manual_seed(6)
        for _ in range(60):
            history = torch.randint(0, 200, (32, 6), generator=g)
            loss = model(history, history[:, :1]).ntp_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses[copy_head] = float(loss.detach())
    assert losses[True] < 0.5 * losses[False], f"copy head {losses[True]:.3f} vs plain {losses[False]:.3f}"


def test_item_head_loss_is_the_full_softmax_cross_entropy_of_each_session_item():
    """The item head adds coef * (mean cross-entropy of each real session item under a softmax over every item,
    scored against the items' code + embedding vectors) to the loss, and adds no per-item parameters."""
    ids, _ = catalogue(n_items=30, codebook=4, levels=2, seed=15)
    emb = np.random.default_rng(15).normal(size=(30, 8)).astype(np.float32)
    plain = OneRec(tiny_config(item_emb_dim=8), ids, item_embeddings=emb)
    model = OneRec(tiny_config(item_emb_dim=8, item_head=True, item_head_coef=0.7, init_std=0.3), ids,
                   item_embeddings=emb)
    c = model.config.d_model
    assert model.param_counts()["total"] - plain.param_counts()["total"] == c * c, "the head is one C x C matrix"
    history, sessions = random_history(4, 6, 30, seed=15), torch.tensor([[3, 4, -1], [0, -1, -1], [7, 8, 9], [1, 2, 3]])
    out = model(history, sessions)
    memory, mask = model.encode(history)
    hidden, _ = model.decode(model.decoder_tokens(sessions), model.cross_kv(memory), mask)
    bos = hidden.view(4, 3, model.depth + 1, c)[:, :, 0]  # (B, m, C)
    vectors = torch.stack([model.token_emb(model.item_codes[i] + model.level_offsets).sum(0)
                           + model.item_proj(model.item_embeddings[i]) for i in range(30)])  # (I, C)
    logits = model.item_q(bos) @ vectors.T
    real = sessions >= 0
    expected = torch.nn.functional.cross_entropy(logits[real], sessions[real])
    torch.testing.assert_close(out.item_loss, expected)
    torch.testing.assert_close(out.loss, out.ntp_loss + model.config.aux_loss_coef * out.aux_loss + 0.7 * expected)
    out.loss.backward()
    assert model.item_q.weight.grad is not None and model.item_q.weight.grad.abs().sum() > 0, "no gradient to the head"


def test_item_head_copy_is_the_gated_mixture_of_dense_softmax_and_history_pointer():
    """With item_head_copy, the item head at a BOS is sigmoid(g) * dense softmax + sigmoid(-g) * pointer, the
    pointer's attention over the history positions summed per item (a repeated item gets both weights), computed
    here by hand position by position; a request without history gets the dense softmax; probabilities sum to 1;
    the gate bias moves mass onto the history items."""
    ids, _ = catalogue(n_items=30, codebook=4, levels=2, seed=16)
    model = tiny_model(ids, copy_head=True, item_head=True, item_head_copy=True, init_std=0.3, seed=16)
    history = torch.tensor([[-1, 4, 9, 4, 20], [-1, -1, -1, -1, -1]])
    sessions = torch.tensor([[4, 11], [2, -1]])
    out = model(history, sessions)
    memory, mask = model.encode(history)
    hidden, _ = model.decode(model.decoder_tokens(sessions), model.cross_kv(memory), mask)
    bos = hidden.view(2, 2, model.depth + 1, -1)[:, :, 0]  # (B, m, C)
    dense = torch.log_softmax(model.item_q(bos) @ model.item_vectors().T, dim=-1).exp()
    keys = model.copy_k(memory)
    for r in range(2):
        slots = [s + 1 for s, item in enumerate(history[r].tolist()) if item >= 0]  # memory position 0 = [USER]
        for t in range(2):
            h = bos[r, t]
            if not slots:
                expected = dense[r, t]
            else:
                att = torch.softmax(torch.stack([model.copy_q(h) @ keys[r, s] for s in slots]) / h.shape[0] ** 0.5, 0)
                pointer = torch.zeros(30)
                for a, s in zip(att, slots):
                    pointer[int(history[r, s - 1])] += a
                g = torch.sigmoid(model.copy_gate(h)[0])
                expected = g * dense[r, t] + (1 - g) * pointer
            torch.testing.assert_close(out.item_logp[r, t].exp(), expected, msg=f"request {r}, item {t}")
            torch.testing.assert_close(out.item_logp[r, t].exp().sum(), torch.tensor(1.0))
    seen = [4, 9, 20]
    masses = []
    for bias in (2.0, 0.0, -2.0):
        model.set_copy_gate_bias(bias)
        masses.append(float(model(history, sessions).item_logp[0, 0].detach().exp()[seen].sum()))
    model.set_copy_gate_bias(0.0)
    assert masses[0] < masses[1] < masses[2], f"history mass not rising as the bias falls: {masses}"
