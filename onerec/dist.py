"""Distributed training as an overlay: the same entry point runs alone or under ``torchrun``.

Design choices
- Rank, world size and local rank come from the environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``); with none set the process is a world of one and no process group is created.
- The backend follows the device: NCCL when CUDA is available, gloo on CPU. Nothing else to configure.
- Data order is a pure function of ``(seed, epoch)``: one global permutation per epoch, cut into global
  batches, each cut into ``world * accum`` micro-batches. Rank ``r`` takes micro-batches
  ``r*accum .. (r+1)*accum - 1``. A run on 1 rank with ``accum = 2`` therefore sees exactly the
  micro-batches that 2 ranks with ``accum = 1`` see, so loss curves agree across world sizes (up to the
  order of floating-point sums), and the sampler state is just ``(epoch, batch)`` — world-size free.
- ``strategy = "ddp"`` wraps the model in ``DistributedDataParallel``; ``"fsdp"`` applies FSDP2
  (``torch.distributed.fsdp.fully_shard``) to each transformer block and then the root, sharding
  parameters, gradients and optimizer state across ranks.
- Checkpoints hold *full* (gathered) state dicts keyed by parameter names (``get_model_state_dict`` /
  ``get_optimizer_state_dict`` with ``full_state_dict=True``), so a run saved at one world size or
  strategy loads at any other.
- Logging and writing happen on rank 0 only (:func:`is_main`); every rank computes the same logged numbers
  because losses are all-reduced first.

These helpers are the hook points the reward-model and DPO trainers reuse: ``init_distributed``,
``global_batches``/``rank_micro_batches``, ``wrap_model``, ``grad_sync``, ``all_reduce_mean``,
``full_model_state``/``load_model_state``, ``full_optimizer_state``/``load_optimizer_state``, and
``main_only`` for rank-0-only work whose result every rank needs (DPO sampling, evaluation). A loop::

    info = init_distributed()                      # alone: world of one, no process group
    model = wrap_model(model, info, "ddp")         # or "fsdp"; build the optimizer after this
    for epoch in ...:
        for batch in global_batches(n, batch_size, seed, epoch):
            mine = rank_micro_batches(batch, micro, info.rank, info.world_size)
            for i, (j, idx) in enumerate(mine):    # j: global micro-batch index (seed dropout with it)
                with grad_sync(model, i == len(mine) - 1):
                    (loss_of(model, idx) / len(mine)).backward()
            optimizer.step(); optimizer.zero_grad()
    state = full_model_state(model)                # collective; tensors on rank 0 only
    if info.is_main: save(state)
    teardown()
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

Strategy = Literal["ddp", "fsdp"]
T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank in the world, its device, and whether a process group exists."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_rank_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment; (0, 1, 0) when run alone."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world, local


def init_distributed(device: str = "auto", timeout_s: float = 600.0) -> DistInfo:
    """Join the torchrun process group if there is one (NCCL on CUDA, gloo on CPU) and pick the device.

    ``device``: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``. Idempotent.
    """
    rank, world, local = env_rank_world()
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=dev if use_cuda else None,
        )
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def teardown() -> None:
    """Leave the process group (no-op when alone)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    """True on rank 0 (and when not distributed): the only rank that logs and writes files."""
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


