"""Everything a run needs before its first step, built once: :func:`setup`.

The run directory (and the checkpoint to resume from), the shard list and the step plan,
the model (restored from the checkpoint if any), the wrapped model (DDP or FSDP), the
optimiser built on the wrapped parameters and restored, the streaming loaders placed at
the checkpoint's reader positions. What a checkpoint restores is loaded piece by piece
(state.py), each at the moment it can be: the weights, RNG and progress before wrapping,
the optimiser after.

Names: ``raw_model`` is the :class:`~taxoclip.train.model.ContrastiveModel` itself (what
checkpoints hold and the export reads; nanoGPT's word), ``model`` what DDP / FSDP /
compile make of it (what runs forward), ``clip`` the bare open_clip model inside.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from taxoclip.errors import UsageError
from taxoclip.models import LoadedModel, create_model, load_model
from taxoclip.models.io import is_model_name

from .checkpoint import checkpoint_dir, find_latest, load_checkpoint
from .config import TrainConfig, write_params
from .data import Batch, Collate, ReaderPosition, ShardList, StreamingBatches, StreamSpec, unbatched
from .distributed import DistEnv, wrap_model
from .model import ContrastiveModel
from .optim import build_optimizer
from .runlog import METRICS_FILE, truncate_metrics
from .state import ModelWeights, OptimizerState, Progress, Readers, Stateful, TorchRNG
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
    raw_model: ContrastiveModel  # CLIP (+ replay projection): what checkpoints hold
    model: nn.Module  # ``raw_model`` as DDP / FSDP / compile wrap it: what runs forward
    optimizer: torch.optim.Optimizer
    loader: DataLoader  # the batches of steps start_step .. total_steps - 1
    replay_batches: Iterator[Batch] | None
    autocast: contextlib.AbstractContextManager
    progress: Progress
    readers: Readers  # the bio readers' positions; a checkpoint gathers every rank's
    replay_readers: Readers
    unsharded: nn.Module | None = None  # under FSDP: a whole CLIP for export and validation

    def checkpointed(self) -> tuple[Stateful, ...]:
        """The pieces a checkpoint is made of, each writing its own keys (state.py)."""
        fsdp = self.config.fsdp
        return (
            self.progress,
            ModelWeights(self.raw_model, fsdp),
            OptimizerState(self.raw_model, self.optimizer, fsdp),
            TorchRNG(),
            self.readers,
            self.replay_readers,
        )

    def checkpoint_facts(self) -> dict[str, Any]:
        """What a checkpoint records about the run beside its state: checked on resume."""
        return {
            "name": self.run.name,
            "config": self.config.to_json(),
            "layout": {
                "world_size": self.env.world_size,
                "fsdp": self.config.fsdp,
                "streams": self.readers.n_streams,
            },
        }


def setup(config: TrainConfig, env: DistEnv) -> TrainState:
    """Check and prepare the run, build (or restore) everything the loop needs."""
    run, checkpoint = prepare_run(config, env)
    n_streams = max(1, config.workers)
    if checkpoint is not None:
        check_same_layout(checkpoint, env, n_streams, config.fsdp, Path(config.out))
    torch.manual_seed(config.seed)
    shards = ShardList.resolve(config.data)
    replay_shards = ShardList.resolve(config.replay) if config.replay else None
    plan = make_plan(config, env, shards.n_samples, checkpoint)

    loaded = build_model(config, checkpoint)
    clip = loaded.model.to(env.device)
    if config.lock_image is not None:  # before the optimiser: it takes trainable params only
        clip.lock_image_tower(unlocked_groups=config.lock_image)
    if config.grad_checkpointing:
        clip.set_grad_checkpointing(True)
    raw_model = ContrastiveModel(clip, replay=replay_shards is not None).to(env.device)
    progress = Progress(plan.steps_per_epoch)
    readers = Readers("readers", env, n_streams)
    replay_readers = Readers("replay_readers", env, n_streams, active=replay_shards is not None)
    if checkpoint is not None:  # the whole weights, before any sharding
        for piece in (ModelWeights(raw_model), TorchRNG(), progress, readers, replay_readers):
            piece.load_state_dict(checkpoint)
    unsharded = copy.deepcopy(clip).cpu() if config.fsdp else None
    model = wrap_model(raw_model, env, config.fsdp, config.compile)
    # After wrapping: FSDP replaces the parameters with sharded ones.
    optimizer = build_optimizer(raw_model, config.lr, config.weight_decay, config.betas, config.eps)
    if checkpoint is not None:
        OptimizerState(raw_model, optimizer, config.fsdp).load_state_dict(checkpoint)

    if env.is_main:
        write_params(run / "params.json", config, _run_facts(plan, env, loaded, n_streams))
        truncate_metrics(run / METRICS_FILE, plan.start_step)
    loader, replay_batches = _loaders(
        config, env, loaded, shards, replay_shards, plan, readers.loaded, replay_readers.loaded
    )
    autocast = (
        torch.autocast(env.device.type, dtype=torch.bfloat16)
        if config.precision == "bf16"
        else contextlib.nullcontext()
    )
    return TrainState(
        config=config,
        env=env,
        run=run,
        plan=plan,
        loaded=loaded,
        raw_model=raw_model,
        model=model,
        optimizer=optimizer,
        loader=loader,
        replay_batches=replay_batches,
        autocast=autocast,
        progress=progress,
        readers=readers,
        replay_readers=replay_readers,
        unsharded=unsharded,
    )


def check_same_layout(
    checkpoint: dict[str, Any], env: DistEnv, n_streams: int, fsdp: bool, run: Path
) -> None:
    """The data order depends on processes × readers per process, so a resume must keep
    them (and the optimiser layout depends on FSDP): refuse with the difference."""
    layout = checkpoint.get("layout") or {}
    then = (layout.get("world_size"), layout.get("streams"), layout.get("fsdp"))
    now = (env.world_size, n_streams, fsdp)
    if then == now:
        return
    differences = [
        f"{name}: {a} in the checkpoint, {b} now"
        for name, a, b in zip(
            ("processes", "readers per process (--workers)", "--fsdp"), then, now, strict=True
        )
        if a != b
    ]
    raise UsageError(
        f"cannot resume {run}: the run was started with another layout ("
        + "; ".join(differences)
        + "); the data order depends on processes × DataLoader workers, so resume it with "
        "the same torchrun --nproc_per_node, --workers and --fsdp"
    )


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

    A resumed run builds the same starting model; :func:`setup` then loads its weights.
    """
    if (
        config.pretrained is None
        and is_model_name(config.model)
        and not Path(config.model).exists()
    ):
        return create_model(config.model, seed=config.seed)
    return load_model(config.model, pretrained=config.pretrained)


