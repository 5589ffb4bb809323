"""The training loop: BioCLIP 2's recipe on any open_clip model, one process or torchrun.

:func:`train` is the whole run: :func:`~taxoclip.train.setup.setup` (distributed, model,
optimiser, data, resume), then per batch :func:`train_step`, :func:`log_step` and
:func:`maybe_checkpoint` (which validates at epoch ends), then :func:`finish` exports
``RUN/model/``. Batches stream from shards (data.py); every batch carries its reader's
position, checkpoints hold all readers' positions with the optimiser and RNG state, so a
resumed run sees the same batches and ends bit-identical to an uninterrupted one. The
loss is reduced over ranks only at log steps; under FSDP checkpoints, validation and the
export use the whole tensors gathered from every rank.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist

from taxoclip.errors import TaxoclipError
from taxoclip.models import save_model

from .checkpoint import find_latest, save_checkpoint
from .config import LOGIT_SCALE_MAX, TrainConfig, TrainResult, bioclip2_recipe
from .data import Batch, text_type_for_step
from .distributed import close_distributed, init_distributed, local_value, mean_over_ranks
from .loss import clip_loss
from .optim import cosine_lr
from .runlog import RunLog, last_val
from .setup import TrainState, setup
from .state import ModelWeights

log = logging.getLogger(__name__)

__all__ = ["CheckpointHook", "TrainResult", "TrainingError", "train", "train_step"]


class TrainingError(TaxoclipError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


class StepOutput(NamedTuple):
    loss: torch.Tensor  # this rank's loss (its share of the global batch's)
    grad_norm: torch.Tensor | None  # before clipping; None when --grad-clip is off
    lr: float


#: Called on rank 0 with the steps done and the checkpoint's path once it is written (and,
#: at an epoch end, validated): to copy it elsewhere, or for a test to kill the run there.
CheckpointHook = Callable[[int, Path], None]


def train(config: TrainConfig, on_checkpoint: Sequence[CheckpointHook] = ()) -> TrainResult:
    """Run (or resume) training as ``config`` says; returns where things landed."""
    if config.recipe == "bioclip2":
        config = bioclip2_recipe(config)
    config.validate()
    env = init_distributed(config.device)
    try:
        return _loop(setup(config, env), on_checkpoint)
    finally:
        close_distributed(env)


def _loop(state: TrainState, on_checkpoint: Sequence[CheckpointHook] = ()) -> TrainResult:
    """One step per batch; log, checkpoint and validate on schedule; export at the end."""
    env, plan = state.env, state.plan
    runlog = RunLog(
        state.run, env.is_main, state.config.progress, plan.total_steps, plan.start_step
    )
    loss = math.nan
    state.raw_model.train()
    try:
        # The loader yields only the steps still to do: start_step .. total_steps - 1.
        for batch in state.loader:
            out = train_step(state, batch)
            runlog.tick(state.progress.advance(batch, env.world_size))
            state.readers.update(batch)
            loss = log_step(state, runlog, batch.step, out, loss)
            saved = maybe_checkpoint(state, runlog)
            if saved is not None:
                for hook in on_checkpoint:
                    hook(state.progress.step, saved)
    finally:
        runlog.close()
    return finish(state, loss, runlog.throughput)


def train_step(state: TrainState, batch: Batch) -> StepOutput:
    """One optimiser step on ``batch``: schedule, forward, loss, backward, clip, update."""
    config, optimizer, step = state.config, state.optimizer, batch.step
    lr = cosine_lr(step, config.lr, config.warmup, state.plan.total_steps)
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = _forward_loss(state, batch)
    if not torch.isfinite(loss):
        latest = find_latest(state.run)
        raise TrainingError(
            f"loss became {float(loss.detach())} at step {step}; stopping. The last good "
            f"checkpoint is {latest or 'none (no checkpoint was written yet)'}; try a "
            "lower --lr, a longer --warmup, or --precision fp32"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # under DDP this also all-reduces the gradients
    grad_norm = None
    if config.grad_clip:
        grad_norm = torch.nn.utils.clip_grad_norm_(state.raw_model.parameters(), config.grad_clip)
    optimizer.step()
    with torch.no_grad():  # CLIP's cap on the temperature: logit scale at most 100
        state.raw_model.clip.logit_scale.clamp_(0, LOGIT_SCALE_MAX)  # a DTensor under FSDP
    return StepOutput(loss, grad_norm, lr)


def _forward_loss(state: TrainState, batch: Batch) -> torch.Tensor:
    """CLIP loss of the bio batch, plus that of the replay batch through its projection."""
    device, distributed = state.env.device, state.env.distributed
    images = batch.images.to(device, non_blocking=True)
    tokens = batch.tokens.to(device, non_blocking=True)
    ids = batch.caption_ids.to(device) if state.config.caption_positives else None
    replay = None
    if state.replay_batches is not None:
        replay = next(state.replay_batches)
        state.replay_readers.update(replay)
    with state.autocast:
        if replay is None:
            out = state.model(images, tokens)
        else:
            out = state.model(
                images,
                tokens,
                replay.images.to(device, non_blocking=True),
                replay.tokens.to(device, non_blocking=True),
            )
        # In fp32 even under bf16 autocast: the softmax over the global batch needs it.
        scale = out["logit_scale"].float()
        loss = clip_loss(
            out["image"].float(), out["text"].float(), scale, ids, distributed=distributed
        )
        if replay is not None:
            replay_image, replay_text = out["replay_image"].float(), out["replay_text"].float()
            loss = loss + clip_loss(replay_image, replay_text, scale, None, distributed=distributed)
    return loss


def log_step(
    state: TrainState, runlog: RunLog, step: int, out: StepOutput, last_loss: float
) -> float:
    """Every --log-every steps, the first and the last: the loss reduced over ranks (the
    only per-step collective outside the model, so only here), a metrics line and the
    bar's text. Returns the logged loss, or ``last_loss`` on steps that do not log."""
    config, plan, done = state.config, state.plan, step + 1
    if not (done % config.log_every == 0 or done in (plan.total_steps, plan.start_step + 1)):
        return last_loss
    loss = mean_over_ranks(out.loss, state.env)  # every rank logs the same steps
    throughput = runlog.measure_throughput()
    grad_norm = local_value(out.grad_norm) if out.grad_norm is not None else None
    record = {
        "step": step,
        "epoch": step / plan.steps_per_epoch,
        "loss": loss,
        "lr": out.lr,
        "logit_scale": float(local_value(state.raw_model.clip.logit_scale.detach()).exp()),
        "text_type": text_type_for_step(config.seed, step, config.text_type),
        "samples_per_second": throughput,
        "grad_norm": float(grad_norm) if grad_norm is not None else None,
        "n_substituted": state.progress.n_substituted,
        "shard_read_errors": state.readers.read_errors(),  # this rank's readers
    }
    scalars = ("loss", "lr", "logit_scale", "samples_per_second")
    runlog.write(record, {f"train/{key}": record[key] for key in scalars})
    runlog.bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{throughput:.0f}")
    return loss


