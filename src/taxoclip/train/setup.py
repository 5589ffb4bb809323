"""Everything a run needs before its first step, built once: :func:`setup`.

The run directory (and the checkpoint to resume from), the data index and the step plan,
the model and optimiser (restored from the checkpoint if any), the wrapped model, the
loaders.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from taxoclip.errors import InputError, UsageError
from taxoclip.models import LoadedModel, create_model, load_model
from taxoclip.models.io import is_model_name

from .checkpoint import checkpoint_dir, find_latest, load_checkpoint
from .config import TrainConfig, write_params
from .data import INDEX_SUFFIXES, Collate, ShardIndex, ShardTrainDataset, StepBatchSampler
from .distributed import DistEnv, wrap_model
from .model import ContrastiveModel
from .optim import build_optimizer
from .runlog import METRICS_FILE, truncate_metrics
from .transform import RandomResizedCropTransform

log = logging.getLogger(__name__)

#: Offsets the replay loader's seed so its draws are independent of the bio loader's.
REPLAY_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class Plan:
    """How many steps, and where this process starts."""

    n_train: int
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    start_step: int


@dataclass
class TrainState:
    """What the loop reads and updates; built by :func:`setup`."""

    config: TrainConfig
    env: DistEnv
    run: Path
    plan: Plan
    loaded: LoadedModel  # the CLIP with its tokenizer and preprocessing
    module: ContrastiveModel  # CLIP (+ replay projection): what checkpoints hold
    model: nn.Module  # ``module`` as DDP / FSDP / compile wrap it: what runs forward
    optimizer: torch.optim.Optimizer
    loader: DataLoader  # the batches of steps start_step .. total_steps - 1
    replay_batches: Iterator[dict[str, Any]] | None
    autocast: contextlib.AbstractContextManager
    counters: dict[str, int]  # samples seen, corrupt samples substituted


def setup(config: TrainConfig, env: DistEnv) -> TrainState:
    """Check and prepare the run, build (or restore) everything the loop needs."""
    run, checkpoint = prepare_run(config, env)
    torch.manual_seed(config.seed)
    index = ShardIndex.build(config.data, INDEX_SUFFIXES)
    replay_index = ShardIndex.build(config.replay, INDEX_SUFFIXES) if config.replay else None
    plan = make_plan(config, env, len(index), checkpoint)

    loaded = build_model(config, checkpoint)
    clip = loaded.model.to(env.device)
    if config.grad_checkpointing:
        clip.set_grad_checkpointing(True)
    module = ContrastiveModel(clip, replay=replay_index is not None).to(env.device)
    optimizer = build_optimizer(module, config.lr, config.weight_decay, config.betas, config.eps)
    counters = {"n_substituted": 0, "samples": 0}
    if checkpoint is not None:
        counters.update(restore(checkpoint, module, optimizer))

    if env.is_main:
        write_params(run / "params.json", config, _run_facts(plan, env, loaded))
        truncate_metrics(run / METRICS_FILE, plan.start_step)
    model = wrap_model(module, env, config.fsdp, config.compile)
    loader, replay_batches = _loaders(config, env, loaded, index, replay_index, plan)
    autocast = (
        torch.autocast(env.device.type, dtype=torch.bfloat16)
        if config.precision == "bf16"
        else contextlib.nullcontext()
    )
    return TrainState(
        config=config, env=env, run=run, plan=plan, loaded=loaded, module=module, model=model,
        optimizer=optimizer, loader=loader, replay_batches=replay_batches, autocast=autocast,
        counters=counters,
    )  # fmt: skip


def prepare_run(config: TrainConfig, env: DistEnv) -> tuple[Path, dict[str, Any] | None]:
    """Check the run dir; load the checkpoint to resume from, if any."""
    run = Path(config.out)
    checkpoint = None
    if config.resume:
        path = find_latest(run) if config.resume == "latest" else Path(config.resume)
        if path is None:
            log.info("no checkpoint in %s yet: starting from step 0", run)
        else:
            checkpoint = load_checkpoint(path)
            _check_same_trajectory(config, checkpoint, path)
            log.info("resuming from %s at step %d", path, checkpoint["step"])
    elif checkpoint_dir(run).exists() and any(checkpoint_dir(run).iterdir()):
        raise UsageError(
            f"run directory {run} already has checkpoints; pass --resume latest to continue "
            "it, or choose a new --out"
        )
    if env.is_main:
        try:
            run.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot write run directory {run}: {exc.strerror or exc}") from exc
    return run, checkpoint


def _check_same_trajectory(config: TrainConfig, checkpoint: dict[str, Any], path: Path) -> None:
    differences = config.trajectory_differences(TrainConfig.from_json(checkpoint["config"]))
    if differences:
        raise UsageError(
            f"cannot resume {path}: the run was started with other settings ("
            + "; ".join(differences)
            + "); rerun the original command with --resume"
        )


def make_plan(
    config: TrainConfig, env: DistEnv, n_train: int, checkpoint: dict[str, Any] | None
) -> Plan:
    global_batch = config.batch_size * env.world_size
    steps_per_epoch = n_train // global_batch
    if steps_per_epoch < 1:
        raise UsageError(
            f"{n_train} training samples cannot fill one global batch of {global_batch} "
            f"({config.batch_size} × {env.world_size} processes); lower --batch-size"
        )
    return Plan(
        n_train=n_train,
        global_batch=global_batch,
        steps_per_epoch=steps_per_epoch,
        total_steps=config.steps or config.epochs * steps_per_epoch,
        start_step=int(checkpoint["step"]) if checkpoint is not None else 0,
    )


def build_model(config: TrainConfig, checkpoint: dict[str, Any] | None = None) -> LoadedModel:
    """Model from scratch (seeded), a pretrained tag/file, hf-hub:, a model folder or run.

    A resumed run builds the same starting model; :func:`restore` then loads its weights.
    """
    if (
        config.pretrained is None
        and is_model_name(config.model)
        and not Path(config.model).exists()
    ):
        return create_model(config.model, seed=config.seed)
    return load_model(config.model, pretrained=config.pretrained)


def restore(
    checkpoint: dict[str, Any], module: ContrastiveModel, optimizer: torch.optim.Optimizer
) -> dict[str, int]:
    """Load weights, optimiser and global RNG state; returns the checkpoint's counters."""
    try:
        module.clip.load_state_dict(checkpoint["state_dict"])
        if module.replay_proj is not None:
            module.replay_proj.data.copy_(checkpoint["replay_proj"])
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise InputError(f"checkpoint does not fit this model: {exc}") from exc
    torch.set_rng_state(checkpoint["torch_rng"])
    return dict(checkpoint.get("counters", {}))


