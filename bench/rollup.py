"""Rank roll-up at tree-of-life scale: genus predictions for 10,000 images against a
1,000,000-taxon index (D = 768, float16 on disk and in memory), as ``taxoclip predict
--rank genus`` computes them batch by batch.

Timed side by side per batch: the similarity matmul, the softmax, and the roll-up with
its top-k (``rollup_topk``, the function ``taxoclip predict`` calls: a fused threshold and
one ``index_add`` over the precomputed species→genus map). Issue goals: the
roll-up costs under 20 % of the matmul; the float16 index stays under 1.6 GB. Image
encoding is left out (random unit features), it does not depend on the index.

    python bench/rollup.py [--images 10000] [--taxa 1000000] [--dim 768] [--batch 256]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

from taxoclip.predict.index import TextIndex, rollup_topk
from taxoclip.taxonomy import Rank


def synthetic_names(n: int, rng: np.random.Generator) -> list[list]:
    """A tree with ~3 species per genus, ~4 genera per family, and so on up."""
    genus = np.arange(n) // 3
    family, order = genus // 4, genus // 40
    klass, phylum, kingdom = genus // 400, genus // 4000, genus // 40000
    return [
        [
            [
                f"K{kingdom[i]}",
                f"P{phylum[i]}",
                f"C{klass[i]}",
                f"O{order[i]}",
                f"F{family[i]}",
                f"G{genus[i]}",
                f"s{i}",
            ],
            "",
        ]  # fmt: skip
        for i in range(n)
    ]


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--taxa", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)

    start = time.perf_counter()
    embeddings = torch.randn(args.dim, args.taxa, dtype=torch.float32)
    embeddings /= embeddings.norm(dim=0, keepdim=True)
    embeddings = embeddings.half()
    index = TextIndex(embeddings, synthetic_names(args.taxa, rng))
    index_bytes = embeddings.numel() * embeddings.element_size()
    build = time.perf_counter() - start
    start = time.perf_counter()
    group, labels = index.rollup(Rank.GENUS)
    precompute = time.perf_counter() - start

    timings = {"matmul": 0.0, "softmax": 0.0, "rollup + top-k": 0.0}
    scale = torch.tensor(100.0)
    done = 0
    with torch.inference_mode():
        while done < args.images:
            n = min(args.batch, args.images - done)
            features = torch.nn.functional.normalize(torch.randn(n, args.dim), dim=-1)
            t0 = time.perf_counter()
            logits = index.logits(features, scale)
            t1 = time.perf_counter()
            probs = torch.softmax(logits, dim=1)
            t2 = time.perf_counter()
            rollup_topk(probs, group, len(labels), args.k)
            t3 = time.perf_counter()
            for key, value in zip(timings, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                timings[key] += value
            done += n

    total = sum(timings.values())
    print(
        f"command: python bench/rollup.py --images {args.images} --taxa {args.taxa} --dim {args.dim} "
        f"--batch {args.batch}"
    )
    print(
        f"machine: {os.cpu_count()} cores, torch {torch.__version__} (threads {torch.get_num_threads()})"
    )
    print(f"index: {args.taxa:,} taxa × {args.dim} float16 = {index_bytes / 1e9:.3f} GB "
          f"(built in {build:.1f} s); {len(labels):,} genera; genus map precomputed once in "
          f"{precompute:.1f} s")  # fmt: skip
    print(f"peak resident memory of the process: {rss_gb():.2f} GB")
    print()
    print("| step | seconds | share | vs matmul |")
    print("|---|---:|---:|---:|")
    for key, value in timings.items():
        print(f"| {key} | {value:.1f} | {value / total:.0%} | {value / timings['matmul']:.2f}× |")
    print(f"| total for {args.images:,} images | {total:.1f} | | |")


if __name__ == "__main__":
    main()
