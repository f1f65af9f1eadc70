"""Multi-process (DDP) plumbing for the trainer: who am I, set up the group, shard, reduce.

A run is distributed when it is started by ``torchrun`` (or anything that sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``), e.g.::

    torchrun --nproc_per_node=2 -m mixlab.lab.cli train --dataset digits --method fmix

`init_distributed` then joins the process group with ``gloo`` on CPU and ``nccl`` on CUDA. Without
those variables everything here degrades to a single process (rank 0 of 1) and does nothing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the group. ``world_size == 1`` means not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes files and shows progress."""
        return self.rank == 0


def dist_info_from_env() -> DistInfo:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (as set by torchrun); defaults: 0, 1, 0."""
    try:
        rank = int(os.environ.get("RANK", 0))
        world = int(os.environ.get("WORLD_SIZE", 1))
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError as e:
        raise ValueError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers: {e}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"expected 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def init_distributed(device_type: str) -> tuple[DistInfo, bool]:
    """Join the process group described by the environment, if any.

    Args:
        device_type: ``"cpu"`` (gloo backend) or ``"cuda"`` (nccl backend).

    Returns:
        ``(info, created)``: ``created`` is True when this call initialised the group, in which
        case the caller should `shutdown_distributed` when done.
    """
    info = dist_info_from_env()
    if not info.enabled:
        return info, False
    if torch_dist.is_initialized():
        if torch_dist.get_world_size() != info.world_size:
            raise RuntimeError(
                f"process group has world size {torch_dist.get_world_size()}, "
                f"environment says WORLD_SIZE={info.world_size}"
            )
        return info, False
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    torch_dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return info, True


def shutdown_distributed() -> None:
    """Leave the process group (after a barrier, so no rank exits while others still talk)."""
    if torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` over all ranks (returns a new tensor; identity when not distributed)."""
    out = t.clone()
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.all_reduce(out, op=torch_dist.ReduceOp.SUM)
    return out


def _active() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def _coalesced(tensors: list[Tensor], op: Callable[[Tensor], None]) -> None:
    """Apply the in-place collective ``op`` to ``tensors`` as one flat tensor per dtype/device
    (one call each, not one per tensor), and copy the results back."""
    groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    for group in groups.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        op(flat)
        for t, chunk in zip(group, flat.split([t.numel() for t in group]), strict=True):
            t.copy_(chunk.view_as(t))


def average_gradients(params: Iterable[Tensor]) -> None:
    """Average ``p.grad`` over all ranks, in place, for parameters the DDP wrapper does not own
    (a method's own trainable block). No-op when not distributed.

    Every rank must pass the same parameters in the same order; a parameter without a gradient
    gets zeros first, so the collective has the same shape on every rank.
    """
    if not _active():
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    world = torch_dist.get_world_size()

    def mean(flat: Tensor) -> None:
        torch_dist.all_reduce(flat, op=torch_dist.ReduceOp.SUM)
        flat.div_(world)

    _coalesced([p.grad for p in params], mean)


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Give every rank ``src``'s buffers of ``module`` (e.g. batch-norm statistics), as DDP does
    for the model it wraps. No-op when not distributed."""
    if not _active():
        return
    _coalesced(list(module.buffers()), lambda flat: torch_dist.broadcast(flat, src=src))


def barrier() -> None:
    """Wait for all ranks (no-op when not distributed)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous ``[start, end)`` slice of ``range(n)`` owned by ``rank``; slices cover ``n`` once.

    Sizes differ by at most one; used for evaluation, where every sample must count exactly once.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return n * rank // world_size, n * (rank + 1) // world_size


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed derived from ``seed`` and ``keys`` (e.g. ``("mix", rank)``); stable.

    Independent streams (model init, data order, mixing per rank) come from one user seed without
    the overlaps that ``seed + rank`` style offsets produce.
    """
    text = repr((int(seed), *keys)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "average_gradients",
    "barrier",
    "broadcast_buffers",
    "derive_seed",
    "dist_info_from_env",
    "init_distributed",
    "shard_range",
    "shutdown_distributed",
]
