"""Config and result of ``taxoclip train`` (light: the CLI imports this for --help).

One dataclass, the CPU demo defaults, and the paper's recipe. Standard library and
``taxoclip.config`` / ``taxoclip.taxonomy`` only: no torch here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from taxoclip.config import CommandConfig, CommandResult, command, option, shared
from taxoclip.errors import UsageError
from taxoclip.files import write_text_atomic
from taxoclip.taxonomy import TRAINING_TEXT_TYPES

DEFAULT_MODEL = "taxoclip-vit-t32"
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
#: ``caption``: the shard's plain ``txt`` as it is, for a general image–caption corpus
#: (stage 1 of the two-stage recipe, on ``taxoclip synth --web`` shards).
CAPTION_TEXT = "caption"
TEXT_TYPE_CHOICES = ("random", *(t.value for t in TRAINING_TEXT_TYPES), CAPTION_TEXT)
LOGIT_SCALE_MAX = math.log(100)

# Fields that decide the trajectory: a resumed run must keep them, or it is another run.
TRAJECTORY_FIELDS = (
    "data",
    "model",
    "pretrained",
    "batch_size",
    "replay",
    "replay_batch_size",
    "text_type",
    "epochs",
    "steps",
    "lr",
    "weight_decay",
    "betas",
    "eps",
    "warmup",
    "grad_clip",
    "lock_image",
    "precision",
    "seed",
    "caption_positives",
    "squash",
    "shuffle_buffer",
)


def _norm_or_off(text: str) -> float | None:
    """``--grad-clip``: a gradient norm, 0 meaning no clipping."""
    return float(text) or None


_norm_or_off.__name__ = "float"  # argparse names the type in "invalid float value: 'x'"


@command(
    "train",
    help="train or fine-tune a hierarchical contrastive model on shards",
    description=(
        "Train an open_clip model with BioCLIP 2's recipe: CLIP loss over tree-of-life "
        "captions, one caption type per step drawn from sci/com/taxon/sci_com/taxon_com, "
        "optional experience replay through a second visual projection. One process, "
        "or `torchrun --nproc_per_node N -m taxoclip train ...` for DDP. Exact resume "
        "from checkpoints with --resume latest."
    ),
    run="taxoclip.train:run",
)
@dataclass(kw_only=True)
class TrainConfig(CommandConfig):
    """Everything ``taxoclip train`` needs; ``batch_size`` is per process (open_clip's)."""

    data: str = option(
        metavar="SHARDS",
        help="training shards: 'DIR/shard-{000000..000009}.tar' (brace patterns, :: lists)",
    )
    out: str = option(metavar="RUN", help="run directory (checkpoints, metrics, model/)")
    model: str = option(
        DEFAULT_MODEL,
        metavar="NAME|CONFIG.json|DIR|hf-hub:…",
        help="architecture or model to start from (taxoclip-vit-t32 is the CPU preset)",
    )
    pretrained: str | None = shared.pretrained()
    recipe: str | None = option(
        None,
        choices=("bioclip2",),
        help="preset the paper's hyper-parameters (ViT-L/14, bf16, 30 epochs, …)",
    )
    replay: str | None = option(
        None, metavar="SHARDS", help="general image-caption shards for experience replay"
    )
    replay_ratio: float = option(0.1, metavar="R", help="fraction of images per step from replay")
    replay_batch_size: int | None = option(
        None, metavar="B", help="replay images per process (overrides --replay-ratio)"
    )
    text_type: str = option(
        "random",
        choices=TEXT_TYPE_CHOICES,
        help="caption type: random draws one per step; caption: the shards' plain txt, for a "
        "general image-caption corpus such as synth --web's",
    )
    epochs: int = option(10, help="epochs")
    steps: int | None = option(None, help="total steps (overrides --epochs)")
    batch_size: int = option(128, metavar="B", help="images per process per step")
    lr: float = option(5e-4, help="peak learning rate")
    weight_decay: float = option(
        0.2,
        flag="--wd",
        aliases=("--weight-decay",),
        metavar="WD",
        help="weight decay (none on gains, biases, logit scale)",
    )
    betas: tuple[float, float] = option((0.9, 0.98), cli=False, help="AdamW betas")
    eps: float = option(1e-6, cli=False, help="AdamW epsilon")
    warmup: int = option(100, metavar="STEPS", help="linear warm-up steps before the cosine decay")
    grad_clip: float | None = option(
        1.0, metavar="NORM", parse=_norm_or_off, help="clip gradient norm (0 = off)"
    )
    precision: str = option("fp32", choices=PRECISIONS, help="fp32 or bf16 autocast")
    lock_image: int | None = option(
        None,
        metavar="GROUPS",
        help="fine-tune with the image tower frozen but its last GROUPS layer groups "
        "(open_clip's lock_image_tower: 1 = the projection, 2 = also the last block and "
        "ln_post, ...; 0 = all frozen); frozen blocks need no backward pass",
    )
    grad_checkpointing: bool = option(False, help="trade compute for memory")
    compile: bool = option(False, help="torch.compile the model")
    fsdp: bool = option(False, help="shard the model with FSDP2 instead of DDP (CUDA or CPU)")
    workers: int = option(2, help="DataLoader workers per process, each reading its own shards")
    shuffle_buffer: int = option(1000, metavar="N", help="samples per reader's shuffle block")
    seed: int = shared.seed()
    caption_positives: bool = option(
        False, help="count identical captions in a batch as positives (not in the paper)"
    )
    squash: bool = option(False, help="squash images to square before cropping")
    checkpoint_every: int = option(
        0, metavar="STEPS", help="also checkpoint every N steps (0: at epoch ends only)"
    )
    keep_checkpoints: int = option(
        3, metavar="K", help="step checkpoints kept (epoch ones all kept)"
    )
    log_every: int = option(10, metavar="STEPS", help="log every N steps")
    val: str | None = option(
        None,
        metavar="DIR",
        help="evaluation folder (metadata.csv) for zero-shot top-1 at each epoch end",
    )
    resume: str | None = option(
        None,
        metavar="latest|CKPT",
        help="continue the run in --out from its latest (or this) checkpoint",
    )
    device: str = option(
        "auto", choices=DEVICES, help="auto (cuda when available, else cpu), cpu or cuda"
    )
    progress: bool = option(True, flag="--quiet", short="-q", negate=True, help="no progress bar")

    def resolved_replay_batch(self) -> int:
        """Replay images per process: ``ratio`` of all images seen in a step."""
        if not self.replay:
            return 0
        if self.replay_batch_size is not None:
            return self.replay_batch_size
        return max(1, round(self.batch_size * self.replay_ratio / (1.0 - self.replay_ratio)))

    def check(self) -> list[str]:
        return _range_problems(self) + _choice_problems(self)

    def validate(self) -> None:
        """Raise ``UsageError`` if :meth:`check` finds problems (fields may have changed)."""
        problems = self.check()
        if problems:
            raise UsageError("; ".join(problems))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        """The config a checkpoint or params.json stored (unknown keys ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        # How that run was started, not what it is: its --resume file may be gone by now.
        values["resume"] = None
        return cls(**values)

    def trajectory_differences(self, other: TrainConfig) -> list[str]:
        return [
            f"{name}: {getattr(other, name)!r} in the checkpoint, {getattr(self, name)!r} now"
            for name in TRAJECTORY_FIELDS
            if getattr(self, name) != getattr(other, name)
        ]


def _range_problems(c: TrainConfig) -> list[str]:
    problems = []
    if c.batch_size < 1:
        problems.append(f"--batch-size must be at least 1 (got {c.batch_size})")
    if c.epochs < 1 and not c.steps:
        problems.append(f"--epochs must be at least 1 (got {c.epochs})")
    if c.lock_image is not None and c.lock_image < 0:
        problems.append(f"--lock-image must be 0 or more layer groups (got {c.lock_image})")
    if c.steps is not None and c.steps < 1:
        problems.append(f"--steps must be at least 1 (got {c.steps})")
    if c.lr <= 0:
        problems.append(f"--lr must be positive (got {c.lr})")
    if c.warmup < 0:
        problems.append(f"--warmup must be 0 or more (got {c.warmup})")
    if not 0.0 < c.replay_ratio < 1.0:
        problems.append(f"--replay-ratio must be in (0, 1) (got {c.replay_ratio})")
    if c.workers < 0:
        problems.append(f"--workers must be 0 or more (got {c.workers})")
    if c.shuffle_buffer < 1:
        problems.append(f"--shuffle-buffer must be at least 1 (got {c.shuffle_buffer})")
    if c.keep_checkpoints < 1:
        problems.append(f"--keep-checkpoints must be at least 1 (got {c.keep_checkpoints})")
    if c.checkpoint_every < 0 or c.log_every < 1:
        problems.append("--checkpoint-every must be >= 0 and --log-every >= 1")
    return problems


def _choice_problems(c: TrainConfig) -> list[str]:
    problems = []
    if c.precision not in PRECISIONS:
        problems.append(f"--precision must be one of {', '.join(PRECISIONS)}")
    if c.text_type not in TEXT_TYPE_CHOICES:
        problems.append(f"--text-type must be one of {', '.join(TEXT_TYPE_CHOICES)}")
    if c.device not in DEVICES:
        problems.append(f"--device must be auto, cpu or cuda (got {c.device})")
    if c.recipe not in (None, "bioclip2"):
        problems.append(f"--recipe must be bioclip2 (got {c.recipe})")
    if c.resume not in (None, "latest") and not Path(c.resume).is_file():
        problems.append(f"--resume must be 'latest' or a checkpoint file (got {c.resume})")
    return problems


@dataclass
class TrainResult(CommandResult):
    """Where a run landed. ``rank`` is the process's (torchrun's RANK); only rank 0 prints."""

    run: Path
    steps: int
    final_loss: float
    model_dir: Path
    samples_per_second: float
    n_substituted: int
    n_read_errors: int = 0  # samples lost to truncated or unreadable shards
    bad_shards: list[str] = field(default_factory=list)
    val_top1: float | None = None
    val: str | None = None  # the --val folder val_top1 was measured on
    rank: int = 0

    def lines(self) -> list[str]:
        if self.rank != 0:  # under torchrun every process returns; one reports
            return []
        lines = [f"trained {self.steps} steps; final loss {self.final_loss:.4f}"]
        if self.val_top1 is not None:
            lines.append(f"zero-shot top-1 on {self.val}: {self.val_top1:.3f}")
        if self.n_substituted:
            lines.append(f"{self.n_substituted} corrupt samples were skipped (see the log)")
        if self.n_read_errors:
            lines.append(
                f"{self.n_read_errors} samples lost to damaged shards: "
                + ", ".join(self.bad_shards)
            )
        lines.append(f"run: {self.run}  (metrics.jsonl, tensorboard/, checkpoints/)")
        lines.append(f"model: {self.model_dir}  (open_clip local-dir: layout)")
        return lines


def bioclip2_recipe(config: TrainConfig, world_size_hint: int = 32) -> TrainConfig:
    """The paper's hyper-parameters on top of ``config``.

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
