"""``onerec tokenize`` end to end: the files of the contract, and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from onerec.cli import main
from onerec.tokenizer.codec import SemanticIds
from onerec.tokenizer.trie import CodeTrie


def _emb(n: int = 400, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _run(*args: str) -> int:
    return main(["tokenize", *args, "--set", "tokenizer.iters=3"])


def test_outputs_follow_the_contract(tmp_path: Path) -> None:
    """TOK holds codes/codebooks/trie/json; codes reload one-to-one and the trie walks to each item."""
    np.save(tmp_path / "e.npy", _emb())
    tok = tmp_path / "tok"
    rc = _run("--embeddings", str(tmp_path / "e.npy"), "--method", "balanced", "--levels", "2",
              "--codebook-size", "8", "--out", str(tok))
    assert rc == 0, "tokenize failed"
    for name in ("codes.parquet", "codebooks.safetensors", "trie.safetensors", "tokenizer.json",
                 "tokenizer_metrics.json"):
        assert (tok / name).is_file(), f"missing {name}"
    frame = pl.read_parquet(tok / "codes.parquet")
    assert frame.columns == ["item_id", "c0", "c1", "dedup"], f"columns {frame.columns}"
    ids = SemanticIds.load(tok)
    assert np.array_equal(ids.item_of(ids.codes), np.arange(400)), "item -> code -> item failed"
    trie = CodeTrie.load(tok)
    assert torch.equal(trie.walk(torch.from_numpy(ids.codes)), torch.arange(400)), "trie walk failed"
    metrics = json.loads((tok / "tokenizer_metrics.json").read_text())
    assert [lv["clusters_used"] for lv in metrics["levels"]] == [8, 8], "balanced left codes unused"
    assert 0.0 <= metrics["collision_rate"] <= 1.0, "collision rate out of range"


def test_parquet_input_is_keyed_by_item_id(tmp_path: Path) -> None:
    """A Parquet file in shuffled item order gives the same codes as the .npy in item order."""
    x = _emb(200)
    np.save(tmp_path / "e.npy", x)
    perm = np.random.default_rng(3).permutation(200)
    pl.DataFrame({"item_id": perm, "vec": x[perm].tolist()}).write_parquet(tmp_path / "e.parquet")
    common = ["--method", "kmeans", "--levels", "2", "--codebook-size", "4"]
    assert _run("--embeddings", str(tmp_path / "e.npy"), *common, "--out", str(tmp_path / "a")) == 0
    assert _run("--embeddings", str(tmp_path / "e.parquet"), *common, "--out", str(tmp_path / "b")) == 0
    a, b = SemanticIds.load(tmp_path / "a").codes, SemanticIds.load(tmp_path / "b").codes
    assert np.array_equal(a, b), "Parquet input was not reordered by item_id"


def _bad_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    x = _emb(50)
    nan = x.copy()
    nan[7, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "flat.npy", x[:, 0])
    np.save(tmp_path / "ok.npy", x)
    pl.DataFrame({"item_id": np.arange(50)[::2], "vec": x[::2].tolist()}).write_parquet(tmp_path / "gap.parquet")
    data = tmp_path / "data"
    data.mkdir()
    pl.DataFrame({"item": np.arange(60, dtype=np.int32)}).write_parquet(data / "items.parquet")
    return {
        "nan": (["--embeddings", str(tmp_path / "nan.npy")], "NaN or inf"),
        "dims": (["--embeddings", str(tmp_path / "flat.npy")], "2-D"),
        "count": (["--embeddings", str(tmp_path / "ok.npy"), "--data", str(data)], "50 embedding rows for 60 items"),
        "missing": (["--embeddings", str(tmp_path / "gap.parquet")], "item ids missing"),
        "k_gt_n": (["--embeddings", str(tmp_path / "ok.npy"), "--codebook-size", "64"], "larger than the number"),
    }


@pytest.mark.parametrize("case", ["nan", "dims", "count", "missing", "k_gt_n"])
def test_bad_input_is_a_clear_error(tmp_path: Path, capsys, case: str) -> None:
    """NaN, wrong dimensions, item-count mismatch, missing ids and K > N exit 2 with a one-line reason."""
    args, message = _bad_cases(tmp_path)[case]
    rc = _run("--codebook-size", "8", *args, "--out", str(tmp_path / "tok"))
    err = capsys.readouterr().err
    assert rc == 2 and message in err, f"{case}: rc={rc}, stderr={err!r}"
    assert not (tmp_path / "tok").exists(), f"{case}: an output directory was left behind"


def test_bad_config_value_is_a_clear_error(tmp_path: Path, capsys) -> None:
    """A codebook size below 2 is rejected by TokenizerConfig with exit status 2 and the key named."""
    np.save(tmp_path / "e.npy", _emb(20))
    rc = _run("--embeddings", str(tmp_path / "e.npy"), "--set", "tokenizer.codebook_size=1", "--out", str(tmp_path / "t"))
    err = capsys.readouterr().err
    assert rc == 2 and "tokenizer.codebook_size" in err, f"rc={rc}, stderr={err!r}"
