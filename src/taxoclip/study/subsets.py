"""Data sizes of a scaling study: nested subsets of one SynthToL's training split.

Every size is a subset of the training split: the same species, the same test split,
and per seen species the first ``floor(fraction × n_s)`` (at least one) of its training
images in a fixed, seeded order, so a smaller set is contained in every larger one. Each
size is written as its own shards.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from taxoclip.errors import InputError, UsageError

SUBSET_RULE = (
    "per seen species, floor(fraction x its training images), at least 1, taken as a "
    "prefix of one seeded random order: the same species and test split at every size, "
    "and each smaller set inside every larger one"
)


def subset_count(n_images: int, fraction: float) -> int:
    """Training images a species keeps at ``fraction``: floor(fraction × n), at least 1."""
    return max(1, min(n_images, math.floor(fraction * n_images + 1e-9)))


def read_train_rows(synth_root: Path) -> list[dict[str, str]]:
    path = synth_root / "train" / "metadata.csv"
    if not (synth_root / "species.csv").is_file() or not path.is_file():
        raise InputError(
            f"--data {synth_root}: not a SynthToL root (needs species.csv and train/metadata.csv)"
        )
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "species_id" not in rows[0]:
        raise InputError(f"{path}: no training images with a species_id column")
    return rows


def select_subsets(
    rows: Sequence[Mapping[str, str]], fractions: Sequence[float], seed: int
) -> dict[float, list[int]]:
    """Per fraction, the indices into ``rows`` it keeps (nested: smaller ⊂ larger).

    Each species' images are put in a seeded random order once (rows sorted by file path
    first, so the order does not depend on the CSV's), and each fraction keeps a prefix.
    """
    by_species: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_species.setdefault(str(row["species_id"]), []).append(index)
    rng = np.random.default_rng([seed, 7])
    order: dict[str, list[int]] = {}
    for sid in sorted(by_species, key=lambda s: (len(s), s)):
        members = sorted(by_species[sid], key=lambda i: rows[i]["filepath"])
        order[sid] = [members[int(i)] for i in rng.permutation(len(members))]
    return {
        f: sorted(i for ids in order.values() for i in ids[: subset_count(len(ids), f)])
        for f in fractions
    }


class _Samples(Sequence):
    """Shard samples for some training rows, read from disk when the writer asks."""

    def __init__(self, root: Path, rows: Sequence[Mapping[str, str]], indices: Sequence[int]):
        self._root, self._rows, self._indices = root, rows, list(indices)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int):
        from taxoclip.data import ShardSample
        from taxoclip.taxonomy import Lineage

        row = self._rows[self._indices[index]]
        path = self._root / "train" / row["filepath"]
        return ShardSample(
            key=Path(row["filepath"]).stem,
            jpg=path.read_bytes(),
            lineage=Lineage.from_mapping(row),
            common_name=row.get("common_name", ""),
            meta={
                "species_id": int(row["species_id"]),
                "sex": row.get("sex", ""),
                "life_stage": row.get("life_stage", ""),
            },
        )


def write_subset_shards(
    root: Path, rows: Sequence[Mapping[str, str]], indices: Sequence[int], out: Path, seed: int
) -> str:
    """The chosen training images as shards in ``out`` (sample order shuffled, seeded)."""
    from taxoclip.data import write_shards

    order = np.random.default_rng([seed, 11]).permutation(len(indices))
    chosen = [indices[int(i)] for i in order]
    n_shards = max(1, min(8, len(chosen) // 256))
    return write_shards(_Samples(root, rows, chosen), out, n_shards=n_shards).pattern


def check_counts(counts: list[int], fractions: list[float], batch_size: int) -> list[int]:
    """The images per size, refused when not strictly growing or under one batch."""
    if any(b <= a for a, b in zip(counts, counts[1:], strict=False)):
        raise UsageError(
            f"--sizes {fractions} give {counts} training images: not strictly growing "
            "(too few images per species for these fractions)"
        )
    if counts[0] < batch_size:
        raise UsageError(
            f"the smallest size has {counts[0]} training images, fewer than one batch of "
            f"{batch_size}; lower --batch-size or raise the smallest of --sizes"
        )
    return counts
