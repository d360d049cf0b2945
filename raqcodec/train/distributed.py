"""Data-parallel training with PyTorch's own engine: ``torchrun --nproc_per_node N raqcodec train ...``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; ``Cluster.from_environment`` joins the process
group (NCCL when training on CUDA, gloo on the CPU). What must agree across ranks is decided on rank 0 and
broadcast: the codebook size K~ of each step, whether to stop (the time limit), and the EMA codebook,
whose batch statistics are summed over all ranks first. Gradients are averaged by DistributedDataParallel.
A single process (no torchrun) gets a ``Cluster`` of one whose collectives do nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class Cluster:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environment(cls, device: torch.device) -> Cluster:
        """Join torchrun's process group if this process was started by it (WORLD_SIZE > 1)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return cls(
            rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0"))
        )

    # -- collectives (no-ops for a single process) ---------------------------------------------------
    def broadcast_int(self, value: int, device: torch.device) -> int:
        if not self.active:
            return value
        box = torch.tensor([value], dtype=torch.int64, device=device)
        dist.broadcast(box, src=0)
        return int(box.item())

    def sum_(self, *tensors: Tensor) -> None:
        if self.active:
            for t in tensors:
                dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def broadcast_(self, *tensors: Tensor) -> None:
        if self.active:
            for t in tensors:
                dist.broadcast(t, src=0)

    def gather_bytes(self, state: Tensor, device: torch.device) -> list[Tensor]:
        """Every rank's uint8 state (same length on all ranks, e.g. a generator state), in rank order."""
        if not self.active:
            return [state]
        local = state.to(device)
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local)
        return [p.cpu() for p in parts]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()
