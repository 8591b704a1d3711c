"""Where each model's hits come from: items already in the user's history (repeats), and item popularity.

For next-session data (EVAL.md §2) it counts, over the first ``--n`` test sessions: the share of positives that
are history items, and per model the hits on history items and on new items in its top K, and how many of its
top K are history items. Popularity: items are split into head / torso / tail, each holding a third of the
training positives (``train_sequences`` of the evaluation set, most frequent first); per model it counts the
hits and the top-K slots in each group. Generative runs answer as in ``onerec evaluate`` (union of the top beams, beam
``--beam``); baselines are the directories ``onerec baseline`` writes. Prints a JSON document and a table.

    .venv/bin/python benchmarks/bench_repeats.py --data runs/simq/data --run runs/simq/onerec_pos_s0 \
        --run runs/simq/onerec_copy_s0 --baseline runs/simq/sasrec_s0 --n 1000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from onerec.evaluate import EvalConfig  # noqa: E402
from onerec.io import OnerecError  # noqa: E402


def repeat_hits(lists: np.ndarray, history: np.ndarray, positives: list, k: int) -> dict[str, float]:
    """Hits of the top-k ``lists`` (S, >= k) on history items and on new items, and history items per top k."""
    on_history = new = shown = 0
    recall = []
    for hist, pos, row in zip(history, positives, lists):
        seen = {int(x) for x in hist if x >= 0}
        wanted = {int(x) for x in pos}
        top = [int(x) for x in row[:k] if x >= 0]
        hit = wanted & set(top)
        on_history += sum(x in seen for x in hit)
        new += len(hit) - sum(x in seen for x in hit)
        shown += sum(x in seen for x in top)
        recall.append(len(hit) / min(len(wanted), k))
    return {f"recall@{k}": float(np.mean(recall)), "hits_on_history": on_history, "hits_on_new": new,
            f"history_items_per_top{k}": shown / max(len(lists), 1)}


def popularity_groups(train_sequences: list, n_items: int) -> np.ndarray:
    """(n_items,) group per item: 0 head, 1 torso, 2 tail — each a third of the training positives, most frequent first."""
    from onerec.evaluate.baselines.popularity import Popularity

    pop = Popularity.fit(train_sequences, n_items)  # training counts and their order (ties: lower id first)
    counts, order = pop.counts, pop.order
    before = (np.cumsum(counts[order]) - counts[order]) / max(int(counts.sum()), 1)  # share of the more frequent items
    groups = np.empty(n_items, dtype=np.int64)
    groups[order] = np.minimum(np.floor(before * 3).astype(np.int64), 2)
    return groups


def group_hits(lists: np.ndarray, positives: list, groups: np.ndarray, k: int) -> dict[str, list[int]]:
    """Hits and top-k slots per popularity group (head, torso, tail)."""
    hits, slots = [0, 0, 0], [0, 0, 0]
    for pos, row in zip(positives, lists):
        top = [int(x) for x in row[:k] if x >= 0]
        for item in top:
            slots[groups[item]] += 1
        for item in {int(x) for x in pos} & set(top):
            hits[groups[item]] += 1
    return {"hits_head_torso_tail": hits, "slots_head_torso_tail": slots}


def main(argv: list[str] | None = None) -> None:
    import torch

    from onerec.checkpoint import load_run
    from onerec.evaluate.generative import GenerativeRecommender
    from onerec.evaluate.runner import evaluation_set, load_baseline

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--run", type=Path, action="append", default=[])
    ap.add_argument("--baseline", type=Path, action="append", default=[])
    ap.add_argument("--n", type=int, default=1000, help="first N test sessions (0 = all)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--beam", type=int, default=32)
    ap.add_argument("--m", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--copy-gate-bias", type=float, action="append", default=[],
                    help="per --run, in order: its eval.copy_gate_bias (runs with the copy head; default 0)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    evset = evaluation_set(args.data, EvalConfig(protocol="session", max_samples=args.n))
    history, positives = evset.test.history, evset.test.positives
    n_pos = sum(len(p) for p in positives)
    groups = popularity_groups(evset.train_sequences, evset.n_items)
    pos_groups = np.bincount(groups[np.concatenate([np.asarray(p, dtype=np.int64) for p in positives])], minlength=3)
    n_rep = sum(len({int(x) for x in p} & {int(x) for x in h if x >= 0}) for h, p in zip(history, positives))
    models = {}
    biases = args.copy_gate_bias + [0.0] * (len(args.run) - len(args.copy_gate_bias))
    for run, bias in zip(args.run, biases):
        model, _ = load_run(run)
        model.set_copy_gate_bias(bias)
        if bias:
            run = f"{run} (copy_gate_bias {bias})"
        models[str(run)] = GenerativeRecommender(model, args.beam, 1 if model.config.max_session_items == 1 else args.m)
    for path in args.baseline:
        models[str(path)] = load_baseline(path)[0]
    if not models:
        raise OnerecError("give at least one --run or --baseline")
    result = {"data": str(args.data), "sessions": len(history), "positives": n_pos,
              "positives_in_history": n_rep, "positives_head_torso_tail": pos_groups.tolist(),
              "items_head_torso_tail": np.bincount(groups, minlength=3).tolist(), "models": {}}
    for name, recommend in models.items():
        lists = np.concatenate([recommend(history[i:i + 256], args.k) for i in range(0, len(history), 256)])
        result["models"][name] = repeat_hits(lists, history, positives, args.k) | group_hits(
            lists, positives, groups, args.k)
    print(json.dumps(result, indent=2))
    share = n_rep / max(n_pos, 1)
    print(f"\n{len(history)} test sessions; {n_rep} of {n_pos} positives ({share:.1%}) are history items")
    print(f"items head / torso / tail (a third of the training positives each): {result['items_head_torso_tail']}; "
          f"test positives in them: {result['positives_head_torso_tail']}")
    print(f"| model | recall@{args.k} | hits on history items | hits on new items | history items per top {args.k} "
          f"| hits head / torso / tail | top-{args.k} slots head / torso / tail |")
    print("|---|---|---|---|---|---|---|")
    for name, row in result["models"].items():
        print(f"| {name} | {row[f'recall@{args.k}']:.4f} | {row['hits_on_history']} | {row['hits_on_new']} | "
              f"{row[f'history_items_per_top{args.k}']:.2f} | {' / '.join(map(str, row['hits_head_torso_tail']))} | "
              f"{' / '.join(map(str, row['slots_head_torso_tail']))} |")


if __name__ == "__main__":
    try:
        main()
    except OnerecError as err:
        sys.exit(f"error: {err}")
