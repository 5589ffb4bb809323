"""Training configuration: one dataclass, the CPU demo defaults, the paper's recipe."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from taxoclip.errors import UsageError
from taxoclip.files import write_text_atomic

from .data import TEXT_TYPE_CHOICES

DEFAULT_MODEL = "taxoclip-vit-t32"
PRECISIONS = ("fp32", "bf16")
LOGIT_SCALE_MAX = math.log(100)

# Fields that decide the trajectory: a resumed run must keep them, or it is another run.
TRAJECTORY_FIELDS = (
    "data", "model", "pretrained", "batch_size", "replay", "replay_batch_size", "text_type",
    "epochs", "steps", "lr", "weight_decay", "betas", "eps", "warmup", "grad_clip",
    "precision", "seed", "caption_positives", "squash",
)  # fmt: skip


@dataclass
class TrainConfig:
    """Everything ``taxoclip train`` needs; ``batch_size`` is per process (open_clip's)."""

    data: str
    out: str
    model: str = DEFAULT_MODEL
    pretrained: str | None = None
    replay: str | None = None
    replay_ratio: float = 0.1
    replay_batch_size: int | None = None  # default from replay_ratio
    text_type: str = "random"
    epochs: int = 10
    steps: int | None = None  # overrides epochs
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup: int = 100
    grad_clip: float | None = 1.0
    precision: str = "fp32"
    grad_checkpointing: bool = False
    compile: bool = False
    fsdp: bool = False
    workers: int = 2
    seed: int = 0
    caption_positives: bool = False
    squash: bool = False
    checkpoint_every: int = 0  # steps; 0 = at epoch ends only
    keep_checkpoints: int = 3
    log_every: int = 10
    val: str | None = None
    resume: str | None = None
    device: str = "auto"
    recipe: str | None = None
    progress: bool = True

    def resolved_replay_batch(self) -> int:
        """Replay images per process: ``ratio`` of all images seen in a step."""
        if not self.replay:
            return 0
        if self.replay_batch_size is not None:
            return self.replay_batch_size
        return max(1, round(self.batch_size * self.replay_ratio / (1.0 - self.replay_ratio)))

    def validate(self) -> None:
        problems = []
        if self.batch_size < 1:
            problems.append(f"--batch-size must be at least 1 (got {self.batch_size})")
        if self.epochs < 1 and not self.steps:
            problems.append(f"--epochs must be at least 1 (got {self.epochs})")
        if self.steps is not None and self.steps < 1:
            problems.append(f"--steps must be at least 1 (got {self.steps})")
        if self.lr <= 0:
            problems.append(f"--lr must be positive (got {self.lr})")
        if self.warmup < 0:
            problems.append(f"--warmup must be 0 or more (got {self.warmup})")
        if self.precision not in PRECISIONS:
            problems.append(f"--precision must be one of {', '.join(PRECISIONS)}")
        if self.text_type not in TEXT_TYPE_CHOICES:
            problems.append(f"--text-type must be one of {', '.join(TEXT_TYPE_CHOICES)}")
        if not 0.0 < self.replay_ratio < 1.0:
            problems.append(f"--replay-ratio must be in (0, 1) (got {self.replay_ratio})")
        if self.workers < 0:
            problems.append(f"--workers must be 0 or more (got {self.workers})")
        if self.keep_checkpoints < 1:
            problems.append(f"--keep-checkpoints must be at least 1 (got {self.keep_checkpoints})")
        if self.checkpoint_every < 0 or self.log_every < 1:
            problems.append("--checkpoint-every must be >= 0 and --log-every >= 1")
        if self.resume not in (None, "latest") and not Path(self.resume).is_file():
            problems.append(f"--resume must be 'latest' or a checkpoint file (got {self.resume})")
        if problems:
            raise UsageError("; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)

    def trajectory_differences(self, other: TrainConfig) -> list[str]:
        return [
            f"{name}: {getattr(other, name)!r} in the checkpoint, {getattr(self, name)!r} now"
            for name in TRAJECTORY_FIELDS
            if getattr(self, name) != getattr(other, name)
        ]


def bioclip2_recipe(config: TrainConfig, world_size_hint: int = 32) -> TrainConfig:
    """The paper's hyper-parameters (DESIGN section 2) on top of ``config``.

    Per GPU: 2,816 bio + 320 replay images (global 90,112 + 10,240 on 32 GPUs); ViT-L/14
    from LAION-2B CLIP; AdamW (0.9, 0.98, 1e-6), wd 0.2, lr 1e-4 cosine with 1,875
    warm-up steps, 30 epochs, bf16, gradient checkpointing. The logit-scale clamp to
    ln 100 and the local loss with gather-with-grad are always on.
    """
    return replace(
        config,
        model="ViT-L-14",
        pretrained=config.pretrained or "laion2b_s32b_b82k",
        batch_size=2816,
        replay_batch_size=320 if config.replay else None,
        text_type="random",
        epochs=30,
        lr=1e-4,
        weight_decay=0.2,
        betas=(0.9, 0.98),
        eps=1e-6,
        warmup=1875,
        precision="bf16",
        grad_checkpointing=True,
        recipe="bioclip2",
    )


def write_params(path: Path, config: TrainConfig, extra: dict[str, Any]) -> None:
    write_text_atomic(
        path, json.dumps({**config.to_json(), **extra}, indent=2, sort_keys=True) + "\n"
    )
