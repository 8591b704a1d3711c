"""Amazon adapter: P5 sequences, datamaps, and S3-Rec attributes mapped onto P5 ids."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl

from onerec.data import DataConfig, load
from onerec.data.adapters.amazon import read
from onerec.data.prepare import prepare


def _write_toys_like(folder: Path) -> Path:
    folder.mkdir()
    (folder / "sequential_data.txt").write_text("1 1 2 3 4 5\n2 2 3 1 4 5 3\n")
    with gzip.open(folder / "datamaps.json.gz", "wt") as fh:
        json.dump({"id2user": {"1": "UA", "2": "UB"}, "id2item": {str(i): f"ASIN{i}" for i in range(1, 6)}}, fh)
    # S3-Rec ids are P5 ids reversed: s3rec k <-> p5 6 - k
    (folder / "s3rec_x_item2attributes.json").write_text(json.dumps({str(k): [k, 100 + k] for k in range(1, 6)}))
    (folder / "s3rec_to_p5_item_map.csv").write_text(
        "s3rec_item_id,p5_item_id,asin\n" + "".join(f"{k},{6 - k},ASIN{6 - k}\n" for k in range(1, 6)))
    (folder / "item_text_tokens_x.txt").write_text("ASIN1 red ball\nASIN3 toy car\n")
    return folder


def test_attributes_follow_the_s3rec_to_p5_map(tmp_path: Path) -> None:
    """With P5 indexing, attributes keyed by S3-Rec ids land on the P5 item the map names."""
    raw = read(DataConfig(source="amazon"), _write_toys_like(tmp_path / "toys"))
    attrs = dict(zip(raw.items["item_orig"].to_list(), raw.items["attributes"].to_list()))
    assert attrs[1] == [5, 105] and attrs[5] == [1, 101], attrs
    texts = dict(zip(raw.items["asin"].to_list(), raw.items["text"].to_list()))
    assert texts["ASIN1"] == "red ball" and texts["ASIN2"] is None, texts


def test_sequences_become_positions(tmp_path: Path, ) -> None:
    """Each line's items keep their order (ts_ms = position) and all are positives; item i = P5 id i+1."""
    folder = _write_toys_like(tmp_path / "toys")
    prepare(DataConfig(source="amazon", split="leave_one_out"), folder, tmp_path / "d")
    b = load(tmp_path / "d")
    seq = b.interactions.filter(pl.col("user") == 1).sort("ts_ms")["item"].to_list()
    assert seq == [1, 2, 0, 3, 4, 2], seq
    assert b.interactions["positive"].all(), "reviews are implicit positives"
    assert b.users["reviewer_id"].to_list() == ["UA", "UB"], b.users


def test_real_toys_attributes_match_s3rec(datasets_dir: Path) -> None:
    """On the real Toys files, a P5 item's attributes are those of its S3-Rec twin (through the map)."""
    folder = datasets_dir / "amazon_toys"
    raw = read(DataConfig(source="amazon"), folder)
    s3 = json.loads(gzip.decompress((folder / "s3rec_Toys_and_Games_item2attributes.json.gz").read_bytes()))
    m = pl.read_csv(folder / "s3rec_to_p5_item_map.csv.gz").head(50)
    attrs = dict(zip(raw.items["item_orig"].to_list(), raw.items["attributes"].to_list()))
    for s3id, p5id in m.select("s3rec_item_id", "p5_item_id").iter_rows():
        assert attrs[p5id] == s3[str(s3id)], f"p5 {p5id} / s3rec {s3id}"
    assert raw.items.height == 11_924 and raw.interactions.height == 167_597, raw.items.height