def _run_facts(plan: Plan, env: DistEnv, loaded: LoadedModel, n_streams: int) -> dict[str, Any]:
    """What params.json records beside the config."""
    return {
        "world_size": env.world_size,
        "readers": env.world_size * n_streams,
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
    shards: ShardList,
    replay_shards: ShardList | None,
    plan: Plan,
    positions: list[ReaderPosition | None] | None,
    replay_positions: list[ReaderPosition | None] | None,
) -> tuple[DataLoader, Iterator[Batch] | None]:
    """The bio loader, and an iterator over the replay loader: the loop takes one replay
    batch per bio batch with ``next``; both stream the same steps."""
    transform = train_transform(loaded, config.squash)

    def loader(
        source: ShardList,
        text_type: str | None,
        batch: int,
        seed: int,
        positions: list[ReaderPosition | None] | None,
    ) -> DataLoader:
        spec = StreamSpec(
            shards=source,
            seed=seed,
            text_type=text_type,
            batch_size=batch,
            rank=env.rank,
            world_size=env.world_size,
            n_streams=max(1, config.workers),
            start_step=plan.start_step,
            total_steps=plan.total_steps,
            buffer=config.shuffle_buffer,
        )
        dataset = StreamingBatches(spec, transform, Collate(loaded.tokenizer), positions)
        return DataLoader(
            dataset,
            batch_size=None,
            num_workers=config.workers,
            collate_fn=unbatched,
            persistent_workers=False,
            prefetch_factor=4 if config.workers else None,
        )

    bio = loader(shards, config.text_type, config.batch_size, config.seed, positions)
    if replay_shards is None:
        return bio, None
    replay_batch = config.resolved_replay_batch()
    replay_seed = config.seed + REPLAY_SEED_OFFSET
    replay = loader(replay_shards, None, replay_batch, replay_seed, replay_positions)
    return bio, iter(replay)


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
