"""Does the reward model agree with the simulator's judge? Spearman of RM scores vs true expected outcomes.

Design choices
- Held-out sessions are the test split's logged sessions (at most ``max_sessions``, a seeded sample) and,
  for the same users and days, ``invented_per_session`` *invented* sessions each: ``m`` distinct catalogue
  items drawn uniformly (``m`` = the logged session's length), i.e. sessions nobody logged, mostly of
  items the user never saw; with a OneRec run (``run_dir``), its ``beams`` generated sessions per user too.
- Ids go through ``items.parquet.item_orig`` / ``users.parquet.user_orig`` to the world's ids; the day is
  counted from the world's first Beijing midnight (``onerec.simulate.writer.day_start_ms``).
- The judge takes (B, m) sessions of one length and one day, so sessions are grouped by (length, day).
- Reported per set (logged, invented, generated, all): Spearman of RM ``reward`` vs the judge's ``reward``,
  of each RM tower vs the judge's value of the same name, and the mean within-user Spearman of the reward
  (the ranking DPO uses to pick chosen / rejected sessions).
- The ceiling of a pointwise model: ``spearman_judge_no_session_effects`` (and its within-user mean) is the
  Spearman between the judge and the same judge with its session effects (tag / author fatigue, novelty
  bonus) switched off — a perfect *pointwise* model reaches that figure, so 1 minus it is what only a
  session-wise model can get right on that set.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from onerec.io import OnerecError
from onerec.reward.data import SessionTable
from onerec.reward.metrics import spearman
from onerec.reward.model import RewardModel

DAY_MS = 86_400_000


def _orig_ids(path: Path, key: str) -> np.ndarray:
    frame = pl.read_parquet(path).sort(key)
    if frame[key].to_list() != list(range(frame.height)):
        raise OnerecError(f"{path}: {key} ids are not 0..{frame.height - 1}")
    try:
        return np.asarray([int(x) for x in frame[f"{key}_orig"].to_list()], dtype=np.int64)
    except ValueError:
        raise OnerecError(f"{path}: {key}_orig is not integer (not a simulator world's data)") from None


def without_session_effects(world: Any) -> Any:
    """A shallow copy of ``world`` whose judge ignores the other items of the session (no tag / author fatigue,
    no novelty bonus; position decay, the same for every session of a length, stays)."""
    flat = copy.copy(world)
    flat.config = dataclasses.replace(world.config, tag_fatigue=0.0, author_fatigue=0.0, novelty_bonus=0.0)
    return flat


def judge_sessions(world: Any, users: np.ndarray, sessions: np.ndarray, days: np.ndarray,
                   item_orig: np.ndarray, user_orig: np.ndarray) -> dict[str, np.ndarray]:
    """The judge's expectations for sessions (N, m) padded with -1, grouped by (length, day)."""
    lengths = (sessions >= 0).sum(1)
    out: dict[str, np.ndarray] = {}
    for length, day in sorted({(int(a), int(b)) for a, b in zip(lengths, days)}):
        rows = np.flatnonzero((lengths == length) & (days == day))
        expected = world.expected_reward(user_orig[users[rows]], item_orig[sessions[rows, :length]], day)
        for key, value in expected.items():
            out.setdefault(key, np.full(len(sessions), np.nan))[rows] = value
    return out


