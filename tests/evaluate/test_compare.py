"""Bootstrap intervals and paired comparisons (onerec.evaluate.compare) have the properties they claim."""

from __future__ import annotations

import numpy as np
import pytest

from onerec.evaluate.compare import fingerprint, mean_ci, paired
from onerec.evaluate.protocols import NextItemSet, NextSessionSet
from onerec.io import OnerecError


def test_interval_is_seeded_holds_the_mean_and_narrows_like_one_over_sqrt_n():
    rng = np.random.default_rng(0)
    small = (rng.random(400) < 0.1).astype(float)
    large = (rng.random(16 * 400) < 0.1).astype(float)
    assert mean_ci(small, 500, 3) == mean_ci(small, 500, 3), "the same seed must give the same interval"
    lo, hi = mean_ci(small, 500, 3)
    assert lo <= small.mean() <= hi, f"interval [{lo}, {hi}] misses the mean {small.mean()}"
    lo4, hi4 = mean_ci(large, 500, 3)
    ratio = (hi - lo) / (hi4 - lo4)
    assert 2.8 < ratio < 5.5, f"16x the samples should narrow the interval ~4x, got {ratio:.2f}x"
    assert all(np.isnan(mean_ci(np.array([np.nan, np.nan])))), "no defined value -> no interval"


def test_paired_identical_values_differ_by_exactly_zero():
    a = (np.random.default_rng(2).random(300) < 0.2).astype(float)
    r = paired(a, a.copy(), n_boot=200)
    assert r["diff"] == 0 and r["ci"] == [0.0, 0.0] and r["p_value"] == 1.0, r


def test_paired_detects_a_real_shift_and_states_it_relative_to_a():
    rng = np.random.default_rng(4)
    a = (rng.random(5000) < 0.10).astype(float)
    b = np.maximum(a, (rng.random(5000) < 0.03).astype(float))  # b wins ~2.7 points more often, never loses
    r = paired(a, b, n_boot=500, seed=0)
    assert r["ci"][0] > 0 and r["p_value"] < 1e-6, f"a real gain was not detected: {r}"
    assert r["rel"] == pytest.approx(r["diff"] / a.mean()), r
    with pytest.raises(OnerecError, match="not the same samples"):
        paired(a, b[:-1])


def test_paired_interval_covers_a_zero_difference_about_95_percent_of_the_time():
    """Calibration: two exchangeable models (no true difference) -> the 95 % interval holds 0 in ~95 % of trials."""
    rng = np.random.default_rng(5)
    covered = 0
    trials = 200
    for t in range(trials):
        hit = rng.random(600) < 0.15
        a = hit * (rng.random(600) < 0.7)  # both catch a random 70 % of the same easy samples
        b = hit * (rng.random(600) < 0.7)
        lo, hi = paired(a.astype(float), b.astype(float), n_boot=300, seed=t)["ci"]
        covered += lo <= 0.0 <= hi
    assert 0.89 <= covered / trials <= 0.99, f"coverage {covered / trials:.2f}, expected ~0.95"


def test_fingerprint_tells_sample_sets_apart():
    hist = np.array([[1, 2, -1], [3, -1, -1]])
    loo = NextItemSet(hist, np.array([4, 5]))
    assert fingerprint(loo) == fingerprint(NextItemSet(hist.copy(), np.array([4, 5])))
    assert fingerprint(loo) != fingerprint(NextItemSet(hist, np.array([4, 6])))
    s1 = NextSessionSet(hist, [np.array([1, 2]), np.array([3])])
    s2 = NextSessionSet(hist, [np.array([1]), np.array([2, 3])])  # same items, other split into sessions
    assert fingerprint(s1) != fingerprint(s2)


def _evaluated_run(root, name, onerec, sasrec, sasrec_source, fingerprint="fp0"):
    from onerec.io import write_json

    run = root / name
    run.mkdir()
    write_json(run / "metrics.json", {
        "protocol": "loo", "split": "test", "fingerprint": fingerprint, "n_samples": 100,
        "models": {"onerec": {"recall@10": onerec, "n_samples": 100.0},
                   "popularity": {"recall@10": 0.01, "source": "popularity"},
                   "sasrec_ce": {"recall@10": sasrec, "source": sasrec_source}}})
    return run


def test_seed_summary_counts_each_trained_model_once_and_pairs_baselines_by_run(tmp_path):
    from onerec.evaluate.compare import seed_summary, seed_table_markdown

    runs = [_evaluated_run(tmp_path, f"s{i}", o, s, f"/bl/sasrec_s{i}")
            for i, (o, s) in enumerate([(0.040, 0.046), (0.044, 0.050), (0.036, 0.045)])]
    out = seed_summary(runs)
    one = out["models"]["onerec"]["recall@10"]
    assert one["mean"] == pytest.approx(0.040) and one["std"] == pytest.approx(np.std([.040, .044, .036], ddof=1))
    sas = out["models"]["sasrec_ce"]["recall@10"]
    rel = np.array([.046 / .040, .050 / .044, .045 / .036]) - 1
    assert sas["rel_vs_onerec"]["mean"] == pytest.approx(rel.mean()), "baselines pair with the model of their run"
    pop = out["models"]["popularity"]
    assert pop["distinct"] == 1 and pop["recall@10"]["std"] == 0.0, "popularity is one model, however often scored"
    assert "| onerec | 0.0400 ± 0.0040 |" in seed_table_markdown(out)

    shared = [_evaluated_run(tmp_path, f"t{i}", o, 0.046, "/bl/sasrec_s0") for i, o in enumerate([0.040, 0.044])]
    sas = seed_summary(shared)["models"]["sasrec_ce"]
    assert sas["distinct"] == 1 and sas["recall@10"]["values"] == [0.046], "one baseline scored twice counts once"


def test_seed_summary_refuses_runs_scored_on_different_samples(tmp_path):
    from onerec.evaluate.compare import seed_summary

    a = _evaluated_run(tmp_path, "a", 0.04, 0.05, "/bl/a")
    b = _evaluated_run(tmp_path, "b", 0.04, 0.05, "/bl/b", fingerprint="other")
    with pytest.raises(OnerecError, match="different samples"):
        seed_summary([a, b])
    with pytest.raises(OnerecError, match="no metrics.json"):
        seed_summary([a, tmp_path / "missing"])


def test_seeds_command_prints_the_table_and_fails_cleanly(tmp_path, capsys):
    from onerec.cli import main

    runs = [_evaluated_run(tmp_path, f"s{i}", o, 0.05, f"/bl/s{i}") for i, o in enumerate([0.04, 0.05])]
    assert main(["seeds", "--run", str(runs[0]), "--run", str(runs[1])]) == 0
    assert "| onerec | 0.0450 ± 0.0071 |" in capsys.readouterr().out
    assert main(["seeds", "--run", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no metrics.json" in err and "Traceback" not in err
