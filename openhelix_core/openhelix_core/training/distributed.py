"""torch.distributed helpers: one code path for a single process and for torchrun.

``torchrun --nproc_per_node N -m openhelix_core.training ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and
starts a process group (NCCL on CUDA, gloo on CPU). Without them the run is a single process
and nothing is initialised.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """Rank information of this process (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    if requested == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def init_distributed(device: str = "auto", backend: str | None = None) -> DistributedContext:
    """Start the process group when launched by torchrun (or an equivalent environment)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistributedContext(0, 1, 0, resolved, False)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    initialized_here = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if resolved.type == "cuda" else "gloo"),
                                init_method="env://", rank=rank, world_size=world_size)
        initialized_here = True
    return DistributedContext(rank, world_size, local_rank, resolved, initialized_here)


def barrier(ctx: DistributedContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: dict[str, float], ctx: DistributedContext) -> dict[str, float]:
    """Average scalar metrics over ranks (identity in a single process)."""
    if not ctx.distributed or not values:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                          device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor /= ctx.world_size
    return {k: float(v) for k, v in zip(keys, tensor.tolist())}


def cleanup(ctx: DistributedContext) -> None:
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["DistributedContext", "all_reduce_mean", "barrier", "cleanup", "init_distributed", "resolve_device"]