def _run_facts(plan: Plan, env: DistEnv, loaded: LoadedModel) -> dict[str, Any]:
    """What params.json records beside the config."""
    return {
        "world_size": env.world_size,
        "global_batch": plan.global_batch,
        "steps_per_epoch": plan.steps_per_epoch,
        "total_steps": plan.total_steps,
        "n_train_samples": plan.n_train,
        "model_cfg": loaded.model_cfg,
    }


def _loaders(
    config: TrainConfig,
    env: DistEnv,
    loaded: LoadedModel,
    index: ShardIndex,
    replay_index: ShardIndex | None,
    plan: Plan,
) -> tuple[DataLoader, Iterator[dict[str, Any]] | None]:
    """The bio loader, and an iterator over the replay loader: the loop takes one replay
    batch per bio batch with ``next``; both samplers run the same steps."""
    transform = train_transform(loaded, config.squash)

    def loader(source: ShardIndex, text_type: str | None, batch: int, seed: int) -> DataLoader:
        return _make_loader(
            source, transform, loaded.tokenizer, text_type, config.workers, env, batch,
            plan.total_steps, plan.start_step, seed,
        )  # fmt: skip

    bio = loader(index, config.text_type, config.batch_size, config.seed)
    if replay_index is None:
        return bio, None
    replay_batch = config.resolved_replay_batch()
    return bio, iter(loader(replay_index, None, replay_batch, config.seed + REPLAY_SEED_OFFSET))


def _make_loader(
    index: ShardIndex,
    transform,
    tokenizer,
    text_type: str | None,
    workers: int,
    env: DistEnv,
    batch: int,
    total_steps: int,
    start_step: int,
    seed: int,
) -> DataLoader:
    sampler = StepBatchSampler(
        len(index), batch * env.world_size, total_steps, seed, env.rank, env.world_size, start_step
    )
    dataset = ShardTrainDataset(index, transform, seed, text_type)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=Collate(tokenizer),
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )


def train_transform(loaded: LoadedModel, squash: bool) -> RandomResizedCropTransform:
    """RandomResizedCrop with scale (0.9, 1.0) as the recipe; squash first if asked."""
    cfg = loaded.preprocess_cfg
    return RandomResizedCropTransform(
        loaded.image_size,
        scale=(0.9, 1.0),
        mean=cfg.get("mean"),
        std=cfg.get("std"),
        interpolation=cfg.get("interpolation"),
        squash=squash,
    )
