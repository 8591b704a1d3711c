"""Amazon adapter: P5 / S3-Rec sequence files (``user item item ...``, chronological), as used by TIGER.

Design choices
- Indexing (``amazon_indexing``): ``p5`` (primary) reads ``sequential_data.txt[.gz]`` or, when absent, the
  single other ``*.txt[.gz]`` sequence file (S3-Rec's Sports/Beauty files are byte-identical to P5's);
  ``s3rec`` reads ``s3rec_*.txt[.gz]``. The source's ids stay the original ids, so item ``i`` here is
  P5 item ``i + 1`` (ids are numbered in original-id order).
- Side tables: ``datamaps.json[.gz]`` (``id2item`` ASIN, ``id2user`` reviewerID), ``*item2attributes.json``
  (anonymous attribute ids; when it is keyed by S3-Rec ids and the P5 indexing is read, e.g. Toys, it is
  mapped through ``s3rec_to_p5_item_map.csv``), ``item_text_tokens*.txt`` (``ASIN tok tok ...``: weak item text).
- No timestamps: ``ts_ms`` is the item's position in the user's sequence (0, 1, ...). Every row is a
  positive (implicit feedback), so sessions are next-m-positive windows and the split is leave-one-out.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from onerec.data.adapters.common import LOG_SCHEMA, RawData, find_files, read_table, read_text, require_columns
from onerec.data.config import DataConfig
from onerec.io import OnerecError


def _read_json(path: Path) -> dict:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise OnerecError(f"{path}: invalid JSON ({err})") from None


def read_lines(path: Path) -> pl.Series:
    """Non-empty lines of a text file (plain or .gz) as a String series."""
    lines = pl.Series("line", read_text(path).splitlines(), dtype=pl.String).str.strip_chars()
    return lines.filter(lines.str.len_chars() > 0)


def read_sequences(path: Path) -> pl.DataFrame:
    """``user item item ...`` lines -> (user_orig i64, item_orig i64, ts_ms = position), file order."""
    parts = read_lines(path).str.split(" ").list.eval(pl.element().filter(pl.element() != ""))
    frame = pl.DataFrame({"parts": parts}).with_row_index("_line")
    short = frame.filter(pl.col("parts").list.len() < 2)
    if short.height:
        raise OnerecError(f"{path}: {short.height} lines have a user but no item (line {short['_line'][0] + 1})")
    frame = frame.select(
        pl.col("parts").list.first().alias("user_orig"),
        pl.col("parts").list.slice(1).alias("item_orig"),
    ).explode("item_orig")
    out = {}
    for key in ("user_orig", "item_orig"):
        ids = frame[key].cast(pl.Int64, strict=False)
        bad = int(ids.is_null().sum())
        if bad:
            raise OnerecError(f"{path}: {bad} {key.removesuffix('_orig')} ids are not integers "
                              f"(e.g. {frame[key].filter(ids.is_null())[0]!r})")
        out[key] = ids
    log = pl.DataFrame(out).with_columns(pl.int_range(pl.len()).over("user_orig").cast(pl.Int64).alias("ts_ms"))
    dup_users = log.group_by("user_orig").agg(pl.col("ts_ms").filter(pl.col("ts_ms") == 0).len().alias("n"))
    if int((dup_users["n"] > 1).sum()):
        raise OnerecError(f"{path}: {int((dup_users['n'] > 1).sum())} users have more than one line")
    return log


def _sequence_file(cfg: DataConfig, folder: Path) -> Path:
    if cfg.amazon_indexing == "s3rec":
        return find_files(folder, "s3rec_*.txt*", "S3-Rec sequence")[0]
    seq = find_files(folder, "sequential_data.txt*", "P5 sequence", required=False)
    if seq:
        return seq[0]
    other = [p for p in find_files(folder, "*.txt*", "sequence")
             if not p.name.startswith(("s3rec_", "item_text", "README"))]
    if len(other) != 1:
        raise OnerecError(f"{folder}: expected one sequence file *.txt[.gz], found {[p.name for p in other]}")
    return other[0]


def _attributes(cfg: DataConfig, folder: Path, files: dict[str, str]) -> pl.DataFrame | None:
    paths = find_files(folder, "*item2attributes.json*", "item attributes", required=False)
    if not paths:
        return None
    want_s3 = cfg.amazon_indexing == "s3rec"
    path = next((p for p in paths if p.name.startswith("s3rec_") == want_s3), paths[0])
    raw = _read_json(path)
    attrs = pl.DataFrame({"item_orig": list(raw.keys()), "attributes": list(raw.values())},
                         schema={"item_orig": pl.String, "attributes": pl.List(pl.Int32)})
    attrs = attrs.with_columns(pl.col("item_orig").cast(pl.Int64))
    files["item2attributes"] = str(path)
    if path.name.startswith("s3rec_") and not want_s3:
        maps = find_files(folder, "s3rec_to_p5_item_map.csv*", "S3-Rec to P5 item map")
        m = read_table(maps[0])
        require_columns(m, ["s3rec_item_id", "p5_item_id"], maps[0])
        attrs = attrs.join(m.select(pl.col("s3rec_item_id").cast(pl.Int64).alias("item_orig"),
                                    pl.col("p5_item_id").cast(pl.Int64)), on="item_orig", how="inner")
        attrs = attrs.select(pl.col("p5_item_id").alias("item_orig"), "attributes")
        files["s3rec_to_p5_item_map"] = str(maps[0])
    return attrs


def read(cfg: DataConfig, folder: Path) -> RawData:
    """Read an Amazon P5/S3-Rec folder."""
    folder = Path(folder)
    seq_path = _sequence_file(cfg, folder)
    seqs = read_sequences(seq_path)
    log = seqs.with_columns(
        [pl.lit(None, dtype).alias(name) for name, dtype in LOG_SCHEMA.items() if name != "ts_ms"]
    ).with_columns(pl.lit(-1, pl.Int64).alias("request_id"))
    files = {"log": str(seq_path)}
    items = pl.DataFrame({"item_orig": seqs["item_orig"].unique().sort()})
    users = pl.DataFrame({"user_orig": seqs["user_orig"].unique().sort()})
    maps = find_files(folder, "datamaps.json*", "datamaps", required=False)
    if maps and cfg.amazon_indexing == "p5":
        dm = _read_json(maps[0])
        files["datamaps"] = str(maps[0])
        for key, frame_name, col in (("id2item", "items", "asin"), ("id2user", "users", "reviewer_id")):
            if key in dm:
                side = pl.DataFrame({"id": list(dm[key].keys()), col: [str(v) for v in dm[key].values()]})
                side = side.with_columns(pl.col("id").cast(pl.Int64))
                orig = "item_orig" if frame_name == "items" else "user_orig"
                if frame_name == "items":
                    items = items.join(side.rename({"id": orig}), on=orig, how="left")
                else:
                    users = users.join(side.rename({"id": orig}), on=orig, how="left")
    attrs = _attributes(cfg, folder, files)
    notes: dict[str, int] = {}
    if attrs is not None:
        items = items.join(attrs, on="item_orig", how="left")
        notes["items_without_attributes"] = int(items["attributes"].is_null().sum())
    texts = find_files(folder, "item_text_tokens*.txt*", "item text", required=False)
    if texts and "asin" in items.columns:
        lines = read_lines(texts[0])
        text = pl.DataFrame({"asin": lines.str.extract(r"^(\S+)"), "text": lines.str.extract(r"^\S+\s+(.*)$")})
        items = items.join(text.unique("asin", keep="first"), on="asin", how="left")
        notes["items_without_text"] = int(items["text"].is_null().sum())
        files["item_text"] = str(texts[0])
    return RawData(interactions=log, items=items, users=users, implicit=True, files=files, notes=notes)
