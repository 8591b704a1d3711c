"""``DataConfig``: every rule of the data stage (quirks, positives, sessions, quality filter, splits).

Design choices
- One flat dataclass, table ``[data]`` of a TOML file; every threshold of ONEREC.md §1/§3 is a field.
- ``source`` picks the adapter; ``input`` is the dataset folder (``--input`` on the command line wins).
- Cut-offs are ISO dates/datetimes (``"2022-05-06"`` or ``"2022-05-06T00:00:00+08:00"``); a value without
  an offset is read in ``timezone``. Empty cut-offs fall back to quantiles of the session start times.
- Validation (ranges, combinations) happens in ``__post_init__`` and raises :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from onerec.config import ConfigError

SIGNALS = ("click", "watch_ms", "duration_ms", "long_view", "like", "follow", "comment", "share", "rating")
EXPLICIT = ("like", "follow", "comment", "share")


@dataclasses.dataclass
class DataConfig:
    """Configuration of ``onerec data prepare`` (TOML table ``[data]``)."""

    source: Literal["kuairand", "amazon", "movielens", "csv"] = "kuairand"
    input: str = ""
    # --- log quirks (counts of each go to summary.json "quirks") ---
    exact_duplicates: Literal["drop", "keep", "error"] = "drop"
    repeated_keys: Literal["keep_last", "keep_first", "keep_all", "error"] = "keep_last"
    zero_duration: Literal["unknown", "drop", "keep"] = "unknown"
    missing_side: Literal["error", "drop", "keep"] = "error"
    prior_history: bool = True  # KuaiRand: use user_recent_history_*.jsonl(.gz) positives before the log
    # --- positives (ONEREC.md §1) ---
    positive_watch: Literal["long_view", "ratio", "seconds", "none"] = "long_view"
    watch_ratio: float = 1.0
    watch_seconds: float = 10.0
    positive_explicit: list[str] = dataclasses.field(default_factory=lambda: list(EXPLICIT))
    rating_threshold: float = 4.0
    max_history: int = 256
    min_history: int = 0
    # --- sessions (ONEREC.md §3) ---
    session_mode: Literal["auto", "request", "gap", "positives"] = "auto"
    session_gap_s: float = 1800.0
    session_max_items: int = 10
    window_items: int = 5
    window_stride: int = 1
    hq_min_watched: int = 5
    hq_watched_by: Literal["click", "positive"] = "click"
    hq_min_watch_s: float = 60.0
    hq_min_explicit: int = 1
    hq_explicit: list[str] = dataclasses.field(default_factory=lambda: list(EXPLICIT))
    # --- splits ---
    split: Literal["temporal", "leave_one_out"] = "temporal"
    train_start: str = ""
    valid_start: str = ""
    test_start: str = ""
    test_end: str = ""
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    timezone: str = "UTC"
    # --- source-specific ---
    amazon_indexing: Literal["p5", "s3rec"] = "p5"
    movielens_unknown: Literal["drop", "negative"] = "drop"
    csv_interactions: str = "*.csv"
    csv_items: str = ""
    csv_users: str = ""
    csv_columns: dict[str, str] = dataclasses.field(default_factory=dict)
    csv_ts_unit: Literal["ms", "s"] = "ms"
    csv_implicit: bool = False
    # --- execution: sessions and samples are built for blocks of users of about this many log rows ---
    block_rows: int = 500_000

    def __post_init__(self) -> None:
        for name in ("max_history", "session_max_items", "window_items", "window_stride", "block_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("min_history", "hq_min_watched", "hq_min_explicit"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("watch_ratio", "watch_seconds", "session_gap_s", "hq_min_watch_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("valid_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"data.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.valid_fraction + self.test_fraction >= 1.0:
            raise ConfigError("data.valid_fraction + data.test_fraction must be < 1")
        for name in ("positive_explicit", "hq_explicit"):
            bad = [s for s in getattr(self, name) if s not in EXPLICIT]
            if bad:
                raise ConfigError(f"data.{name}: {bad[0]!r} is not one of {list(EXPLICIT)}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"data.timezone: unknown time zone {self.timezone!r}") from None
        for name in ("train_start", "valid_start", "test_start", "test_end"):
            if getattr(self, name):
                self.cutoff_ms(name)
        cuts = [self.cutoff_ms(n) for n in ("train_start", "valid_start", "test_start", "test_end")]
        given = [c for c in cuts if c is not None]
        if given != sorted(given):
            raise ConfigError("data: cut-offs must satisfy train_start <= valid_start <= test_start <= test_end")
        if self.source == "csv" and self.csv_columns:
            bad = [k for k in self.csv_columns if k not in ("user", "item", "ts_ms", "request_id") + SIGNALS]
            if bad:
                raise ConfigError(f"data.csv_columns: unknown canonical column {bad[0]!r}")

    def cutoff_ms(self, name: str) -> int | None:
        """Cut-off field ``name`` as epoch milliseconds (None when empty)."""
        text = getattr(self, name)
        if not text:
            return None
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ConfigError(f"data.{name}: {text!r} is not an ISO date or datetime") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo(self.timezone))
        return int(moment.timestamp() * 1000)
