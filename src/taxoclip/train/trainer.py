"""The training loop: BioCLIP 2's recipe on any open_clip model, one process or torchrun.

:func:`train` is the whole run: :func:`~taxoclip.train.setup.setup` (distributed, model,
optimiser, data, resume), then per batch :func:`train_step`, :func:`log_step` and
:func:`maybe_checkpoint` (which validates at epoch ends), then :func:`finish` exports
``RUN/model/``. Every batch is a pure function of ``(seed, step)`` and checkpoints hold
the optimiser and RNG state, so a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist

from taxoclip.errors import TaxoclipError
from taxoclip.models import save_model

from .checkpoint import find_latest, save_checkpoint
from .config import LOGIT_SCALE_MAX, TrainConfig, TrainResult, bioclip2_recipe
from .data import text_type_for_step
from .distributed import close_distributed, init_distributed, mean_over_ranks
from .loss import clip_loss
from .optim import cosine_lr
from .runlog import RunLog, last_val
from .setup import TrainState, setup

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "TrainingError", "train", "train_step"]


class TrainingError(TaxoclipError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


class StepOutput(NamedTuple):
    loss: torch.Tensor  # this rank's loss (its share of the global batch's)
    grad_norm: torch.Tensor | None  # before clipping; None when --grad-clip is off
    lr: float


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) training as ``config`` says; returns where things landed."""
    if config.recipe == "bioclip2":
        config = bioclip2_recipe(config)
    config.validate()
    env = init_distributed(config.device)
    try:
        return _loop(setup(config, env))
    finally:
        close_distributed(env)


def _loop(state: TrainState) -> TrainResult:
    """One step per batch; log, checkpoint and validate on schedule; export at the end."""
    env, plan = state.env, state.plan
    runlog = RunLog(
        state.run, env.is_main, state.config.progress, plan.total_steps, plan.start_step
    )
    loss = math.nan
    state.module.train()
    try:
        # The sampler yields only the steps still to do: start_step .. total_steps - 1.
        for batch in state.loader:
            step = batch["step"]
            out = train_step(state, batch, step)
            n_samples = batch["images"].shape[0] * env.world_size
            state.counters["samples"] += n_samples
            state.counters["n_substituted"] += batch["n_substituted"]
            # A collective, on every rank every step: the logged loss is the global batch's.
            loss = mean_over_ranks(out.loss, env)
            runlog.tick(n_samples)
            log_step(state, runlog, step, out, loss)
            maybe_checkpoint(state, runlog, done=step + 1)
    finally:
        runlog.close()
    return finish(state, loss, runlog.throughput)


def train_step(state: TrainState, batch: dict[str, Any], step: int) -> StepOutput:
    """One optimiser step on ``batch``: schedule, forward, loss, backward, clip, update."""
    config, optimizer = state.config, state.optimizer
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
        grad_norm = torch.nn.utils.clip_grad_norm_(state.module.parameters(), config.grad_clip)
    optimizer.step()
    with torch.no_grad():  # CLIP's cap on the temperature: logit scale at most 100
        state.module.clip.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
    return StepOutput(loss, grad_norm, lr)


def _forward_loss(state: TrainState, batch: dict[str, Any]) -> torch.Tensor:
    """CLIP loss of the bio batch, plus that of the replay batch through its projection."""
    device, distributed = state.env.device, state.env.distributed
    images = batch["images"].to(device, non_blocking=True)
    tokens = batch["tokens"].to(device, non_blocking=True)
    ids = batch["caption_ids"].to(device) if state.config.caption_positives else None
    replay = next(state.replay_batches) if state.replay_batches is not None else None
    with state.autocast:
        if replay is None:
            out = state.model(images, tokens)
        else:
            out = state.model(
                images,
                tokens,
                replay["images"].to(device, non_blocking=True),
                replay["tokens"].to(device, non_blocking=True),
            )
        # In fp32 even under bf16 autocast: the softmax over the global batch needs it.
        scale = out["logit_scale"].float()
        loss = clip_loss(
            out["image"].float(), out["text"].float(), scale, ids, distributed=distributed
        )
        if replay is not None:
            loss = loss + clip_loss(
                out["replay_image"].float(), out["replay_text"].float(), scale, None,
                distributed=distributed,
            )  # fmt: skip
    return loss


