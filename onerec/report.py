"""``RUN/report.html``: one self-contained page (tables + PNGs inlined as data URIs) over a pipeline run.

Design choices
- The report only reads the files the stages wrote (JSON, JSON lines, Parquet, PNG); a stage that did not run
  is shown as "not run", never invented. Plots are drawn with matplotlib (Agg) into ``RUN/report/*.png``
  and inlined, so the HTML opens anywhere without the run directory.
- Example sessions are generated here with the final policy (the last alignment round, else the seed
  model) for a few held-out users, next to their history, with item tags where the data has them.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from onerec.io import atomic_write_text


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _esc(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return "[" + ", ".join(_esc(v) for v in value) + "]"
    return html.escape(str(value))


def _table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p><em>not run</em></p>"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_esc(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv(obj: dict[str, Any] | None) -> str:
    if not obj:
        return "<p><em>not run</em></p>"
    flat = {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in obj.items()}
    return _table([{"key": k, "value": v} for k, v in flat.items()], ["key", "value"])


def _img(path: Path, alt: str) -> str:
    if not path.is_file():
        return f"<p><em>{html.escape(alt)}: not available</em></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _training_curve(run: Path, png: Path) -> Path | None:
    log_file = run / "model" / "train_log.jsonl"
    if not log_file.is_file():
        return None
    rows = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r and "step" in r]
    val = [(r["step"], r["val_ntp_loss"]) for r in rows if "val_ntp_loss" in r]
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation NTP loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


QUALITY_COLUMNS = ["recall@10", "ndcg@10", "recall@50", "ndcg@50", "session_recall@5", "session_ndcg@5",
                   "item_coverage", "valid_item_rate", "duplicate_rate", "n_sessions", "eval_seconds", "train_seconds"]


def _stage_table(run: Path) -> str:
    """Wall and CPU seconds of every stage that ran (from its ``.stage.json``)."""
    order = ["world", "data", "emb", "tok", "model", "baselines", "rm", "align", "eval"]
    rows = []
    for marker in sorted(run.glob("*/.stage.json"), key=lambda p: (order + [p.parent.name]).index(p.parent.name)):
        info = _load(marker) or {}
        rows.append({"stage directory": marker.parent.name, "wall s": info.get("seconds", ""),
                     "CPU s (user+sys)": info.get("cpu_s", "")})
    if rows:
        rows.append({"stage directory": "total", "wall s": round(sum(r["wall s"] or 0 for r in rows), 1),
                     "CPU s (user+sys)": round(sum(r["CPU s (user+sys)"] or 0 for r in rows), 1)})
    return _table(rows)


def _dataset_html(summary: dict[str, Any], world: dict[str, Any] | None) -> str:
    """Counts, samples per split, and the session rules (ONEREC.md §2): sessions built / kept and removed per rule."""
    rows = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
    samples = summary.get("samples") if isinstance(summary.get("samples"), dict) else {}
    out = _kv({**rows, **{f"samples {k}": v for k, v in samples.items()}}) if rows or samples else "<p><em>not run</em></p>"
    sessions = summary.get("sessions") if isinstance(summary.get("sessions"), dict) else None
    if sessions:
        rules = []
        by_rule, in_order = sessions.get("removed_by_rule") or {}, sessions.get("removed_in_order") or {}
        for rule in dict.fromkeys([*by_rule, *in_order]):
            rules.append({"rule": rule, "sessions failing it": by_rule.get(rule, ""),
                          "removed by it (rules in order)": in_order.get(rule, "")})
        per_split = [{"split": k, **v} for k, v in (sessions.get("per_split") or {}).items() if isinstance(v, dict)]
        flat = {k: v for k, v in sessions.items() if not isinstance(v, (dict, list))}
        out += "<h3>Session rules (high-quality sessions)</h3>" + _kv(flat) + _table(rules) + _table(per_split)
    if world:
        flat = {k: v for k, v in world.items() if not isinstance(v, (list, dict))}
        rates = world.get("rates") if isinstance(world.get("rates"), dict) else {}
        rate_rows = [{"rate": k, **v} for k, v in rates.items() if isinstance(v, dict)]
        out += "<h3>Simulator calibration</h3>" + _kv(flat) + _table(rate_rows)
    return out


def _tokenizer_compare(compare: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (method, level) from ``tok/report_metrics.json``."""
    rows = []
    for method, metrics in compare.items():
        if not isinstance(metrics, dict):
            continue
        for lv in metrics.get("levels") or []:
            if isinstance(lv, dict):
                rows.append({"method": method, "level": lv.get("level"), "clusters_used": lv.get("clusters_used"),
                             "entropy_ratio": lv.get("entropy_ratio"), "min_size": lv.get("min_size"),
                             "max_size": lv.get("max_size"), "collision_rate": metrics.get("collision_rate")})
    return rows


