"""Where the run executes: the device, and data-parallel set-up under `torchrun`.

`torchrun --nproc-per-node N -m stforecast train ...` sets `WORLD_SIZE`, `RANK` and `LOCAL_RANK`
(and the rendezvous address); the trainer then joins a process group (NCCL on CUDA, gloo
otherwise), wraps the model in DDP, and gives each rank `batch_size // world_size` samples of
every global batch. Only rank 0 writes files and reports progress. A caller that already set up
`torch.distributed` keeps its group: the trainer uses it and leaves it open. A group the trainer
made stays open until the process exits (an `atexit` hook destroys it), because under torchrun a
worker cannot reliably create a second default group after destroying the first: a script that
calls `train` twice reuses the first group.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from stforecast.devices import resolve_device
from stforecast.errors import ConfigError

__all__ = ["Context", "setup"]


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer") from None


@dataclass
class Context:
    """This process's place in the run; all collectives are no-ops for a single process."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) in place and return the tensor."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def agree(self, flag: bool, device: torch.device) -> bool:
        """Rank 0's decision, on every rank (time limits differ between processes)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1 if flag else 0], device=device)
        dist.broadcast(t, src=0)
        return bool(t.item())


def setup(device_name: str) -> tuple[Context, torch.device]:
    """Join the process group when launched by torchrun, and pick this rank's device."""
    if dist.is_available() and dist.is_initialized():
        ctx = Context(dist.get_world_size(), dist.get_rank(), _env_int("LOCAL_RANK", 0))
        return ctx, resolve_device(device_name, ctx.local_rank)
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    device = resolve_device(device_name, local)
    if world <= 1:
        return Context(), device
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(
        backend, rank=rank, world_size=world, timeout=dt.timedelta(minutes=30), **kwargs
    )
    atexit.register(_destroy)
    return Context(world, rank, local), device


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