def maybe_checkpoint(state: TrainState, runlog: RunLog) -> Path | None:
    """After the step just done: checkpoint at epoch ends and every --checkpoint-every
    steps; at epoch ends also validate on --val. Returns the checkpoint written (rank 0)."""
    config, steps_per_epoch, done = state.config, state.plan.steps_per_epoch, state.progress.step
    epoch_end = done % steps_per_epoch == 0
    periodic = config.checkpoint_every and done % config.checkpoint_every == 0
    if not (epoch_end or periodic):
        return None
    # Every rank: some pieces' state_dict() are collectives (state.py).
    checkpoint = state.checkpoint_facts()
    for piece in state.checkpointed():
        checkpoint.update(piece.state_dict())
    path = None
    if state.env.is_main:
        name = f"epoch_{done // steps_per_epoch}.pt" if epoch_end else f"step_{done:08d}.pt"
        path = save_checkpoint(state.run, checkpoint, name, config.keep_checkpoints)
    if epoch_end and config.val:
        validate(state, runlog, step=done - 1, weights=checkpoint["state_dict"])
    return path


def _whole_clip(state: TrainState, weights: dict[str, torch.Tensor] | None) -> torch.nn.Module:
    """An unsharded CLIP with the current weights: the model's own, or under FSDP the whole
    copy loaded with ``weights`` (the bare CLIP's, gathered from every rank)."""
    if state.unsharded is None:
        return state.raw_model.clip
    state.unsharded.load_state_dict(weights)
    return state.unsharded


def validate(
    state: TrainState, runlog: RunLog, step: int, weights: dict[str, torch.Tensor] | None = None
) -> float | None:
    """Zero-shot top-1 on --val, logged at ``step``, on rank 0 with an unsharded model (no
    collective inside: under FSDP ``weights``, the bare CLIP's, were gathered on every rank
    before)."""
    from .validate import zero_shot_top1

    config, loaded = state.config, state.loaded
    if not state.env.is_main:
        return None
    clip = _whole_clip(state, weights)
    device = state.env.device if state.unsharded is None else torch.device("cpu")
    top1 = zero_shot_top1(clip, loaded.preprocess_val, loaded.tokenizer, Path(config.val), device)
    runlog.write({"step": step, "val_zeroshot_top1": top1}, {"val/zeroshot_top1": top1})
    epoch = (step + 1) // state.plan.steps_per_epoch
    log.info("epoch %d: zero-shot top-1 on %s = %.3f", epoch, config.val, top1)
    state.raw_model.train()
    return top1


def finish(state: TrainState, loss: float, throughput: float) -> TrainResult:
    """Export ``RUN/model/`` (rank 0) once every rank is done; report the run."""
    config, env, run, loaded = state.config, state.env, state.run, state.loaded
    n_substituted = state.progress.n_substituted
    if n_substituted:
        log.warning("%d corrupt samples were skipped", n_substituted)
    model_dir = run / "model"
    val_top1 = None
    # Collectives first, on every rank: the whole weights (FSDP), every reader's position.
    weights = (
        ModelWeights(state.raw_model, True).state_dict()["state_dict"] if config.fsdp else None
    )
    readers = [p for p in state.readers.gathered() if p]
    n_read_errors = sum(p.n_read_errors + p.n_missing for p in readers)
    bad_shards = sorted({url for p in readers for url in p.bad_shards})
    if n_read_errors:
        log.warning("%d samples lost to damaged shards: %s", n_read_errors, ", ".join(bad_shards))
    if env.is_main:
        if model_dir.exists():
            shutil.rmtree(model_dir)
        clip = _whole_clip(state, weights)
        save_model(clip, model_dir, loaded.model_cfg, loaded.preprocess_cfg)
        if config.val:
            val_top1 = last_val(run)
    if env.distributed:
        dist.barrier()  # no rank returns before model/ is complete
    return TrainResult(
        run=run,
        steps=state.plan.total_steps,
        final_loss=loss,
        model_dir=model_dir,
        samples_per_second=throughput,
        n_substituted=n_substituted,
        n_read_errors=n_read_errors,
        bad_shards=bad_shards,
        val_top1=val_top1,
        val=config.val,
        rank=env.rank,
    )
