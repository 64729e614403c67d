"""Data-parallel training under ``torchrun``: one process per device, each with its own batch.

``torchrun --nproc_per_node=N`` starts N copies of the same command and tells each who it is
through environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``). We read them, join the process group (NCCL between GPUs, gloo on the CPU),
give each process its own slice of the data, and wrap the model in
``DistributedDataParallel``, which averages gradients across processes during ``backward``.

Batch statistics stay per process, as in the paper (a batch-norm layer sees the
``batch_size`` images of its own process), unless ``sync_bn`` turns torch's ``BatchNorm2d``
layers into ``SyncBatchNorm``. Only rank 0 shows progress and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Who this process is: ``rank`` of ``world_size``, on local device ``local_rank``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistContext:
    """The context ``torchrun`` describes in the environment (a single process without it)."""
    return DistContext(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def setup(device: str | torch.device | None = None) -> tuple[DistContext, torch.device]:
    """Join the process group if ``torchrun`` started us, and pick this process's device.

    ``device=None`` means ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU. Calling it
    again once the group exists is harmless.
    """
    ctx = context_from_env()
    if device is None:
        device = f"cuda:{ctx.local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ctx.local_rank)
    if ctx.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ctx, device


def teardown() -> None:
    """Leave the process group (call once at the end of a ``torchrun`` script)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(x: torch.Tensor, y: torch.Tensor, ctx: DistContext) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's slice of an evaluation split: every ``world_size``-th example from
    ``rank`` on. The slices are disjoint and cover the split. (Training batches are sharded
    inside ``DeviceLoader``, from a permutation shared by all processes.)"""
    return x[ctx.rank :: ctx.world_size], y[ctx.rank :: ctx.world_size]


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over processes, in place (no-op on a single process)."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(value: T, ctx: DistContext) -> T:
    """Rank 0's ``value`` on every process (no-op on a single process)."""
    if not ctx.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: T, ctx: DistContext) -> list[T]:
    """Every process's ``value``, in rank order."""
    if not ctx.enabled:
        return [value]
    values: list = [None] * ctx.world_size
    dist.all_gather_object(values, value)
    return values


def broadcast_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every process."""
    if ctx.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def wrap_model(
    model: nn.Module, ctx: DistContext, device: torch.device, sync_bn: bool
) -> nn.Module:
    """``DistributedDataParallel(model)`` on several processes, the model itself on one.

    ``sync_bn`` converts torch's ``BatchNorm2d`` layers (not dnbook's own norm layers, whose
    statistics stay per process) to ``SyncBatchNorm``, which needs CUDA.
    """
    if not ctx.enabled:
        return model
    if sync_bn:
        if device.type != "cuda":
            raise ValueError(f"sync_bn needs CUDA devices, got device {device}")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