def log_step(state: TrainState, runlog: RunLog, step: int, out: StepOutput, loss: float) -> None:
    """Every --log-every steps, the first and the last: a metrics line and the bar's text."""
    config, plan, done = state.config, state.plan, step + 1
    if not (done % config.log_every == 0 or done in (plan.total_steps, plan.start_step + 1)):
        return
    throughput = runlog.measure_throughput()
    record = {
        "step": step,
        "epoch": step / plan.steps_per_epoch,
        "loss": loss,
        "lr": out.lr,
        "logit_scale": float(state.module.clip.logit_scale.detach().exp()),
        "text_type": text_type_for_step(config.seed, step, config.text_type),
        "samples_per_second": throughput,
        "grad_norm": float(out.grad_norm) if out.grad_norm is not None else None,
        "n_substituted": state.counters["n_substituted"],
    }
    scalars = ("loss", "lr", "logit_scale", "samples_per_second")
    runlog.write(record, {f"train/{key}": record[key] for key in scalars})
    runlog.bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{throughput:.0f}")


def maybe_checkpoint(state: TrainState, runlog: RunLog, done: int) -> None:
    """After ``done`` steps: checkpoint at epoch ends and every --checkpoint-every steps;
    at epoch ends also validate on --val."""
    config, steps_per_epoch = state.config, state.plan.steps_per_epoch
    epoch_end = done % steps_per_epoch == 0
    periodic = config.checkpoint_every and done % config.checkpoint_every == 0
    if not (epoch_end or periodic):
        return
    optimizer_state = state.optimizer.state_dict()
    if state.env.is_main:
        name = f"epoch_{done // steps_per_epoch}.pt" if epoch_end else f"step_{done:08d}.pt"
        save_checkpoint(state.run, _checkpoint_state(state, done, optimizer_state), name,
                        config.keep_checkpoints)  # fmt: skip
    if epoch_end and config.val and state.env.is_main:
        validate(state, runlog, step=done - 1)


def _checkpoint_state(
    state: TrainState, done: int, optimizer_state: dict[str, Any]
) -> dict[str, Any]:
    """open_clip's checkpoint keys, plus what exact resume needs (see checkpoint.py)."""
    module = state.module
    return {
        "epoch": done // state.plan.steps_per_epoch,
        "step": done,
        "name": state.run.name,
        "state_dict": module.clip.state_dict(),
        "replay_proj": module.replay_proj.detach() if module.replay_proj is not None else None,
        "optimizer": optimizer_state,
        "scaler": None,
        "torch_rng": torch.get_rng_state(),
        "counters": dict(state.counters),
        "config": state.config.to_json(),
    }


def validate(state: TrainState, runlog: RunLog, step: int) -> float:
    """Zero-shot top-1 on --val (rank 0), logged at ``step``; the model trains on after."""
    from .validate import zero_shot_top1

    config, loaded = state.config, state.loaded
    top1 = zero_shot_top1(state.module.clip, loaded.preprocess_val, loaded.tokenizer,
                          Path(config.val), state.env.device)  # fmt: skip
    runlog.write({"step": step, "val_zeroshot_top1": top1}, {"val/zeroshot_top1": top1})
    log.info("epoch %d: zero-shot top-1 on %s = %.3f",
             (step + 1) // state.plan.steps_per_epoch, config.val, top1)  # fmt: skip
    state.module.train()
    return top1


def finish(state: TrainState, loss: float, throughput: float) -> TrainResult:
    """Export ``RUN/model/`` (rank 0) once every rank is done; report the run."""
    config, env, run, loaded = state.config, state.env, state.run, state.loaded
    n_substituted = state.counters["n_substituted"]
    if n_substituted:
        log.warning("%d corrupt samples were skipped", n_substituted)
    model_dir = run / "model"
    val_top1 = None
    if env.is_main:
        if model_dir.exists():
            shutil.rmtree(model_dir)
        save_model(state.module.clip, model_dir, loaded.model_cfg, loaded.preprocess_cfg)
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
        val_top1=val_top1,
        val=config.val,
        rank=env.rank,
    )
