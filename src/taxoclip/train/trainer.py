"""The training loop: BioCLIP 2's recipe on any open_clip model, one process or torchrun.

One function, :func:`train`, does the whole run: set up (distributed, model, optimiser,
data), resume if asked, loop over steps, log, checkpoint, export ``RUN/model/``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from taxoclip.errors import InputError, TaxoclipError, UsageError
from taxoclip.models import LoadedModel, create_model, load_model, save_model
from taxoclip.models.io import is_model_name

from .checkpoint import checkpoint_dir, find_latest, load_checkpoint, save_checkpoint
from .config import LOGIT_SCALE_MAX, TrainConfig, bioclip2_recipe, write_params
from .data import (
    INDEX_SUFFIXES,
    Collate,
    ShardIndex,
    ShardTrainDataset,
    StepBatchSampler,
    text_type_for_step,
)
from .loss import clip_loss
from .model import ContrastiveModel
from .optim import build_optimizer, cosine_lr
from .transform import RandomResizedCropTransform

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class TrainingError(TaxoclipError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


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


@dataclass
class TrainResult:
    run: Path
    steps: int
    final_loss: float
    model_dir: Path
    samples_per_second: float
    n_substituted: int
    val_top1: float | None = None


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


def _mean_over_ranks(value: torch.Tensor, env: DistEnv) -> float:
    value = value.detach()
    if env.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= env.world_size
    return float(value)


def _prepare_run(config: TrainConfig, env: DistEnv) -> tuple[Path, dict[str, Any] | None]:
    """Check the run dir; load the checkpoint to resume from, if any."""
    run = Path(config.out)
    checkpoint = None
    if config.resume:
        path = find_latest(run) if config.resume == "latest" else Path(config.resume)
        if path is None:
            log.info("no checkpoint in %s yet: starting from step 0", run)
        else:
            checkpoint = load_checkpoint(path)
            stored = TrainConfig.from_json(checkpoint["config"])
            differences = config.trajectory_differences(stored)
            if differences:
                raise UsageError(
                    f"cannot resume {path}: the run was started with other settings ("
                    + "; ".join(differences)
                    + "); rerun the original command with --resume"
                )
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


def _build_model(config: TrainConfig, checkpoint: dict[str, Any] | None) -> LoadedModel:
    """Model from scratch (seeded), a pretrained tag/file, hf-hub:, a model folder or run."""
    if (
        config.pretrained is None
        and is_model_name(config.model)
        and not Path(config.model).exists()
    ):
        return create_model(config.model, seed=config.seed)
    return load_model(config.model, pretrained=config.pretrained)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from, so none is written twice."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", -1) < step
    ]
    path.write_text("".join(line + "\n" for line in kept))


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


def _train_transform(loaded: LoadedModel, squash: bool) -> RandomResizedCropTransform:
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


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) training as ``config`` says; returns where things landed."""
    if config.recipe == "bioclip2":
        config = bioclip2_recipe(config)
    config.validate()
    env = init_distributed(config.device)
    try:
        return _train(config, env)
    finally:
        if env.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, env: DistEnv) -> TrainResult:
    run, checkpoint = _prepare_run(config, env)
    torch.manual_seed(config.seed)

    index = ShardIndex.build(config.data, INDEX_SUFFIXES)
    replay_index = ShardIndex.build(config.replay, INDEX_SUFFIXES) if config.replay else None
    global_batch = config.batch_size * env.world_size
    steps_per_epoch = len(index) // global_batch
    if steps_per_epoch < 1:
        raise UsageError(
            f"{len(index)} training samples cannot fill one global batch of {global_batch} "
            f"({config.batch_size} × {env.world_size} processes); lower --batch-size"
        )
    total_steps = config.steps or config.epochs * steps_per_epoch

    loaded = _build_model(config, checkpoint)
    clip = loaded.model.to(env.device)
    if config.grad_checkpointing:
        clip.set_grad_checkpointing(True)
    module = ContrastiveModel(clip, replay=replay_index is not None).to(env.device)
    optimizer = build_optimizer(module, config.lr, config.weight_decay, config.betas, config.eps)
    start_step, counters = 0, {"n_substituted": 0, "samples": 0}
    if checkpoint is not None:
        try:
            clip.load_state_dict(checkpoint["state_dict"])
            if module.replay_proj is not None:
                module.replay_proj.data.copy_(checkpoint["replay_proj"])
            optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise InputError(f"checkpoint does not fit this model: {exc}") from exc
        start_step = int(checkpoint["step"])
        counters.update(checkpoint.get("counters", {}))
        torch.set_rng_state(checkpoint["torch_rng"])

    if env.is_main:
        write_params(
            run / "params.json",
            config,
            {
                "world_size": env.world_size,
                "global_batch": global_batch,
                "steps_per_epoch": steps_per_epoch,
                "total_steps": total_steps,
                "n_train_samples": len(index),
                "model_cfg": loaded.model_cfg,
            },
        )
        _truncate_metrics(run / METRICS_FILE, start_step)

    wrapped: torch.nn.Module = module
    if config.fsdp:
        wrapped = _wrap_fsdp(module, env)
    elif env.distributed:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[env.device.index] if env.device.type == "cuda" else None
        )
    if config.compile:
        wrapped = torch.compile(wrapped)

    transform = _train_transform(loaded, config.squash)
    loader = _make_loader(
        index, transform, loaded.tokenizer, config.text_type, config.workers, env,
        config.batch_size, total_steps, start_step, config.seed,
    )  # fmt: skip
    replay_batches = None
    if replay_index is not None:
        replay_batch = config.resolved_replay_batch()
        replay_batches = iter(
            _make_loader(
                replay_index,
                transform,
                loaded.tokenizer,
                None,
                config.workers,
                env,
                replay_batch,
                total_steps,
                start_step,
                config.seed + 1_000_003,
            )  # fmt: skip
        )

    writer = _tensorboard(run) if env.is_main else None
    metrics = (run / METRICS_FILE).open("a") if env.is_main else None
    autocast = (
        torch.autocast(env.device.type, dtype=torch.bfloat16)
        if config.precision == "bf16"
        else contextlib.nullcontext()
    )
    bar = tqdm(
        total=total_steps,
        initial=start_step,
        unit="step",
        desc="train",
        disable=not (env.is_main and config.progress),
        dynamic_ncols=True,
    )
    last_loss, throughput, window_start, window_samples = math.nan, 0.0, time.perf_counter(), 0
    module.train()
    step = start_step
    try:
        for batch in loader:
            step = batch["step"]
            lr = cosine_lr(step, config.lr, config.warmup, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = batch["images"].to(env.device, non_blocking=True)
            tokens = batch["tokens"].to(env.device, non_blocking=True)
            ids = batch["caption_ids"].to(env.device) if config.caption_positives else None
            replay = next(replay_batches) if replay_batches is not None else None
            with autocast:
                if replay is None:
                    out = wrapped(images, tokens)
                else:
                    out = wrapped(
                        images,
                        tokens,
                        replay["images"].to(env.device, non_blocking=True),
                        replay["tokens"].to(env.device, non_blocking=True),
                    )
                loss = clip_loss(
                    out["image"].float(), out["text"].float(), out["logit_scale"].float(),
                    ids, distributed=env.distributed,
                )  # fmt: skip
                if replay is not None:
                    loss = loss + clip_loss(
                        out["replay_image"].float(), out["replay_text"].float(),
                        out["logit_scale"].float(), None, distributed=env.distributed,
                    )  # fmt: skip
            if not torch.isfinite(loss):
                latest = find_latest(run)
                raise TrainingError(
                    f"loss became {float(loss.detach())} at step {step}; stopping. The last good "
                    f"checkpoint is {latest or 'none (no checkpoint was written yet)'}; try a "
                    "lower --lr, a longer --warmup, or --precision fp32"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = None
            if config.grad_clip:
                grad_norm = torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
            optimizer.step()
            with torch.no_grad():
                clip.logit_scale.clamp_(0, LOGIT_SCALE_MAX)

            n_samples = images.shape[0] * env.world_size
            counters["samples"] += n_samples
            counters["n_substituted"] += batch["n_substituted"]
            window_samples += n_samples
            last_loss = _mean_over_ranks(loss, env)
            done = step + 1
            bar.update(1)
            if done % config.log_every == 0 or done == total_steps or done == start_step + 1:
                elapsed = time.perf_counter() - window_start
                throughput = window_samples / elapsed if elapsed > 0 else 0.0
                window_start, window_samples = time.perf_counter(), 0
                record = {
                    "step": step,
                    "epoch": step / steps_per_epoch,
                    "loss": last_loss,
                    "lr": lr,
                    "logit_scale": float(clip.logit_scale.detach().exp()),
                    "text_type": text_type_for_step(config.seed, step, config.text_type),
                    "samples_per_second": throughput,
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "n_substituted": counters["n_substituted"],
                }
                if env.is_main:
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                    for key in ("loss", "lr", "logit_scale", "samples_per_second"):
                        writer.add_scalar(f"train/{key}", record[key], step)
                bar.set_postfix(loss=f"{last_loss:.3f}", img_s=f"{throughput:.0f}")

            epoch_end = done % steps_per_epoch == 0
            periodic = config.checkpoint_every and done % config.checkpoint_every == 0
            if epoch_end or periodic:
                _checkpoint(run, env, module, optimizer, config, done, steps_per_epoch, counters,
                            epoch_end)  # fmt: skip
                if epoch_end and config.val and env.is_main:
                    top1 = _validate(clip, loaded, config.val, env)
                    metrics.write(json.dumps({"step": step, "val_zeroshot_top1": top1}) + "\n")
                    metrics.flush()
                    writer.add_scalar("val/zeroshot_top1", top1, step)
                    log.info("epoch %d: zero-shot top-1 on %s = %.3f", done // steps_per_epoch,
                             config.val, top1)  # fmt: skip
                    module.train()
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
        if writer is not None:
            writer.close()

    if counters["n_substituted"]:
        log.warning("%d corrupt samples were skipped", counters["n_substituted"])
    model_dir = run / "model"
    val_top1 = None
    if env.is_main:
        if model_dir.exists():
            shutil.rmtree(model_dir)
        save_model(clip, model_dir, loaded.model_cfg, loaded.preprocess_cfg)
        if config.val:
            val_top1 = _last_val(run)
    if env.distributed:
        dist.barrier()
    return TrainResult(
        run=run,
        steps=total_steps,
        final_loss=last_loss,
        model_dir=model_dir,
        samples_per_second=throughput,
        n_substituted=counters["n_substituted"],
        val_top1=val_top1,
    )


def _tensorboard(run: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency; keep training if it is broken
        log.warning("tensorboard is not importable; metrics go to metrics.jsonl only")
        return _NoWriter()
    return SummaryWriter(log_dir=str(run / "tensorboard"))


class _NoWriter:
    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _checkpoint(
    run: Path,
    env: DistEnv,
    module: ContrastiveModel,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    done: int,
    steps_per_epoch: int,
    counters: dict[str, int],
    epoch_end: bool,
) -> None:
    optimizer_state = optimizer.state_dict()
    if not env.is_main:
        return
    state = {
        "epoch": done // steps_per_epoch,
        "step": done,
        "name": run.name,
        "state_dict": module.clip.state_dict(),
        "replay_proj": module.replay_proj.detach() if module.replay_proj is not None else None,
        "optimizer": optimizer_state,
        "scaler": None,
        "torch_rng": torch.get_rng_state(),
        "counters": dict(counters),
        "config": config.to_json(),
    }
    name = f"epoch_{done // steps_per_epoch}.pt" if epoch_end else f"step_{done:08d}.pt"
    save_checkpoint(run, state, name, config.keep_checkpoints)


def _wrap_fsdp(module: torch.nn.Module, env: DistEnv) -> torch.nn.Module:
    if env.device.type != "cuda":
        raise UsageError("--fsdp needs CUDA devices; on CPU use plain DDP (the default)")
    from torch.distributed.fsdp import fully_shard

    for block in list(module.clip.visual.transformer.resblocks) + list(
        module.clip.transformer.resblocks
    ):
        fully_shard(block)
    fully_shard(module)
    return module


def _validate(clip: torch.nn.Module, loaded: LoadedModel, folder: str, env: DistEnv) -> float:
    from .validate import zero_shot_top1

    return zero_shot_top1(clip, loaded.preprocess_val, loaded.tokenizer, Path(folder), env.device)


def _last_val(run: Path) -> float | None:
    value = None
    for line in (run / METRICS_FILE).read_text().splitlines():
        record = json.loads(line)
        if "val_zeroshot_top1" in record:
            value = record["val_zeroshot_top1"]
    return value
