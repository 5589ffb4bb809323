"""One process or torchrun: the rank's place, the process group, the model's wrapping."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from taxoclip.errors import InputError, UsageError


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


def gather_objects(value: Any, env: DistEnv) -> list[Any]:
    """``value`` from every rank, in rank order (a collective: every rank must call it)."""
    if not env.distributed:
        return [value]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, value)
    return out


def wrap_model(module: nn.Module, env: DistEnv, fsdp: bool, compile: bool) -> nn.Module:
    """What runs forward: ``module`` under FSDP or DDP (several processes), compiled if asked.

    Under DDP (and in one process) checkpoints and the exported model read ``module``
    itself; under FSDP its parameters are shards, so they read :func:`full_model_state`.
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


_SCALARS = ("logit_scale", "logit_bias")


def _wrap_fsdp(module: nn.Module, env: DistEnv) -> nn.Module:
    """FSDP2 (``fully_shard``): NCCL on CUDA, gloo on CPU (tested under torchrun on CPU)."""
    from torch.distributed.fsdp import fully_shard

    if not env.distributed:
        raise UsageError(
            "--fsdp shards the model over processes: launch with torchrun "
            "--nproc_per_node N (N >= 2)"
        )
    clip = module.clip
    blocks = [
        block
        for tower in (getattr(clip, "visual", None), clip)
        for block in getattr(getattr(tower, "transformer", None), "resblocks", [])
    ]
    if not blocks:
        raise UsageError(f"--fsdp needs transformer towers; {type(clip).__name__} has none")
    # fully_shard refuses 0-d parameters: the logit scale (and bias) become shape (1,)
    # while sharded; full_model_state gives them back their open_clip shape.
    for name in _SCALARS:
        param = getattr(clip, name, None)
        if isinstance(param, nn.Parameter) and param.dim() == 0:
            setattr(clip, name, nn.Parameter(param.detach().reshape(1)))
    # One shard unit per residual block of both towers, then the rest (embeddings,
    # projections, logit scale, the replay projection) in the root unit.
    for block in blocks:
        fully_shard(block)
    fully_shard(module)
    return module


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(module: nn.Module, fsdp: bool) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict of ``module`` on CPU. Under FSDP a collective:
    every rank must call it (each gets the whole tensors)."""
    if not fsdp:
        return {k: v.detach() for k, v in module.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(module, options=_options())
    for key, value in state.items():
        if key.rsplit(".", 1)[-1] in _SCALARS and value.shape == (1,):
            state[key] = value.reshape(())
    return state


def optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool) -> dict:
    """The optimiser state to checkpoint: open_clip's layout, or under FSDP the whole
    state keyed by parameter name (a collective)."""
    if not fsdp:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(module, optimizer, options=_options())


def load_optimizer_state(
    module: nn.Module, optimizer: torch.optim.Optimizer, checkpoint: dict[str, Any], fsdp: bool
) -> None:
    """Restore what :func:`optimizer_state` saved (after wrapping)."""
    try:
        if not fsdp:
            optimizer.load_state_dict(checkpoint["optimizer"])
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(
            module,
            optimizer,
            checkpoint["optimizer"],
            options=StateDictOptions(full_state_dict=True),
        )
    except (RuntimeError, KeyError, ValueError) as exc:
        raise InputError(f"checkpoint optimiser state does not fit this model: {exc}") from exc


def local_value(tensor: torch.Tensor) -> torch.Tensor:
    """A replicated scalar as a plain tensor (under FSDP parameters are DTensors)."""
    full = getattr(tensor, "full_tensor", None)
    return full() if full is not None else tensor
