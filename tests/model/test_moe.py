"""Properties of the Mixture-of-Experts layer: routing, dispatch, balancing."""

from __future__ import annotations

import torch

from onerec.model.moe import MixtureOfExperts, MoEImpl, load_balancing_loss, route


def _moe(n_experts: int = 6, top_k: int = 2, seed: int = 0) -> MixtureOfExperts:
    moe = MixtureOfExperts(d_model=16, d_ff=24, n_experts=n_experts, top_k=top_k)
    moe.reset_parameters(torch.Generator().manual_seed(seed))
    return moe


def _tokens(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_sorted_dispatch_equals_loop_reference():
    """The sorted dispatch gives the loop-over-experts reference's outputs and gradients."""
    moe = _moe()
    x = _tokens((3, 7, 16)).requires_grad_()
    y_fast, _ = moe(x, impl=MoEImpl.SORTED)
    grads_fast = torch.autograd.grad(y_fast.square().sum(), [x, moe.w_up, moe.w_down, moe.router.weight])
    y_ref, _ = moe(x, impl=MoEImpl.LOOP)
    grads_ref = torch.autograd.grad(y_ref.square().sum(), [x, moe.w_up, moe.w_down, moe.router.weight])
    torch.testing.assert_close(y_fast, y_ref, msg="sorted dispatch output != loop reference")
    for g_fast, g_ref in zip(grads_fast, grads_ref):
        torch.testing.assert_close(g_fast, g_ref, msg="sorted dispatch gradient != loop reference")


def test_each_token_routed_to_exactly_k_distinct_experts():
    """Every token goes to exactly k distinct experts whose gates are positive and sum to 1."""
    for k in (1, 2, 3):
        moe = _moe(n_experts=5, top_k=k)
        _, stats = moe(_tokens((4, 9, 16)))
        index = stats.expert_index  # (N, k)
        n = 4 * 9
        assert index.shape == (n, k), f"k={k}: expert index has shape {tuple(index.shape)}"
        distinct = torch.tensor([len(set(row.tolist())) for row in index])
        assert bool((distinct == k).all()), f"k={k}: some token got a repeated expert: {index.tolist()}"
        assert int(stats.tokens_per_expert.sum()) == n * k, f"k={k}: {stats.tokens_per_expert} != {n * k}"
        _, gates = route(moe.router(_tokens((n, 16))).float(), k)
        torch.testing.assert_close(gates.sum(-1), torch.ones(n), msg=f"k={k}: gates do not sum to 1")
        assert bool((gates > 0).all()), f"k={k}: a chosen expert got a zero gate"


def test_gates_are_full_softmax_renormalised_over_top_k():
    """Gates equal softmax over all experts restricted to the chosen k and renormalised."""
    logits = _tokens((10, 6), seed=3)
    index, gates = route(logits, 2)
    full = torch.softmax(logits, -1).gather(-1, index)
    torch.testing.assert_close(gates, full / full.sum(-1, keepdim=True), msg="gates are not renormalised softmax")


def test_aux_loss_is_one_when_uniform_and_larger_when_skewed():
    """The Switch load-balancing loss is 1 for a uniform router and grows when one expert takes the tokens."""
    n, e = 64, 4
    uniform = load_balancing_loss(torch.full((n, e), 1.0 / e), torch.arange(n)[:, None] % e, e)
    torch.testing.assert_close(uniform, torch.tensor(1.0), msg="uniform routing should give aux loss 1")
    skewed_probs = torch.softmax(torch.tensor([4.0, 0.0, 0.0, 0.0]).expand(n, e), -1)
    skewed = load_balancing_loss(skewed_probs, torch.zeros(n, 1, dtype=torch.long), e)
    assert skewed > 1.5, f"all tokens on one expert gave aux loss {float(skewed):.3f}, expected > 1.5"


def test_forward_leaves_state_and_loss_free_bias_balances_load():
    """Forward changes no buffer; repeated update_bias steps reduce the load of an over-used expert."""
    moe = _moe(n_experts=4, top_k=1)
    with torch.no_grad():
        moe.router.weight[0] += 0.5  # expert 0 is favoured for tokens with a positive first coordinate sum
    x = _tokens((256, 16), seed=5)
    before = {k: v.clone() for k, v in moe.state_dict().items()}
    _, stats = moe(x)
    for key, value in moe.state_dict().items():
        assert torch.equal(value, before[key]), f"forward changed {key}"
    share0 = stats.tokens_per_expert.max().item() / 256
    for _ in range(200):
        _, stats = moe(x)
        moe.update_bias(stats.tokens_per_expert, rate=0.02)
    share1 = stats.tokens_per_expert.max().item() / 256
    assert share1 < share0 - 0.1, f"busiest expert's share did not fall: {share0:.2f} -> {share1:.2f}"


def test_forward_without_stats_gives_the_same_output():
    """``stats=False`` (generation) returns the same outputs and no router statistics."""
    moe = _moe()
    x = _tokens((3, 5, 16))
    y, stats = moe(x)
    y_fast, none = moe(x, stats=False)
    assert none is None and stats is not None, "stats=False should return None, stats=True RouterStats"
    assert torch.equal(y, y_fast), "skipping the router statistics changed the output"
