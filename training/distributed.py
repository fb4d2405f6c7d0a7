"""Multi-process training (``torchrun``; gloo on CPU, nccl on CUDA) and device selection.

Each rank takes its shard of the epoch permutation (``DistributedSampler`` semantics, see
:mod:`training.batches`); after every backward pass :func:`average_gradients` replaces each
gradient by its mean over ranks -- what ``DistributedDataParallel`` does, but for *any* set of
parameters (the model and a recipe's auxiliary networks alike) and without wrapping the model,
so recipes call the model's own methods directly.  Only rank 0 writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from training.config import ConfigError

__all__ = ["Dist", "init_distributed", "pick_device", "average_gradients", "barrier", "max_weight_difference"]


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as tdist
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend)
    return Dist(rank=tdist.get_rank(), world=tdist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but torch sees no CUDA GPU; use device='cpu' or 'auto'")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if name != "cpu":
        raise ConfigError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


def average_gradients(params: list[nn.Parameter], dist: Dist) -> None:
    """All-reduce the gradients of ``params`` (those that require grad) to their mean over ranks.

    One flat buffer per call; a parameter without a gradient on this rank contributes zeros, so
    every rank takes part in the same collective whatever its batch touched.
    """
    if dist.world <= 1:
        return
    import torch.distributed as tdist
    live = [p for p in params if p.requires_grad]
    if not live:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in live])
    tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
    flat /= dist.world
    pos = 0
    for p in live:
        n = p.numel()
        p.grad = flat[pos:pos + n].view_as(p).clone()
        pos += n


def barrier(dist: Dist) -> None:
    if dist.world > 1:
        import torch.distributed as tdist
        tdist.barrier()


@torch.no_grad()
def max_weight_difference(params: list[nn.Parameter], dist: Dist) -> float:
    """Largest weight difference between any rank and rank 0 (0.0 when the ranks stayed in sync)."""
    import torch.distributed as tdist
    flat = torch.cat([p.detach().reshape(-1).float() for p in params])
    ref = flat.clone()
    tdist.broadcast(ref, src=0)
    diff = (flat - ref).abs().max().reshape(1)
    tdist.all_reduce(diff, op=tdist.ReduceOp.MAX)
    return float(diff)
