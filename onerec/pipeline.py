"""``onerec pipeline``: every stage, end to end, into one run directory, skipping what is already done.

    onerec pipeline --config configs/demo.toml --out runs/demo [--from STAGE] [--set section.key=value]

Design choices
- The pipeline is a thin driver over the stage commands: each stage runs exactly the ``onerec`` command a
  user would type (in this process), with the same config file and ``--set`` overrides. So a stage behaves
  the same alone and in the pipeline, and the pipeline has no second implementation of anything.
- A stage is *complete* when its directory holds ``.stage.json`` with its fingerprint: the sha256 of the
  config tables it reads, its command line and its upstream stages' fingerprints. A rerun skips complete
  stages; changing one config value changes the fingerprint of the stages that read that table and of
  everything downstream of them, and only those rerun. ``--from STAGE`` reruns that stage and all after it.
- Display-only settings given as overrides (``--set embed.progress=false``: the progress bars) reach every
  stage command but stay out of the fingerprint, so turning the bars off never makes a finished stage stale.
- Stages write into their own subdirectory (``world/``, ``data/``, ``emb/``, ``tok/``, ``model/``,
  ``baselines/``, ``rm/``, ``align/``, ``eval/``) and the report into ``report.html``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from onerec.config import ConfigError, apply_overrides, load_section, parse_override, read_toml
from onerec.io import OnerecError, read_json, write_json

STAGES = ["world", "data", "embed", "tokenize", "train", "baselines", "reward", "align", "evaluate", "report"]
DISPLAY_KEYS = frozenset({"progress"})  # keys that change what a stage shows, never what it writes


@dataclasses.dataclass
class PipelineConfig:
    """``[pipeline]``: which data, which stages."""

    source: Literal["simulate", "kuairand", "amazon", "movielens", "csv"] = "simulate"
    input: str = ""  # dataset folder for a real source
    model_config: str = "configs/small.toml"  # where [model] and [train] come from when this file has none
    baselines: list[str] = dataclasses.field(default_factory=lambda: ["popularity", "sasrec"])
    tokenizer_report: bool = True  # also run kmeans and rqvae and draw the code-usage comparison
    reward: bool = True  # sources without feedback signals (Amazon) have nothing for the reward towers
    align: bool = True  # needs the reward model
    reward_eval: bool = True
    # models with the item head: `onerec tune --apply` of model.item_head_weight over these values on the first
    # tune_samples validation samples before the evaluate stage scores test (empty = the model's own weight; a
    # choice once applied stays in model/run.json until the train stage reruns)
    tune_grid: list[float] = dataclasses.field(default_factory=list)
    tune_samples: int = 4096

    def __post_init__(self) -> None:
        if self.tune_samples < 0:
            raise ConfigError(f"pipeline.tune_samples must be >= 0, got {self.tune_samples}")
        if self.source != "simulate" and not self.input:
            raise ConfigError(f"pipeline.input is required for source {self.source!r} (the dataset folder)")
        if self.align and not self.reward:
            raise ConfigError("pipeline.align needs pipeline.reward = true (the reward model judges the sessions)")
        unknown = set(self.baselines) - {"popularity", "sasrec", "tiger"}
        if unknown:
            raise ConfigError(f"pipeline.baselines: unknown {sorted(unknown)} (popularity, sasrec, tiger)")


@dataclasses.dataclass
class Stage:
    name: str
    directory: str
    sections: tuple[str, ...]
    upstream: tuple[str, ...]
    argv: Callable[[Path], list[list[str]]]  # run dir -> the onerec commands to run
    summary: Callable[[Path], str]


def _fingerprint(raw: dict[str, Any], stage: Stage, argv: list[list[str]], upstream: list[str], out: Path) -> str:
    """Config tables the stage reads (overrides applied) + its command without ``--set`` (paths relative to the
    run directory, so a moved run stays complete) + upstream prints."""
    commands = []
    for cmd in argv:
        kept, skip = [], False
        for arg in cmd:
            if skip:
                skip = False
            elif arg == "--set":
                skip = True
            else:
                kept.append(arg.replace(str(out), "$RUN"))
        commands.append(kept)
    payload = {"sections": {s: raw.get(s, {}) for s in stage.sections}, "argv": commands, "upstream": upstream}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _run_onerec(argv: list[str]) -> None:
    from onerec.cli import main

    code = main(argv)
    if code:
        raise OnerecError(f"stage command failed (exit {code}): onerec {' '.join(argv)}")


def _first(path: Path, *keys: str, default: Any = None) -> Any:
    try:
        value: Any = read_json(path)
    except OnerecError:
        return default
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return default
        value = value[key]
    return value


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def build_stages(pcfg: PipelineConfig, config_path: Path, overrides: list[str]) -> list[Stage]:
    cfg = ["--config", str(config_path)] + [a for o in overrides for a in ("--set", o)]
    model_cfg = config_path if _has_tables(config_path, ("model", "train")) else Path(pcfg.model_config)
    model_args = ["--config", str(model_cfg)] + [a for o in overrides for a in ("--set", o)]
    source = "kuairand" if pcfg.source == "simulate" else pcfg.source
    data_input = (lambda r: str(r / "world")) if pcfg.source == "simulate" else (lambda r: pcfg.input)
    stages = []
    if pcfg.source == "simulate":
        stages.append(Stage("world", "world", ("simulate",), (), lambda r: [["simulate", "--out", str(r / "world"), *cfg]],
                            lambda r: f"{_first(r / 'world' / 'simulate_summary.json', 'requests', default='?')} requests"))
    stages += [
        Stage("data", "data", ("data",), ("world",) if pcfg.source == "simulate" else (),
              lambda r: [["data", "prepare", "--source", source, "--input", data_input(r), "--out", str(r / "data"), *cfg]],
              lambda r: "{} users, {} items, samples train {} / valid {} / test {}".format(
                  _first(r / "data" / "summary.json", "users"), _first(r / "data" / "summary.json", "items"),
                  *(_first(r / "data" / "summary.json", "samples", k) for k in ("train", "valid", "test")))),
        Stage("embed", "emb", ("embed",), ("data",),
              lambda r: [["embed", "--data", str(r / "data"), "--out", str(r / "emb"), *cfg]],
              lambda r: "kNN recall@10: " + ", ".join(
                  f"{k} {_fmt(v.get('recall@10'))}" for k, v in
                  (_first(r / "emb" / "embed_metrics.json", "methods", default={}) or {}).items())),
        Stage("tokenize", "tok", ("tokenizer",), ("embed",),
              lambda r: [["tokenize", "--emb", str(r / "emb"), "--data", str(r / "data"), "--out", str(r / "tok"), *cfg,
                          *(["--report"] if pcfg.tokenizer_report else [])]],
              lambda r: f"collision rate {_fmt(_first(r / 'tok' / 'tokenizer_metrics.json', 'collision_rate'))}"),
        Stage("train", "model", ("model", "train"), ("embed", "tokenize"),
              lambda r: [["train", "--data", str(r / "data"), "--tokenizer", str(r / "tok"), "--emb", str(r / "emb"),
                          "--out", str(r / "model"), *model_args]],
              lambda r: f"best val NTP loss {_fmt(_first(r / 'model' / 'run.json', 'best_val_ntp_loss'))}"),
        Stage("baselines", "baselines", ("eval", "sasrec"), ("data",),
              lambda r: [["baseline", b, "--data", str(r / "data"), "--out", str(r / "baselines" / b), *cfg]
                         for b in pcfg.baselines if b != "tiger"],
              lambda r: ", ".join(pcfg.baselines)),
    ]
    if pcfg.reward:
        world = ["--world", str("{run}/world")] if pcfg.source == "simulate" else []
        stages.append(Stage(
            "reward", "rm", ("reward",), ("embed",),
            lambda r: [["reward", "train", "--data", str(r / "data"), "--emb", str(r / "emb"), "--out", str(r / "rm"),
                        *cfg]]
            + ([["reward", "eval", "--rm", str(r / "rm"), "--data", str(r / "data"), "--out", str(r / "rm" / "eval"),
                 *[a.format(run=r) for a in world]]] if pcfg.reward_eval else []),
            lambda r: "reward model trained"))
    if pcfg.align:
        stages.append(Stage(
            "align", "align", ("align",), ("train", "reward"),
            lambda r: [["align", "--run", str(r / "model"), "--rm", str(r / "rm"), "--data", str(r / "data"),
                        "--out", str(r / "align"), *(["--world", str(r / "world")] if pcfg.source == "simulate" else []),
                        *cfg]],
            lambda r: _align_summary(r / "align" / "metrics.json")))
    tune = (lambda r: [["tune", "--run", str(r / "model"), "--grid", ",".join(f"{w:g}" for w in pcfg.tune_grid),
                        "--apply", *cfg, "--set", f"eval.max_samples={pcfg.tune_samples}"]] if pcfg.tune_grid else [])
    stages.append(Stage(
        "evaluate", "eval", ("eval",) + (("pipeline",) if pcfg.tune_grid else ()),
        ("train", "baselines") + (("align",) if pcfg.align else ()),
        lambda r: tune(r) + [["evaluate", "--run", str(r / "model"), *cfg,
                              *[a for b in pcfg.baselines if b != "tiger"
                                for a in ("--baseline", str(r / "baselines" / b))]]],
        lambda r: "metrics in model/metrics.json" + (f"; item_head_weight "
                                                     f"{_first(r / 'model' / 'tuning.json', 'item_head_weight', 'best')}"
                                                     " chosen on validation" if pcfg.tune_grid else "")))
    return stages


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its waited-for children (stages run in-process)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _has_tables(path: Path, tables: tuple[str, ...]) -> bool:
    raw = read_toml(path)
    return all(t in raw for t in tables)


def _align_summary(path: Path) -> str:
    rounds = _first(path, "rounds", default=[])
    if not rounds:
        return "no rounds"
    first, last = rounds[0], rounds[-1]
    keys = [k for k in ("judge_reward", "rm_reward_mean", "recall@10") if k in last]
    return ", ".join(f"{k} {first[k]:.4f} -> {last[k]:.4f}" for k in keys)


def run_pipeline(config_path: Path, out: Path, overrides: list[str] = (), start_from: str | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the pipeline; returns ``{stage: "ran" | "skipped"}`` plus timings."""
    config_path = Path(config_path)
    overrides = list(overrides)
    for text in overrides:
        if "." not in text.split("=", 1)[0]:
            raise ConfigError(f"pipeline override {text!r} must name its section (section.key=value)")
    pcfg = load_section(PipelineConfig, "pipeline", config_path, overrides)
    fingerprinted = [o for o in overrides if parse_override(o)[0][-1] not in DISPLAY_KEYS]
    raw = apply_overrides(read_toml(config_path), fingerprinted)
    stages = build_stages(pcfg, config_path, overrides)
    names = [s.name for s in stages]
    if start_from is not None and start_from not in names:
        raise OnerecError(f"--from {start_from!r}: not a stage of this pipeline ({', '.join(names)}, report)")
    out.mkdir(parents=True, exist_ok=True)
    prints: dict[str, str] = {}
    status: dict[str, Any] = {}
    forced = False
    for stage in stages:
        forced = forced or stage.name == start_from
        argv = stage.argv(out)
        fp = _fingerprint(raw, stage, argv, [prints.get(u, "") for u in stage.upstream], out)
        marker = out / stage.directory / ".stage.json"
        prints[stage.name] = fp
        if not forced and marker.is_file() and _first(marker, "fingerprint") == fp:
            status[stage.name] = "skipped"
            log(f"[{stage.name}] up to date, skipped: {stage.summary(out)}")
            continue
        shutil.rmtree(out / stage.directory, ignore_errors=True)  # stale outputs: the stage rewrites them whole
        start, cpu0 = time.perf_counter(), _cpu_seconds()
        log(f"[{stage.name}] running")
        for cmd in argv:
            _run_onerec(cmd)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
        write_json(marker, {"fingerprint": fp, "argv": argv, "seconds": round(seconds, 1), "cpu_s": round(cpu, 1)})
        status[stage.name] = "ran"
        log(f"[{stage.name}] done in {seconds:.1f}s wall, {cpu:.1f}s CPU: {stage.summary(out)}")
    from onerec.report import write_report

    report = write_report(out)
    status["report"] = str(report)
    log(f"report: {report}")
    return status
