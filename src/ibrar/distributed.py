"""Multi-process training on PyTorch's own engine (torchrun + DistributedDataParallel).

`torchrun --nproc_per_node=N -m ibrar train ...` sets RANK / WORLD_SIZE / LOCAL_RANK; everything here is a
no-op in a single process, so the trainer calls it unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ibrar.host_sync import sync_allowed

_host_group: dist.ProcessGroup | None = None  # gloo group for host-side collectives when the default is NCCL


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_as_main() -> bool:
    """Rank 0 of a torchrun launch, or a plain process: the one that writes the run folder, evaluates and prints.
    Read from the environment, so it holds before (and after) the process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (gloo on the CPU, NCCL on CUDA); single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    global _host_group
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    # Small host-side agreements (the stop flag) go over gloo, so that they never wait for the GPU.
    _host_group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any rank: a host-side (gloo) collective, no GPU involved."""
    if not is_active():
        return flag
    votes = torch.tensor([float(flag)])
    dist.all_reduce(votes, op=dist.ReduceOp.SUM, group=_host_group)
    with sync_allowed():  # a host tensor
        return bool(votes[0] > 0)


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place), identity in a single process."""
    if is_active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (in place), identity in a single process."""
    if is_active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(dist.get_world_size())
    return t


def barrier() -> None:
    if is_active():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group, all ranks together: on torch 2.4, a gloo rank that destroys its group while
    another is still on its way there can hang (2 of 6 runs of the stop-vote test; 0 of 8 with the barrier)."""
    if dist.is_available() and dist.is_initialized():
        barrier()
        dist.destroy_process_group()


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics): DDP treats rank 0's as the true ones, but
    each rank's last forward of an epoch updates its own copy."""
    if is_active():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
