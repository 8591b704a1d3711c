"""Run directories: load_run round trip, resumable state, and refusals (corrupt files, other vocabulary,
other item set, existing run) that leave every file untouched."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from onerec import checkpoint as ckpt
from onerec.cli import main
from onerec.io import OnerecError
from onerec.train import train_command

sys.path.insert(0, str(Path(__file__).parent))
from train_fixture import make_fixture, write_config  # noqa: E402

OVERRIDES = ("train.max_steps=2", "train.eval_every=1", "train.patience=0", "train.tensorboard=false")


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    data, tok = make_fixture(root)
    config = write_config(root / "tiny_train.toml")
    train_command(data, tok, config, root / "run", overrides=OVERRIDES)
    return {"root": root, "data": data, "tok": tok, "config": config, "run": root / "run"}


def _copy_run(fx: dict[str, Path], name: str) -> Path:
    dst = fx["root"] / name
    shutil.copytree(fx["run"], dst)
    return dst


def _fingerprint(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _cli_train(fx: dict[str, Path], out: Path, *extra: str, tok: Path | None = None, data: Path | None = None) -> int:
    argv = ["train", "--data", str(data or fx["data"]), "--tokenizer", str(tok or fx["tok"]), "--config",
            str(fx["config"]), "--out", str(out), *[a for o in OVERRIDES for a in ("--set", o)], *extra]
    return main(argv)


def _other_tokenizer(fx: dict[str, Path], name: str, n_items: int, codebook: int) -> Path:
    from onerec.tokenizer.codec import SemanticIds

    levels = np.random.default_rng(1).integers(0, codebook, size=(n_items, 2))
    SemanticIds.from_levels(levels, codebook).save(fx["root"] / name, {"method": "fixture"})
    return fx["root"] / name


def test_load_run_returns_saved_weights(fx: dict[str, Path]) -> None:
    """load_run rebuilds the model from the run alone: its tensors equal RUN/model.safetensors, eval mode."""
    from safetensors.torch import load_file

    model, info = ckpt.load_run(fx["run"])
    saved = load_file(str(fx["run"] / ckpt.WEIGHTS))
    assert not model.training, "load_run must return the model in eval mode"
    assert info["n_items"] == 24 and set(saved) == set(model.state_dict()), "tensor names differ"
    assert all(torch.equal(model.state_dict()[k], saved[k]) for k in saved), "loaded tensors differ from the file"


def test_state_round_trip_restores_optimizer(fx: dict[str, Path]) -> None:
    """RUN/state loads with weights_only=True and its optimizer state fills a fresh AdamW with the saved moments."""
    from onerec.dist import DistInfo, load_optimizer_state
    from onerec.train import TrainConfig, make_optimizer

    weights, optim, rng, meta = ckpt.load_state(fx["run"])
    model, _ = ckpt.load_run(fx["run"])
    model.load_state_dict(weights)
    opt = make_optimizer(model, TrainConfig())
    load_optimizer_state(model, opt, optim)
    name, p = next((n, p) for n, p in model.named_parameters() if p.ndim >= 2)
    torch.testing.assert_close(opt.state[p]["exp_avg"], optim["state"][name]["exp_avg"])
    assert meta["step"] == 2 and isinstance(rng["cpu"], torch.Tensor), f"trainer meta {meta}"


def test_corrupt_weights_rejected(fx: dict[str, Path]) -> None:
    """A flipped byte in model.safetensors is reported as a corrupt checkpoint."""
    run = _copy_run(fx, "corrupt_weights")
    path = run / ckpt.WEIGHTS
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(OnerecError, match="corrupt"):
        ckpt.load_run(run)


def test_truncated_weights_rejected_without_sha(tmp_path: Path) -> None:
    """A truncated safetensors file (no recorded sha) is still a clear OnerecError, not a library traceback."""
    path = tmp_path / "w.safetensors"
    ckpt.save_weights({"a": torch.ones(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(OnerecError, match="corrupt"):
        ckpt.read_weights(path)


def test_corrupt_state_refused_and_nothing_overwritten(fx: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """--resume from a corrupt RUN/state/trainer.pt exits 2 naming the file, and no file of the run changes."""
    run = _copy_run(fx, "corrupt_state")
    pt = run / ckpt.STATE_DIR / ckpt.TRAINER_PT
    pt.write_bytes(pt.read_bytes()[:-10])
    before = _fingerprint(run)
    assert _cli_train(fx, run, "--resume", "--set", "train.max_steps=4") == 2, "corrupt state was accepted"
    assert "corrupt" in capsys.readouterr().err
    assert _fingerprint(run) == before, "a refused resume changed files of the run"


def test_other_vocabulary_refused(fx: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """Resuming with a tokenizer of another codebook size exits 2 and leaves the run untouched."""
    run = _copy_run(fx, "other_vocab")
    tok = _other_tokenizer(fx, "tok_k8", 24, 8)
    before = _fingerprint(run)
    assert _cli_train(fx, run, "--resume", tok=tok) == 2, "a tokenizer with other codes was accepted"
    assert "other codes" in capsys.readouterr().err
    assert _fingerprint(run) == before, "a refused resume changed files of the run"


def test_config_not_matching_checkpoint_refused(fx: dict[str, Path]) -> None:
    """Weights checked against a model of another vocabulary name the tensor and both shapes."""
    from safetensors.torch import load_file
    from onerec.tokenizer.codec import SemanticIds

    model, info = ckpt.load_run(fx["run"])
    other = SemanticIds.load(_other_tokenizer(fx, "tok_k16", 24, 16))
    bigger = ckpt.build_model(info["model_config"], other.codes, other.level_sizes)
    with pytest.raises(OnerecError, match=r"token_emb.weight: checkpoint \(\d+, 32\) vs config \(\d+, 32\)"):
        ckpt.check_compatible(load_file(str(fx["run"] / ckpt.WEIGHTS)), bigger, fx["run"] / ckpt.WEIGHTS)


def test_tokenizer_from_other_item_set_refused(fx: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """A tokenizer over 30 items with data over 24 exits 2 and creates no run directory."""
    tok = _other_tokenizer(fx, "tok_30", 30, 4)
    out = fx["root"] / "never"
    assert _cli_train(fx, out, tok=tok) == 2, "mismatched item sets were accepted"
    assert "different item sets" in capsys.readouterr().err
    assert not out.exists(), "a refused run created its directory"


def test_existing_run_not_overwritten(fx: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """Training into an existing run without --resume exits 2 and changes nothing."""
    run = _copy_run(fx, "existing")
    before = _fingerprint(run)
    assert _cli_train(fx, run) == 2, "an existing run was overwritten"
    assert "--resume" in capsys.readouterr().err
    assert _fingerprint(run) == before, "files of the existing run changed"


def test_failed_state_write_keeps_previous_state(fx: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash while writing RUN/state leaves the previous complete state and no temporary directory."""
    run = _copy_run(fx, "crash")
    before = _fingerprint(run / ckpt.STATE_DIR)
    weights, optim, rng, meta = ckpt.load_state(run)

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", boom)
    with pytest.raises(OSError):
        ckpt.save_state(run, weights, optim, rng, {**meta, "step": 99})
    assert _fingerprint(run / ckpt.STATE_DIR) == before, "the previous state changed"
    assert not [p for p in run.iterdir() if p.name.startswith(".")], "a temporary directory was left behind"


def test_cli_names_the_selection_metric(fx: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """With select_metric = recall@5 the closing line reports the kept step's validation recall@5, not only its loss."""
    import json

    out = fx["root"] / "by_recall_cli"
    assert _cli_train(fx, out, "--set", 'train.select_metric="recall@5"') == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    info = json.loads((out / "run.json").read_text())
    assert f"best val recall@5 {info['best_val_recall@5']:.4f}" in line, line
    assert f"kept weights of step {info['best_step']}" in line, line
