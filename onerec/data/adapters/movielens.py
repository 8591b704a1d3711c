"""MovieLens-1M adapter: the official ``::`` layout and the reconstructed CSV in ``../shared/datasets``.

Design choices
- Ratings: ``ratings.dat[.gz]`` (``UserID::MovieID::Rating::Timestamp``, official) when present, else
  ``ratings_reconstructed.csv[.gz]`` (``user_id,movie_id,rating,timestamp[,split]``). Timestamps are
  unix seconds, stored as ``ts_ms``. The CSV's ``split`` column is ignored (splits are ours).
- Positive = ``rating >= rating_threshold`` (4 by default; no watch or click signal).
- The reconstructed file has 337,147 train-period 1-3 star rows with ``rating = -1`` and
  ``timestamp = -1`` (pair known, rating and time not). ``movielens_unknown = "drop"`` (default) drops
  them; ``"negative"`` keeps them as negatives (rating null) at their latest possible time, 975768738 s
  (they then count as interactions but never enter a history or a target). Either way the count is in
  ``summary.json["quirks"]["unknown_rating_rows"]``.
- ``movies.dat`` -> ``title``, ``genres`` list<str>, ``year`` (from the title); ``users.dat`` -> gender,
  age, occupation, zip. Both are ISO-8859-1 and split on ``::`` (titles may contain ``:``).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from onerec.data.adapters.common import RawData, canonical_log, find_files, read_table, read_text
from onerec.data.config import DataConfig
from onerec.io import OnerecError

UNKNOWN_TS_S = 975768738  # the reconstructed file's unknown rows are at or before this time (SOURCE.md)


def read_dat(path: Path, columns: list[str]) -> pl.DataFrame:
    """A ``::``-separated ISO-8859-1 file (plain or .gz) as String columns; a short line is an error."""
    lines = pl.Series("line", read_text(path, "latin-1").splitlines(), dtype=pl.String)
    parts = lines.filter(lines.str.strip_chars().str.len_chars() > 0).str.split("::")
    short = int((parts.list.len() < len(columns)).sum())
    if short:
        raise OnerecError(f"{path}: {short} lines have fewer than {len(columns)} '::' fields ({columns})")
    return pl.DataFrame({name: parts.list.get(i) for i, name in enumerate(columns)})


def _ratings(cfg: DataConfig, folder: Path) -> tuple[pl.DataFrame, str, dict[str, int]]:
    dat = find_files(folder, "ratings.dat*", "ratings", required=False)
    if dat:
        raw = read_dat(dat[0], ["user_id", "movie_id", "rating", "timestamp"])
        path = dat[0]
    else:
        path = find_files(folder, "ratings*.csv*", "ratings (ratings.dat or ratings_reconstructed.csv)")[0]
        raw = read_table(path)
    raw = raw.with_columns(pl.col("timestamp").cast(pl.Int64, strict=False) * 1000)
    log = canonical_log(raw, {"user": "user_id", "item": "movie_id", "ts_ms": "timestamp", "rating": "rating"}, path)
    log = log.with_columns(pl.col("user_orig").cast(pl.Int64, strict=False),
                           pl.col("item_orig").cast(pl.Int64, strict=False))
    for key in ("user_orig", "item_orig"):
        bad = int(log[key].is_null().sum())
        if bad:
            raise OnerecError(f"{path}: {bad} {key.removesuffix('_orig')} ids are not integers")
    unknown = (pl.col("rating") < 0) | (pl.col("ts_ms") < 0)
    notes = {"unknown_rating_rows": int(log.select(unknown.sum()).item())}
    if cfg.movielens_unknown == "drop":
        log = log.filter(~unknown)
    else:
        log = log.with_columns(
            pl.when(unknown).then(None).otherwise(pl.col("rating")).alias("rating"),
            pl.when(unknown).then(UNKNOWN_TS_S * 1000).otherwise(pl.col("ts_ms")).alias("ts_ms"),
        )
    bad = int(log.filter(pl.col("rating").is_not_null() & ~pl.col("rating").is_between(0.5, 5.0)).height)
    if bad:
        raise OnerecError(f"{path}: column 'rating' has {bad} rows outside 0.5..5")
    if log.height == 0:
        raise OnerecError(f"{path}: no ratings left (movielens_unknown={cfg.movielens_unknown})")
    return log.with_columns(pl.lit(-1, pl.Int64).alias("request_id")), str(path), notes


def read(cfg: DataConfig, folder: Path) -> RawData:
    """Read a MovieLens-1M folder."""
    folder = Path(folder)
    log, path, notes = _ratings(cfg, folder)
    files = {"log": path}
    items = users = None
    movies = find_files(folder, "movies.dat*", "movies", required=False)
    if movies:
        m = read_dat(movies[0], ["movie_id", "title", "genres"])
        items = m.select(
            pl.col("movie_id").cast(pl.Int64).alias("item_orig"),
            "title",
            pl.col("genres").str.split("|").alias("genres"),
            pl.col("title").str.extract(r"\((\d{4})\)\s*$").cast(pl.Int32).alias("year"),
        )
        files["movies"] = str(movies[0])
    user_files = find_files(folder, "users.dat*", "users", required=False)
    if user_files:
        u = read_dat(user_files[0], ["user_id", "gender", "age", "occupation", "zip"])
        users = u.select(
            pl.col("user_id").cast(pl.Int64).alias("user_orig"), "gender",
            pl.col("age").cast(pl.Int32), pl.col("occupation").cast(pl.Int32), "zip",
        )
        files["users"] = str(user_files[0])
    return RawData(interactions=log, items=items, users=users, files=files, notes=notes)
