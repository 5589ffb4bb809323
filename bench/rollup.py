"""Rank roll-up at tree-of-life scale: genus predictions for 10,000 images against a
1,000,000-taxon index (D = 768, float16 on disk and in memory), as ``taxoclip predict
--rank genus`` computes them batch by batch — on every runtime, with the engine's one
numpy scorer (:mod:`taxoclip.runtime.scoring`).

Timed side by side per batch: the similarity matmul (``class_logits``: the float16 index
widened a block at a time), the softmax, and the roll-up with its top-k
(``TreeScorer.top``: species under ``min_prob`` zeroed, one ``bincount`` per image over the
precomputed species→genus map, then top-k). Issue goals: the roll-up costs under 20 % of
the matmul; the float16 index stays under 1.6 GB. Image encoding is left out (random unit
features), it does not depend on the index.

    python bench/rollup.py [--images 10000] [--taxa 1000000] [--dim 768] [--batch 256]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from taxoclip.runtime.index import TextIndex
from taxoclip.runtime.scoring import TreeScorer, class_logits, softmax
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
        ]
        for i in range(n)
    ]


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--taxa", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    start = time.perf_counter()
    embeddings = unit_rows(rng, args.taxa, args.dim).T.astype(np.float16)
    index = TextIndex(embeddings, synthetic_names(args.taxa, rng))
    index_bytes = index.embeddings.nbytes
    build = time.perf_counter() - start
    scorer = TreeScorer(index, logit_scale=100.0)
    start = time.perf_counter()
    _, labels, _ = scorer.groups(Rank.GENUS)
    precompute = time.perf_counter() - start

    timings = {"matmul": 0.0, "softmax": 0.0, "rollup + top-k": 0.0}
    done = 0
    while done < args.images:
        n = min(args.batch, args.images - done)
        features = unit_rows(rng, n, args.dim)
        t0 = time.perf_counter()
        logits = class_logits(features, index.embeddings, scorer.logit_scale)
        t1 = time.perf_counter()
        probs = softmax(logits)
        t2 = time.perf_counter()
        scorer.top(probs, Rank.GENUS, args.k)
        t3 = time.perf_counter()
        for key, value in zip(timings, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            timings[key] += value
        done += n

    total = sum(timings.values())
    print(
        f"command: python bench/rollup.py --images {args.images} --taxa {args.taxa} --dim {args.dim} "
        f"--batch {args.batch}"
    )
    print(f"machine: {os.cpu_count()} cores, numpy {np.__version__}")
    print(
        f"index: {args.taxa:,} taxa × {args.dim} float16 = {index_bytes / 1e9:.3f} GB "
        f"(built in {build:.1f} s); {len(labels):,} genera; genus map precomputed once in "
        f"{precompute:.1f} s"
    )
    print(f"peak resident memory of the process: {rss_gb():.2f} GB")
    print()
    print("| step | seconds | share | vs matmul |")
    print("|---|---:|---:|---:|")
    for key, value in timings.items():
        print(f"| {key} | {value:.1f} | {value / total:.0%} | {value / timings['matmul']:.2f}× |")
    print(f"| total for {args.images:,} images | {total:.1f} | | |")


if __name__ == "__main__":
    main()