def _rm_scores(model: RewardModel, history: np.ndarray, sessions: np.ndarray, users: np.ndarray,
               batch: int = 512) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(sessions), batch):
        sl = slice(start, start + batch)
        probs = model.score(torch.from_numpy(history[sl]), torch.from_numpy(sessions[sl])[:, None, :],
                            torch.from_numpy(users[sl]))
        for key, value in probs.items():
            out.setdefault(key, []).append(value[:, 0].numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def _correlations(rm: dict[str, np.ndarray], judge: dict[str, np.ndarray], sel: np.ndarray,
                  group: np.ndarray) -> dict[str, Any]:
    """Spearman over the selected sessions, and the mean Spearman within a group (one user's candidates)."""
    entry: dict[str, Any] = {"sessions": int(sel.sum())}
    for key in rm:
        if key in judge:
            entry[f"spearman_{key}"] = spearman(rm[key][sel], judge[key][sel])
    groups = group[sel]
    if len(groups) and np.bincount(groups).max() > 1:
        within = [spearman(rm["reward"][sel][groups == g], judge["reward"][sel][groups == g]) for g in np.unique(groups)]
        within = [w for w in within if not np.isnan(w)]
        entry["within_user_spearman_reward"] = float(np.mean(within)) if within else float("nan")
    return entry


def generated_sessions(run_dir: Path, history: np.ndarray, m: int, beams: int) -> np.ndarray:
    """(B * beams, m) sessions generated by a OneRec run for histories (B, n) (-1 padded, oldest first)."""
    from onerec.checkpoint import load_run
    from onerec.model.generate import generate_sessions
    from onerec.tokenizer.trie import CodeTrie

    model, _ = load_run(run_dir)
    m = min(m, int(model.config.max_session_items))  # the model writes at most its configured session length
    trie = CodeTrie.from_codes(model.item_codes.cpu().numpy(), list(model.level_sizes))
    width = int(model.config.max_history)
    out = []
    for start in range(0, len(history), 32):
        rows = history[start:start + 32]
        hist = np.full((len(rows), width), -1, np.int64)  # newest last, left padding (the model's layout)
        for r, row in enumerate(rows):
            row = row[row >= 0][-width:]
            if len(row):
                hist[r, width - len(row):] = row
        items = generate_sessions(model, trie, torch.from_numpy(hist), n_items=m, beam_size=beams).items  # (B, N, m)
        out.append(items.reshape(-1, m).numpy())
    return np.concatenate(out)


def simulator_spearman(model: RewardModel, table: SessionTable, rows: np.ndarray, data_dir: Path, world_dir: Path,
                       max_sessions: int = 2000, invented_per_session: int = 4, seed: int = 0,
                       run_dir: Path | None = None, beams: int = 4, generated_len: int = 6) -> dict[str, Any]:
    """Spearman between the RM and the judge on held-out logged, invented and (with ``run_dir``) generated sessions.

    Per set: Spearman over all its sessions, and (invented, generated: several candidates per held-out
    session) the mean Spearman among one user's candidates, the ranking DPO relies on.
    """
    from onerec.simulate import World
    from onerec.simulate.writer import day_start_ms

    world = World.load(world_dir)
    item_orig = _orig_ids(Path(data_dir) / "items.parquet", "item")
    user_orig = _orig_ids(Path(data_dir) / "users.parquet", "user")
    rng = np.random.default_rng(seed)
    if len(rows) > max_sessions:
        rows = np.sort(rng.choice(rows, size=max_sessions, replace=False))
    logged = table.items[rows]
    lengths = (logged >= 0).sum(1)
    k = invented_per_session
    inv_rows = np.repeat(rows, k)
    invented = np.full((len(inv_rows), logged.shape[1]), -1, np.int64)
    for r, length in enumerate(np.repeat(lengths, k)):
        invented[r, :length] = rng.choice(model.n_items, size=length, replace=False)
    sets = {"logged": (rows, logged), "invented": (inv_rows, invented)}
    if run_dir is not None:
        gen = generated_sessions(Path(run_dir), table.history[rows], generated_len, beams)
        sets["generated"] = (np.repeat(rows, beams), gen)
    start = day_start_ms(world.config, 0)
    rm_all: dict[str, list[np.ndarray]] = {}
    judge_all: dict[str, list[np.ndarray]] = {}
    names, groups = [], []
    pointwise_world = without_session_effects(world)
    flat_all: list[np.ndarray] = []
    for name, (set_rows, sessions) in sets.items():
        days = (table.ts_ms[set_rows] - start) // DAY_MS
        judge = judge_sessions(world, table.user[set_rows], sessions, days, item_orig, user_orig)
        flat = judge_sessions(pointwise_world, table.user[set_rows], sessions, days, item_orig, user_orig)
        flat_all.append(flat["reward"])
        rm = _rm_scores(model, table.history[set_rows], sessions, table.user[set_rows])
        for key in rm:
            rm_all.setdefault(key, []).append(rm[key])
        for key in judge:
            judge_all.setdefault(key, []).append(judge[key])
        names.extend([name] * len(set_rows))
        groups.append(np.searchsorted(rows, set_rows))
    rm_cat = {key: np.concatenate(v) for key, v in rm_all.items()}
    judge_cat = {key: np.concatenate(v) for key, v in judge_all.items()}
    labels, group = np.asarray(names), np.concatenate(groups)
    flat_cat = np.concatenate(flat_all)

    def ceiling(sel: np.ndarray) -> dict[str, float]:
        """The judge without session effects scored like an RM: a perfect pointwise model's agreement."""
        flat = _correlations({"reward": flat_cat}, judge_cat, sel, group)
        out = {"spearman_judge_no_session_effects": flat["spearman_reward"]}
        if "within_user_spearman_reward" in flat:
            out["within_user_spearman_judge_no_session_effects"] = flat["within_user_spearman_reward"]
        return out

    out = {name: _correlations(rm_cat, judge_cat, labels == name, group) | ceiling(labels == name) for name in sets}
    if "generated" in sets:  # what the model would be judged on: held-out logged plus its own sessions
        both = np.isin(labels, ["logged", "generated"])
        out["logged+generated"] = _correlations(rm_cat, judge_cat, both, group) | ceiling(both)
    everything = np.ones(len(labels), bool)
    out["all"] = _correlations(rm_cat, judge_cat, everything, group) | ceiling(everything)
    return out
