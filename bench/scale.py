"""The training data path at TreeOfLife size, simulated: shard order and reader positions
for N = 2 M, 20 M and 200 M samples (10,000 a shard), against the old per-step sampler.

The shards are described by a real ``sizes.json`` (shard name → 10,000) in an fsspec
``memory://`` folder and are never opened: :class:`taxoclip.train.data.ShardReader` runs
its real order, block-shuffle and position code on samples made in memory (its ``_open``
is the only thing replaced). Measured per N:

- start-up: ``ShardList.resolve`` (expanding the URL pattern, reading ``sizes.json``);
- per step (one rank, ``--batch`` samples): the shard-order and shuffle-buffer work
  (shard permutations per pass, block permutations per block), amortised over
  ``--steps`` steps that cross shard, block and pass boundaries, and the worst step;
- per-rank memory: tracemalloc peak of the shard list, the reader and its caches
  (the sample bytes in the shuffle buffer are not counted: they are ``--shuffle-buffer``
  × image size whatever N is);
- the old ``StepBatchSampler.global_indices`` (git fcddbec: a permutation of all N per
  step) timed at the same N, and its ``ShardIndex`` memory per sample measured at 2 M.

    python bench/scale.py [--steps 3000] [--batch 256] [--old-src /tmp/h7b_old/src]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from machine import cpu_name  # bench/ is on sys.path when a script here runs

SIZES = (2_000_000, 20_000_000, 200_000_000)
PER_SHARD = 10_000


class FakeReader:
    """A ShardReader whose shards are made in memory (``PER_SHARD`` tiny samples each)."""

    @staticmethod
    def make(shards, reader: int, n_readers: int, buffer: int):
        from taxoclip.train.data import ShardReader

        class Reader(ShardReader):
            def _open(self, k: int, skip: int) -> None:
                self.url(k)  # the real order lookup
                size = self.shards.sizes[0]
                self._samples = ({"__key__": i} for i in range(skip, size))

        return Reader(shards, seed=0, reader=reader, n_readers=n_readers, buffer=buffer)


def describe(n: int) -> str:
    """A memory:// folder whose sizes.json lists n / PER_SHARD shards."""
    import fsspec

    n_shards = n // PER_SHARD
    memory = fsspec.filesystem("memory")
    folder = f"/tol{n_shards}"
    sizes = {f"shard-{i:06d}.tar": PER_SHARD for i in range(n_shards)}
    memory.pipe(f"{folder}/sizes.json", json.dumps(sizes).encode())
    return f"memory://{folder}/shard-{{000000..{n_shards - 1:06d}}}.tar"


