"""Run directories: model weights, resumable training state, and ``load_run`` (docs/ARCHITECTURE.md §5).

Layout of ``RUN/``
- ``model.safetensors``: the weights to use (the best validation step so far) — what ``load_run`` reads.
- ``run.json``: model config, train config, tokenizer path + sha256 of its codes, data path, item count,
  level sizes, onerec version, and ``weights_sha256`` of ``model.safetensors``; after ``onerec tune --apply``
  also ``decoding`` (validation-chosen ``item_head_weight`` / ``copy_gate_bias``), set by ``load_run`` on every
  load. Training writes run.json afresh and DPO rounds drop it, so new weights drop an old choice: tune again.
- ``state/``: everything ``--resume`` needs, replaced as one directory (temp dir + rename) so it is either
  the old complete state or the new complete state: ``model.safetensors`` (weights at the last step),
  ``trainer.pt`` (optimizer state keyed by parameter *names*, RNG states; tensors and plain values only,
  read back with ``torch.load(weights_only=True)``) and ``trainer.json`` (step, epoch, batch in epoch,
  early-stopping state, sha256 of the two other files).

Design choices
- State dicts are *full* and name-keyed (gathered from FSDP shards by ``onerec.dist``), so a run saved at
  one world size or strategy resumes at any other.
- Every read checks what it can before anything is written: sha256 of each file (a truncated or flipped
  file is reported as corrupt), tensor names and shapes against the model the config builds (a config
  for another vocabulary is reported with the tensor, both shapes and the likely cause).
- ``load_run`` rebuilds the model from the run alone: the item -> code table is a buffer inside the
  weights and the level sizes are in ``run.json``, so the tokenizer directory need not exist any more.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from onerec.io import OnerecError, atomic_dir, atomic_path, read_json, write_json

WEIGHTS = "model.safetensors"
RUN_JSON = "run.json"
STATE_DIR = "state"
TRAINER_PT = "trainer.pt"
TRAINER_JSON = "trainer.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def codes_sha256(codes: np.ndarray) -> str:
    """Fingerprint of an item -> code table (I, D), independent of the file it came from."""
    return hashlib.sha256(np.ascontiguousarray(codes, dtype=np.int64).tobytes()).hexdigest()


# ----------------------------------------------------------------------------- weights
def save_weights(state: dict[str, torch.Tensor], path: Path) -> str:
    """Write a full state dict as safetensors atomically; returns the file's sha256."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp))
    return sha256_file(path)


def read_weights(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read safetensors weights; a missing, unreadable or sha-mismatched file is a clear OnerecError.

    The file is read into memory (not memory-mapped): a server holding these tensors must survive the file
    being overwritten in place (a memory-mapped tensor over a truncated file dies with SIGBUS)."""
    from safetensors.torch import load as load_bytes

    path = Path(path)
    if not path.is_file():
        raise OnerecError(f"missing checkpoint file: {path}")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise OnerecError(f"{path}: corrupt checkpoint (sha256 differs from the one recorded when it was written)")
    try:
        return load_bytes(data)
    except Exception as err:  # safetensors raises its own error types for truncated/garbled headers
        raise OnerecError(f"{path}: corrupt checkpoint, cannot read safetensors ({err})") from None


def check_compatible(state: dict[str, torch.Tensor], model: torch.nn.Module, source: Path) -> None:
    """Raise OnerecError unless ``state`` has exactly the model's tensor names and shapes."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        raise OnerecError(
            f"{source}: {len(missing)} tensors missing (e.g. {missing[:2]}) and {len(extra)} unexpected "
            f"(e.g. {extra[:2]}): the checkpoint was written for another model config"
        )
    diff = [k for k in expected if expected[k] != got[k]]
    if diff:
        k = diff[0]
        hint = " (a different tokenizer vocabulary / item set)" if k in ("token_emb.weight", "item_codes", "head") else ""
        raise OnerecError(
            f"{source}: {len(diff)} tensors differ in shape from the config's model, e.g. {k}: checkpoint "
            f"{got[k]} vs config {expected[k]}{hint}"
        )


# ----------------------------------------------------------------------------- resumable state
def save_state(
    run: Path,
    weights: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    rng: dict[str, Any],
    trainer: dict[str, Any],
) -> None:
    """Replace ``RUN/state/`` as a whole with a new complete training state (call on rank 0 only)."""
    with atomic_dir(Path(run) / STATE_DIR) as tmp:
        w_sha = save_weights(weights, tmp / WEIGHTS)
        with atomic_path(tmp / TRAINER_PT) as pt:
            torch.save({"optimizer": optimizer, "rng": rng}, pt)
        meta = {**trainer, "sha256": {WEIGHTS: w_sha, TRAINER_PT: sha256_file(tmp / TRAINER_PT)}}
        write_json(tmp / TRAINER_JSON, meta)