# ----------------------------------------------------------------------------- data order
def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The global order of ``n`` samples in ``epoch``: a permutation that depends on (seed, epoch) only."""
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=gen).numpy()


def global_batches(n: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """(n // batch_size, batch_size) sample indices of each global batch of ``epoch`` (last partial dropped).

    Dropping the remainder keeps every rank's micro-batch the same shape, which DDP/FSDP collectives need.
    """
    steps = n // batch_size
    return epoch_permutation(n, seed, epoch)[: steps * batch_size].reshape(steps, batch_size)


def accumulation_steps(batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """Micro-batches per rank per optimizer step; the global batch must split evenly."""
    per_step = micro_batch_size * world_size
    if micro_batch_size <= 0 or batch_size % per_step:
        raise ValueError(
            f"batch_size {batch_size} is not a multiple of micro_batch_size {micro_batch_size} x world_size {world_size}"
        )
    return batch_size // per_step


def rank_micro_batches(
    batch: np.ndarray, micro_batch_size: int, rank: int, world_size: int
) -> list[tuple[int, np.ndarray]]:
    """This rank's micro-batches of one global batch as (global micro-batch index, sample indices).

    The global batch is cut into ``world_size * accum`` consecutive micro-batches; rank ``r`` owns the
    ``accum`` micro-batches starting at ``r * accum``. The global index seeds per-micro-batch randomness
    (dropout), so it does not depend on the world size either.
    """
    accum = accumulation_steps(len(batch), micro_batch_size, world_size)
    first = rank * accum
    return [
        (j, batch[j * micro_batch_size : (j + 1) * micro_batch_size]) for j in range(first, first + accum)
    ]


def shard_range(n: int, rank: int, world_size: int) -> range:
    """Contiguous, near-equal share of ``n`` evaluation items for ``rank`` (every item on exactly one rank)."""
    lo = n * rank // world_size
    hi = n * (rank + 1) // world_size
    return range(lo, hi)


# ----------------------------------------------------------------------------- model wrapping
def _default_fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The blocks to shard one by one: each element of every ``nn.ModuleList`` in the model."""
    units: list[nn.Module] = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            units.extend(module)
    return units


# Methods other than ``forward`` that a model calls on a submodule from outside that submodule's own
# forward (OneRec computes every decoder layer's cross-attention keys/values once, from the root). Such a
# submodule becomes its own FSDP unit with the method registered, so its parameters are gathered for it.
FSDP_EXTRA_METHODS = ("project_kv",)


def wrap_model(
    model: nn.Module,
    info: DistInfo,
    strategy: Strategy = "ddp",
    fsdp_units: Callable[[nn.Module], list[nn.Module]] | None = None,
    find_unused_parameters: bool = False,
    broadcast_buffers: bool = True,
) -> nn.Module:
    """Move ``model`` to this rank's device and wrap it for data parallelism (unchanged when alone).

    DDP keeps a full replica per rank and all-reduces gradients. FSDP2 shards each unit returned by
    ``fsdp_units`` (default: every block of every ``nn.ModuleList``) and then the root; the module keeps
    its class (plus ``FSDPModule``), parameters become DTensors. ``find_unused_parameters`` (DDP) is off:
    OneRec's experts live in stacked (E, ...) parameters, so an expert that gets no token still leaves no
    parameter unused; a model whose forward skips whole parameters must turn it on. ``broadcast_buffers``
    (DDP) re-sends rank 0's buffers before every forward; a model whose buffers never change (the reward
    model's feature tables) turns it off.
    """
    model = model.to(info.device)
    if not info.distributed:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [info.device.index] if info.device.type == "cuda" else None
        sync = {}  # torch 2.13 renamed broadcast_buffers (per forward) to forward_sync_buffers
        if not broadcast_buffers:
            accepted = inspect.signature(DistributedDataParallel.__init__).parameters
            sync = {"forward_sync_buffers" if "forward_sync_buffers" in accepted else "broadcast_buffers": False}
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters, **sync)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        for unit in (fsdp_units or _default_fsdp_units)(model):
            for sub in unit.modules():  # children first: FSDP units nest inside out
                methods = [m for m in FSDP_EXTRA_METHODS if callable(getattr(sub, m, None))]
                if methods and sub is not unit:
                    fully_shard(sub)
                    for name in methods:
                        register_fsdp_forward_method(sub, name)
            fully_shard(unit)
        fully_shard(model)
        return model
    raise ValueError(f"unknown strategy {strategy!r} (ddp or fsdp)")


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module under a DDP wrapper (FSDP2 modules are their own)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


@contextlib.contextmanager
def grad_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce / reduce-scatter for accumulation micro-batches (``enabled=False``)."""
    if enabled or not dist.is_initialized():
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    elif hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    else:
        yield


# ----------------------------------------------------------------------------- collectives
def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a float tensor over ranks (a copy; unchanged when alone)."""
    out = values.detach().clone()
    if dist.is_initialized():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a float tensor over ranks (a copy; unchanged when alone)."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    return all_reduce_sum(values) / world


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (for decisions such as early stopping that must agree)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def copy_back(wrapped: nn.Module, target: nn.Module, strategy: Strategy, prefix: str = "") -> None:
    """The trained weights of ``wrapped`` (a wrapped copy of ``target``, or of a module holding it under
    ``prefix``) into ``target``, on every rank: gathered and broadcast under FSDP2, each rank's replica under DDP.
    Collective under FSDP2: every rank calls it."""
    state = broadcast_object(full_model_state(wrapped)) if strategy == "fsdp" else unwrap(wrapped).state_dict()
    target.load_state_dict({k.removeprefix(prefix): v for k, v in state.items()}, strict=True)


def main_only(fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0 alone, its (picklable) result handed to every rank; the others wait for it.

    For work only rank 0 does (sampling, evaluation, writing files). An exception on rank 0 is re-raised there
    and as ``RuntimeError`` on the other ranks, so no rank is left waiting at a later collective.
    """
    if not dist.is_initialized():
        return fn()
    result: Any = None
    failure: BaseException | None = None
    if dist.get_rank() == 0:
        try:
            result = fn()
        except BaseException as err:  # noqa: BLE001 - reported to every rank, then re-raised
            failure = err
    box = [(result, None if failure is None else f"{type(failure).__name__}: {failure}")]
    dist.broadcast_object_list(box, src=0)
    if failure is not None:
        raise failure
    result, message = box[0]
    if message is not None:
        raise RuntimeError(f"rank 0 failed: {message}")
    return result


# ----------------------------------------------------------------------------- full state dicts
def _options(full: bool = True, broadcast: bool = False) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=full, cpu_offload=True, broadcast_from_rank0=broadcast)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Gathered parameters and buffers on CPU, keyed by the unwrapped module's names.

    Collective under FSDP (every rank must call it); only rank 0 receives the tensors, others get {}.
    """
    if not dist.is_initialized():
        return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options())


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict held by rank 0 (others pass {}) into a possibly sharded model."""
    if not dist.is_initialized():
        unwrap(model).load_state_dict(state, strict=True)
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state, options=_options(broadcast=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Gathered optimizer state keyed by parameter names (world-size free); {} on ranks other than 0."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options())


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a full, name-keyed optimizer state at any world size (under torchrun rank 0's copy is broadcast,
    so other ranks may pass {} or the same dict)."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(
        model, optimizer, state, options=_options(broadcast=dist.is_initialized())
    )
