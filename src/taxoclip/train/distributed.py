"""One process or torchrun: the rank's place, the process group, the model's wrapping."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from taxoclip.errors import UsageError


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistEnv:
    """Read torchrun's environment; gloo on CPU, nccl on CUDA."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda (got {device})")
    if use_cuda and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA device is visible")
    target = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(target)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=target)


def close_distributed(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def mean_over_ranks(value: torch.Tensor, env: DistEnv) -> float:
    """The mean of a scalar over ranks (a collective: every rank must call it)."""
    value = value.detach()
    if env.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= env.world_size
    return float(value)


def wrap_model(module: nn.Module, env: DistEnv, fsdp: bool, compile: bool) -> nn.Module:
    """What runs forward: ``module`` under FSDP or DDP (several processes), compiled if asked.

    Checkpoints and the exported model read ``module`` itself, never the wrapper.
    """
    wrapped = module
    if fsdp:
        wrapped = _wrap_fsdp(module, env)
    elif env.distributed:
        wrapped = nn.parallel.DistributedDataParallel(
            module, device_ids=[env.device.index] if env.device.type == "cuda" else None
        )
    if compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def _wrap_fsdp(module: nn.Module, env: DistEnv) -> nn.Module:
    if env.device.type != "cuda":
        raise UsageError("--fsdp needs CUDA devices; on CPU use plain DDP (the default)")
    from torch.distributed.fsdp import fully_shard

    # One shard unit per residual block of both towers, then the rest (embeddings,
    # projections, logit scale) in the root unit.
    for block in list(module.clip.visual.transformer.resblocks) + list(
        module.clip.transformer.resblocks
    ):
        fully_shard(block)
    fully_shard(module)
    return module