def load_state(run: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(weights, optimizer state, rng states, trainer meta) from ``RUN/state/``; verifies every sha256."""
    state_dir = Path(run) / STATE_DIR
    if not state_dir.is_dir():
        raise OnerecError(f"{state_dir}: no training state to resume from")
    meta = read_json(state_dir / TRAINER_JSON)
    shas = meta.get("sha256", {})
    weights = read_weights(state_dir / WEIGHTS, shas.get(WEIGHTS))
    pt = state_dir / TRAINER_PT
    if not pt.is_file():
        raise OnerecError(f"missing checkpoint file: {pt}")
    if sha256_file(pt) != shas.get(TRAINER_PT):
        raise OnerecError(f"{pt}: corrupt checkpoint (sha256 differs from the one recorded when it was written)")
    try:
        blob = torch.load(pt, map_location="cpu", weights_only=True)
    except Exception as err:
        raise OnerecError(f"{pt}: corrupt checkpoint, cannot read ({err})") from None
    return weights, blob["optimizer"], blob["rng"], meta


def rng_state() -> dict[str, Any]:
    """The global torch RNG states (CPU, and each CUDA device when present)."""
    out: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- run info and load_run
def write_run_info(run: Path, info: dict[str, Any]) -> None:
    write_json(Path(run) / RUN_JSON, info)


def read_run_info(run: Path) -> dict[str, Any]:
    info = read_json(Path(run) / RUN_JSON)
    for key in ("model_config", "level_sizes", "n_items"):
        if key not in info:
            raise OnerecError(f"{Path(run) / RUN_JSON}: missing key {key!r}")
    return info


def build_model(model_config: dict[str, Any], codes: np.ndarray, level_sizes: list[int],
                item_embeddings: np.ndarray | None = None) -> torch.nn.Module:
    """A fresh ``OneRec`` for a config dict and an (I, D) code table."""
    from onerec.config import from_dict
    from onerec.model.onerec import ModelConfig, OneRec

    cfg = from_dict(ModelConfig, model_config, "model")
    return OneRec(cfg, SimpleNamespace(codes=codes, level_sizes=level_sizes), item_embeddings)


def load_run(run: str | Path, device: str | torch.device = "cpu", weights: str = WEIGHTS
             ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """``(model, run_info)`` of a run directory: the model in eval mode on ``device``.

    ``weights`` names the file under RUN (default ``model.safetensors``, the best validation weights).
    """
    run = Path(run)
    info = read_run_info(run)
    sha = info.get("weights_sha256") if weights == WEIGHTS else None
    state = read_weights(run / weights, sha)
    if "item_codes" not in state:
        raise OnerecError(f"{run / weights}: no 'item_codes' tensor; not a onerec model checkpoint")
    codes = state["item_codes"].numpy()
    if codes.shape[0] != int(info["n_items"]):
        raise OnerecError(f"{run / weights}: {codes.shape[0]} items in item_codes, run.json says {info['n_items']}")
    model = build_model(info["model_config"], codes, list(info["level_sizes"]))
    check_compatible(state, model, run / weights)
    model.load_state_dict(state, strict=True)
    apply_decoding(model, info.get("decoding") or {}, run / RUN_JSON)
    return model.to(device).eval(), info


DECODING_KNOBS = ("item_head_weight", "copy_gate_bias")


def apply_decoding(model: torch.nn.Module, decoding: dict[str, Any], where: Path) -> None:
    """Set the validation-chosen decoding knobs ``run.json`` records (``onerec tune --apply``) on a loaded model."""
    if not isinstance(decoding, dict):
        raise OnerecError(f"{where}: 'decoding' must be a table of {', '.join(DECODING_KNOBS)}")
    for knob, value in decoding.items():
        if knob not in DECODING_KNOBS:
            raise OnerecError(f"{where}: unknown decoding knob {knob!r} (expected {', '.join(DECODING_KNOBS)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise OnerecError(f"{where}: decoding.{knob} must be a finite number, got {value!r}")
        set_decoding_knob(model, knob, float(value))


def set_decoding_knob(model: torch.nn.Module, knob: str, value: float) -> None:
    """``model.set_item_head_weight`` / ``set_copy_gate_bias`` by knob name (each refuses a head the model lacks)."""
    (model.set_item_head_weight if knob == "item_head_weight" else model.set_copy_gate_bias)(value)


def describe(info: dict[str, Any]) -> str:
    """One line about a run (for logs)."""
    return json.dumps({k: info.get(k) for k in ("n_items", "level_sizes", "best_step", "best_val_ntp_loss")})
