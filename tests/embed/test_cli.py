"""``onerec embed`` end to end: the files of ARCHITECTURE.md §3, the loader, and CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from onerec.cli import main
from onerec.embed import load_embeddings
from onerec.io import OnerecError

TINY_SET = ["--set", "embed.dim=8", "--set", "embed.hidden=16", "--set", "embed.epochs=2",
            "--set", "embed.batch_size=64", "--set", "embed.threads=1"]


def test_embed_writes_contract_files(planted: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """The command writes (I, d) float32 embeddings, embed.json and metrics for popularity/content/aligned."""
    data, group = planted
    out = tmp_path / "emb"
    assert main(["embed", "--data", str(data), "--out", str(out), *TINY_SET]) == 0
    emb = load_embeddings(out)
    assert emb.shape == (len(group), 8) and emb.dtype == np.float32, f"{emb.shape} {emb.dtype}"
    meta = json.loads((out / "embed.json").read_text())
    metrics = json.loads((out / "embed_metrics.json").read_text())
    assert meta["method"] == "aligned" and meta["dim"] == 8 and meta["n_items"] == len(group), meta
    assert set(metrics["methods"]) == {"popularity", "content", "aligned"}, metrics["methods"].keys()


def test_external_through_cli(planted: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """--embeddings FILE stores the user's vectors unchanged as method 'external'."""
    data, group = planted
    mine = np.random.default_rng(0).normal(size=(len(group), 5)).astype(np.float32)
    np.save(tmp_path / "mine.npy", mine)
    out = tmp_path / "emb"
    assert main(["embed", "--data", str(data), "--out", str(out), "--embeddings", str(tmp_path / "mine.npy")]) == 0
    np.testing.assert_array_equal(load_embeddings(out), mine, err_msg="external vectors were altered")
    assert json.loads((out / "embed.json").read_text())["method"] == "external"


def test_bad_input_exits_2(planted: tuple[Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A bad config value or a NaN embeddings file prints one `error:` line and exits 2."""
    data, group = planted
    assert main(["embed", "--data", str(data), "--out", str(tmp_path / "x"), "--set", "embed.temperature=0"]) == 2
    bad = np.ones((len(group), 3), np.float32)
    bad[4, 1] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    assert main(["embed", "--data", str(data), "--out", str(tmp_path / "y"), "--embeddings", str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err
    assert "embed.temperature must be > 0" in err and "NaN or inf (first: item 4)" in err, err
    assert not (tmp_path / "y").exists(), "a failed run left an output directory"


def test_loader_rejects_mismatch(tmp_path: Path) -> None:
    """load_embeddings refuses a file whose shape disagrees with embed.json."""
    from safetensors.numpy import save_file

    save_file({"embeddings": np.zeros((3, 2), np.float32)}, str(tmp_path / "embeddings.safetensors"))
    (tmp_path / "embed.json").write_text(json.dumps({"n_items": 4, "dim": 2}))
    with pytest.raises(OnerecError, match="disagrees"):
        load_embeddings(tmp_path)


def test_content_method_needs_no_training(planted: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """method=content writes the seeded random projection of the features: same seed, same file."""
    data, group = planted
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert main(["embed", "--data", str(data), "--out", str(out), "--set", "embed.method=content",
                     "--set", "embed.dim=8", "--set", "embed.eval=false"]) == 0
    a, b = (load_embeddings(o) for o in outs)
    np.testing.assert_array_equal(a, b, err_msg="content embeddings differ between identical runs")
    meta = json.loads((outs[0] / "embed.json").read_text())
    assert meta["method"] == "content" and "training" not in meta, meta.keys()