def _align_plot(rows: list[dict[str, Any]], png: Path) -> Path | None:
    keys = [k for k in ("rm_reward_max", "rm_reward_mean", "judge_reward", "recall@10") if all(k in r for r in rows)]
    if len(rows) < 2 or not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for key in keys:
        base = rows[0][key] or 1e-12
        ax.plot([r["round"] for r in rows], [100 * (r[key] / base - 1) for r in rows], "o-", label=key)
    ax.axhline(0, color="#999", lw=0.8)
    ax.set_xticks([r["round"] for r in rows])
    ax.set_xlabel("alignment round (0 = seed model M_0)")
    ax.set_ylabel("% change vs M_0")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def _quality_rows(metrics: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not metrics or "models" not in metrics:
        return []
    rows = []
    for name, values in metrics["models"].items():
        rows.append({"model": name, **{k: v for k, v in values.items() if not isinstance(v, (list, dict))}})
    return rows


def _example_sessions(run: Path, n_users: int = 4) -> list[dict[str, Any]]:
    import polars as pl
    import torch

    policy_dir = run / "model"
    latest = run / "align" / "LATEST"
    if latest.is_file() and (run / "align" / latest.read_text().strip() / "model.safetensors").is_file():
        policy_dir = run / "align" / latest.read_text().strip()
    samples_file = run / "data" / "samples.parquet"
    if not (policy_dir / "model.safetensors").is_file() or not samples_file.is_file():
        return []
    from onerec.checkpoint import load_run
    from onerec.model.generate import generate_sessions
    from onerec.tokenizer.trie import CodeTrie

    model, _ = load_run(policy_dir)
    trie = CodeTrie.from_codes(model.item_codes.numpy(), list(model.level_sizes))
    rows = (pl.read_parquet(samples_file).filter((pl.col("split") == "test") & (pl.col("history").list.len() > 0))
            .sort("sample").head(n_users))
    items = pl.read_parquet(run / "data" / "items.parquet").sort("item")
    label_col = next((c for c in ("tags", "title", "genres", "text") if c in items.columns), None)
    orig = items["item_orig"].cast(pl.Utf8).to_list()
    labels = items[label_col].to_list() if label_col else [None] * len(orig)

    def name(i: int) -> str:
        lab = labels[i]
        if isinstance(lab, list):
            lab = ",".join(map(str, lab[:3]))
        return f"{orig[i]}" + (f" ({lab})" if lab not in (None, "") else "")

    out = []
    window = model.config.max_history
    m = min(5, model.config.max_session_items)
    for row in rows.iter_rows(named=True):
        hist = row["history"][-window:]
        beams = generate_sessions(model, trie, torch.tensor([hist]), n_items=m, beam_size=8)
        out.append({
            "user": row["user"],
            "history (last 8)": " · ".join(name(i) for i in hist[-8:]),
            "generated session": " · ".join(name(int(i)) for i in beams.items[0, 0]),
            "held-out session": " · ".join(name(i) for i in row["target"][:m]),
        })
    return out


def write_report(run: str | Path) -> Path:
    """Write ``RUN/report.html`` from whatever stages have run; returns its path."""
    run = Path(run)
    figures = run / "report"
    summary = _load(run / "data" / "summary.json") or {}
    tok_metrics = _load(run / "tok" / "tokenizer_metrics.json")
    quality = _load(run / "model" / "metrics.json")
    rm_eval = _load(run / "rm" / "eval" / "metrics.json")
    align = _load(run / "align" / "metrics.json")
    world = _load(run / "world" / "simulate_summary.json")
    curve = _training_curve(run, figures / "training.png")

    sections = [("Stages", _stage_table(run))]
    sections.append(("Dataset", _dataset_html(summary, world)))
    tok_html = "<p><em>not run</em></p>"
    if tok_metrics:
        levels = tok_metrics.get("levels") or []
        tok_html = _table([lv for lv in levels if isinstance(lv, dict)]) + _kv(
            {k: v for k, v in tok_metrics.items() if k != "levels"})
    compare = _load(run / "tok" / "report_metrics.json")
    if isinstance(compare, dict) and compare:
        tok_html += "<h3>Per-level code usage: balanced vs the others</h3>" + _table(_tokenizer_compare(compare))
    sections.append(("Semantic IDs (tokenizer)", tok_html + _img(run / "tok" / "report.png", "code usage per level")))
    sections.append(("Training", _img(curve, "training and validation loss") if curve else "<p><em>not run</em></p>"))
    protocol = f"<p>Protocol: {_esc(quality.get('protocol'))}, split {_esc(quality.get('split'))}, " \
               f"{_esc(quality.get('n_samples'))} samples, beam {_esc(quality.get('beam_size'))}.</p>" if quality else ""
    q_rows = _quality_rows(quality)
    q_cols = ["model"] + [c for c in QUALITY_COLUMNS if any(c in r for r in q_rows)]
    sections.append(("Quality: model vs baselines", protocol + _table(q_rows, q_cols if q_rows else None)))
    rm_rows = []
    if rm_eval and isinstance(rm_eval.get("towers"), dict):
        rm_rows = [{"tower": t, **{k: v for k, v in vals.items() if not isinstance(v, (dict, list))}}
                   for t, vals in rm_eval["towers"].items() if isinstance(vals, dict)]
    rm_pngs = "".join(_img(p, p.stem) for p in sorted((run / "rm" / "eval").glob("calibration_*.png")))
    sections.append(("Reward model", (_table(rm_rows) if rm_rows else _kv(rm_eval))
                     + (f'<div class="grid">{rm_pngs}</div>' if rm_pngs else "")))
    align_rows = []
    if align:
        keep = ("round", "version", "split", "users", "pairs", "rm_swt_mean", "rm_swt_max", "rm_vtr_mean", "rm_vtr_max", "rm_ltr_mean",
                "rm_ltr_max", "rm_reward_mean", "rm_reward_max", "judge_reward", "judge_swt", "judge_vtr", "judge_ltr",
                "recall@10")
        align_rows = [{k: r[k] for k in keep if k in r} for r in align.get("rounds", [])]
    align_html = _table(align_rows)
    if align_rows:
        align_html = ("<p>RM-estimated towers: mean and max over the generated sessions per held-out user; "
                      "judge_*: the simulator's true expected outcome of the top session (simulated data only); "
                      "recall@10: next-session Recall@10.</p>" + align_html)
        align_png = _align_plot(align_rows, figures / "alignment.png")
        if align_png:
            align_html += _img(align_png, "alignment rounds: reward (RM and judge) and Recall@10, relative to M_0")
    sections.append(("Alignment rounds (RM-estimated and judge-true)", align_html))
    try:
        examples = _example_sessions(run)
    except Exception as err:  # the report must not fail on a missing optional piece
        examples = [{"error": f"{type(err).__name__}: {err}"}]
    sections.append(("Example generated sessions", _table(examples)))

    body = "".join(f"<section><h2>{html.escape(t)}</h2>{c}</section>" for t, c in sections)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>onerec report: {html.escape(run.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}}th{{background:#f2f2f2}}
img{{max-width:100%}}.grid figure{{display:inline-block;width:31%;margin:0 1% 0 0;vertical-align:top}}section{{margin-bottom:2em}}</style></head>
<body><h1>onerec report: {html.escape(str(run))}</h1>{body}</body></html>"""
    path = run / "report.html"
    atomic_write_text(path, page)
    return path