def measure_new(n: int, args) -> dict:
    from taxoclip.train.data import ShardList, shard_order

    spec = describe(n)
    shard_order.cache_clear()
    started = time.perf_counter()
    shards = ShardList.resolve(spec)
    startup = time.perf_counter() - started
    assert shards.n_samples == n
    # Rank 0 of 32 GPUs × 8 workers; this reader makes every step's batch here (a
    # worker makes every 8th step: the per-step cost is the same or less).
    passes_at = (n // PER_SHARD) // 256
    first = max(0, passes_at - 1)  # a shard before a pass ends: the steps cross into the next
    reader = FakeReader.make(shards, reader=0, n_readers=256, buffer=args.shuffle_buffer)
    reader.position.shard = first
    per_step = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        for _ in range(args.batch):
            reader.next_sample()
        per_step.append(time.perf_counter() - t0)
    # Memory, apart (tracemalloc slows every allocation): the shard list, a reader, its
    # caches, through the same steps.
    del shards, reader
    shard_order.cache_clear()
    gc.collect()
    tracemalloc.start()
    shards = ShardList.resolve(spec)
    reader = FakeReader.make(shards, reader=0, n_readers=256, buffer=args.shuffle_buffer)
    reader.position.shard = first
    for _ in range(min(args.steps, 200) * args.batch):
        reader.next_sample()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # The order work alone: the shard lookups and the block permutations of these steps.
    samples = args.steps * args.batch
    n_shards_read = samples // PER_SHARD + 2
    n_blocks = samples // args.shuffle_buffer + 1
    shard_order.cache_clear()
    t0 = time.perf_counter()
    for k in range(first, first + n_shards_read):
        reader.url(k)
    for b in range(n_blocks):
        rng = np.random.default_rng(np.random.SeedSequence([0, 13, 0, b]))
        rng.permutation(args.shuffle_buffer)
    order_time = time.perf_counter() - t0
    return {
        "n": n,
        "shards": len(shards.urls),
        "startup_s": startup,
        "order_ms_per_step": 1000 * order_time / args.steps,
        "reader_ms_per_step": 1000 * statistics.mean(per_step),
        "median_step_ms": 1000 * statistics.median(per_step),
        "p99_step_ms": 1000 * float(np.percentile(per_step, 99)),
        "peak_mb": peak / 2**20,
    }


def measure_old(n: int, old_src: str | None, repeats: int) -> float | None:
    """Seconds per step of the old sampler (its own code, from git fcddbec)."""
    if not old_src:
        return None
    sys.path.insert(0, old_src)
    try:
        for name in [m for m in sys.modules if m.startswith("taxoclip")]:
            del sys.modules[name]
        from taxoclip.train.data import StepBatchSampler

        sampler = StepBatchSampler(n, 256 * 32, total_steps=10, seed=0)
        times = []
        for step in range(repeats):
            t0 = time.perf_counter()
            sampler.global_indices(step)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
    finally:
        sys.path.remove(old_src)
        for name in [m for m in sys.modules if m.startswith("taxoclip")]:
            del sys.modules[name]


def old_index_bytes_per_sample(n: int = 2_000_000) -> float:
    """The old ShardIndex's structures for n samples (a key string per sample, shard ids,
    an (N, 2) int64 offset table per indexed member), measured with tracemalloc."""
    gc.collect()
    tracemalloc.start()
    keys = [f"{i:09d}" for i in range(n)]
    shard = np.zeros(n, dtype=np.int32)
    members = {s: np.zeros((n, 2), dtype=np.int64) for s in range(7)}
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del keys, shard, members
    return peak / n


def input_pipeline_ms_per_image(n: int = 300) -> float:
    """One core's cost to decode a 224-px TreeOfLife-like JPEG (~25 KB) and crop it as
    training does (``decode_rgb`` + ``RandomResizedCropTransform`` at 224 px)."""
    import io

    import torch
    from PIL import Image

    from taxoclip.data import decode_rgb
    from taxoclip.train.transform import RandomResizedCropTransform

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 224 * 224 * 3).reshape(224, 224, 3)
    pixels = (base + rng.normal(0, 40, base.shape)).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    data = buffer.getvalue()
    transform = RandomResizedCropTransform(224, scale=(0.9, 1.0))
    rounds = []
    for _ in range(4):  # the first round warms up; the best of the rest (a shared machine)
        started = time.perf_counter()
        for i in range(n // 4):
            transform(decode_rgb(data), np.random.default_rng(i))
        rounds.append((time.perf_counter() - started) / (n // 4))
    return 1000 * min(rounds[1:]), len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--shuffle-buffer", type=int, default=1000)
    parser.add_argument("--old-src", default=None, help="src/ of git fcddbec, extracted")
    parser.add_argument("--old-repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for n in SIZES:
        new = measure_new(n, args)
        new["old_s_per_step"] = measure_old(n, args.old_src, args.old_repeats if n < 10**8 else 1)
        rows.append(new)
        print(json.dumps(new), file=sys.stderr)
    per_sample = old_index_bytes_per_sample()
    image_ms, jpeg_bytes = input_pipeline_ms_per_image()

    import torch

    print(
        f"command: python bench/scale.py --steps {args.steps} --batch {args.batch} "
        f"--shuffle-buffer {args.shuffle_buffer} --old-src {args.old_src}"
    )
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores (shared with other jobs); "
        f"torch {torch.__version__}, numpy {np.__version__}"
    )
    print()
    print(
        "| N samples | shards | start-up (sizes.json) | order work / step | reader work / step "
        f"(batch {args.batch}), mean | median step | p99 step | per-rank memory (peak) | old sampler / step |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        old = f"{r['old_s_per_step'] * 1000:,.0f} ms" if r["old_s_per_step"] else "not run"
        print(
            f"| {r['n']:,} | {r['shards']:,} | {r['startup_s'] * 1000:.0f} ms | "
            f"{r['order_ms_per_step']:.4f} ms | {r['reader_ms_per_step']:.3f} ms | "
            f"{r['median_step_ms']:.3f} ms | {r['p99_step_ms']:.2f} ms | "
            f"{r['peak_mb']:.1f} MB | {old} |"
        )
    print()
    print(
        f"Old ShardIndex memory, measured at 2 M samples: {per_sample:.0f} bytes per sample "
        f"→ {per_sample * 2e8 / 2**30:.1f} GiB per rank at 200 M (the new path keeps none)."
    )
    print(
        f"Input pipeline, one core: {image_ms:.2f} ms per 224-px image ({jpeg_bytes / 1024:.0f} KB "
        f"JPEG: decode + RandomResizedCrop + normalise) = {1000 / image_ms:.0f} images/s per core."
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
