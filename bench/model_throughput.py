"""Training and inference throughput of our open_clip configs on this machine's CPU.

Why: the CPU presets promise a speed (taxoclip-vit-t32: ≥ 500 training images/s at batch
128 on 2 cores), and that promise is only as good as its last measurement. A training step
here is what the trainer does: forward both towers on a batch of images and real
captions, ClipLoss, backward, AdamW (BioCLIP 2's settings, fused kernel). Inference is the
image encoder alone, as predict/evaluate use it.

Steps run until a step count or a time cap is reached, after warm-up steps that are not
timed. Numbers on a shared machine move with whatever else runs: the "other load" column
is the CPU time other processes took during the timed steps, as a fraction of all cores
(0 = the machine was ours); the best step is the closest to an uncontended figure.

Run: ``python bench/model_throughput.py`` (about 1–2 minutes for all configs).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import open_clip
import torch
from open_clip.loss import ClipLoss

from machine import cpu_name  # bench/ is on sys.path when a script here runs
from taxoclip.models import create_model, list_models

# Longest caption type (taxonTag_com) and the shortest (sci): the text tower runs all
# context positions either way, so the mix only matters for realism.
CAPTIONS = (
    "a photo of kingdom Lomaria phylum Vexorata class Caldimia order Tessiformes family "
    "Brunavidae genus Oxalis species pellucens with common name striped crimson long-billed "
    "darter.",
    "a photo of Oxalis pellucens.",
    "a photo of Animalia Chordata Aves Passeriformes Corvidae Pica hudsonia.",
    "a photo of black-billed magpie.",
)


@dataclass
class Row:
    name: str
    params: int
    image_size: int
    context_length: int
    train_median: float
    train_best: float
    train_steps: int
    infer: float
    other_load: float


class CpuWatch:
    """CPU time taken by other processes while a block runs, as a fraction of all cores."""

    def __init__(self) -> None:
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.cores = os.cpu_count() or 1

    def _busy(self) -> float | None:
        try:
            with open("/proc/stat", encoding="ascii") as handle:
                fields = [int(v) for v in handle.readline().split()[1:]]
        except OSError:
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / self.ticks  # steal counts as taken from us

    def __enter__(self) -> CpuWatch:
        self.start = (self._busy(), time.process_time(), time.perf_counter())
        return self

    def __exit__(self, *_: object) -> None:
        busy, own, wall = self._busy(), time.process_time(), time.perf_counter()
        if busy is None or self.start[0] is None:
            self.other = float("nan")
            return
        others = (busy - self.start[0]) - (own - self.start[1])
        self.other = max(0.0, others / ((wall - self.start[2]) * self.cores))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """BioCLIP 2 / open_clip: no decay on gains, biases, embeddings' scale (ndim < 2)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        exclude = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
        (no_decay if exclude or "logit_scale" in name else decay).append(param)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def timed_steps(step: Callable[[], None], warmup: int, steps: int, seconds: float) -> list[float]:
    for _ in range(warmup):
        step()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < steps and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def measure(name: str, args: argparse.Namespace) -> Row:
    loaded = create_model(name, seed=0)
    model = loaded.model
    size = loaded.image_size
    assert isinstance(size, int)
    generator = torch.Generator().manual_seed(0)

    images = torch.randn(args.batch_size, 3, size, size, generator=generator)
    texts = loaded.tokenizer([CAPTIONS[i % len(CAPTIONS)] for i in range(args.batch_size)])
    loss_fn = ClipLoss()
    optimizer = torch.optim.AdamW(
        param_groups(model, 0.2),
        lr=1e-4,
        betas=(0.9, 0.98),
        eps=1e-6,
        fused=args.optimizer == "fused",
        foreach=True if args.optimizer == "foreach" else None,
    )
    model.train()

    def train_step() -> None:
        image_features, text_features, logit_scale = model(images, texts)[:3]
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with CpuWatch() as watch:
        train = timed_steps(train_step, args.warmup, args.steps, args.seconds)

    model.eval()
    infer_images = torch.randn(args.infer_batch_size, 3, size, size, generator=generator)

    def infer_step() -> None:
        with torch.inference_mode():
            model.encode_image(infer_images)

    infer = timed_steps(infer_step, 1, args.steps, args.seconds / 2)
    return Row(
        name=name,
        params=sum(p.numel() for p in model.parameters()),
        image_size=size,
        context_length=loaded.context_length,
        train_median=args.batch_size / statistics.median(train),
        train_best=args.batch_size / min(train),
        train_steps=len(train),
        infer=args.infer_batch_size / statistics.median(infer),
        other_load=watch.other,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="default: all taxoclip-*")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--infer-batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=12, help="timed steps at most")
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="time cap per model (3 steps at least)"
    )
    parser.add_argument(
        "--optimizer",
        choices=("fused", "foreach"),
        default="fused",
        help="AdamW implementation (fused was measured ~15%% faster per step on t32)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.models or list_models()

    started = time.perf_counter()
    rows = []
    for name in names:
        rows.append(measure(name, args))
        print(f"measured {name}", file=sys.stderr, flush=True)

    command = " ".join(["python", *sys.argv]) if argv is None else " ".join(argv)
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"command: `{command}`")
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores ({affinity} usable); "
        f"torch {torch.__version__} (threads {torch.get_num_threads()}), "
        f"open_clip {open_clip.__version__}, Python {platform.python_version()}"
    )
    print(
        f"training: batch {args.batch_size}, fp32, forward+backward+ClipLoss+AdamW "
        f"({args.optimizer}), {args.warmup} warm-up steps untimed; inference: image encoder, "
        f"batch {args.infer_batch_size}, inference_mode"
    )
    print()
    print(
        "| model | params | image px | context | train img/s (median) | train img/s (best step) "
        "| timed steps | infer img/s | other load |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.name} | {row.params / 1e6:.2f} M | {row.image_size} | {row.context_length} "
            f"| {row.train_median:.0f} | {row.train_best:.0f} | {row.train_steps} "
            f"| {row.infer:.0f} | {row.other_load:.2f} |"
        )
    print()
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
