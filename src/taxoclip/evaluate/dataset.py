"""Evaluation data: one in-memory description every protocol and loader agrees on.

An :class:`EvalSet` is a list of images with whatever the benchmark defines for them: a
class label, a lineage (for hierarchical metrics), binary or continuous attributes, a
train/test split, and task ids (NeWT-style collections of binary tasks). Loaders for
published benchmarks and for ``metadata.csv`` folders all return one; protocols take
its arrays plus image features.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taxoclip.errors import InputError
from taxoclip.taxonomy import RANK_NAMES, Lineage

#: What an EvalSet is for, so the runner picks the protocols.
TASK_TYPES = (
    "species",  # zero-shot / few-shot over class labels (and lineages if present)
    "attributes",  # multi-label binary attributes per image (FishNet, AwA2)
    "binary_tasks",  # many binary tasks, each with its own images and split (NeWT)
    "category_discovery",  # generalized category discovery (Herbarium19)
)


@dataclass
class EvalSet:
    """Images of one benchmark with their ground truth; paths are absolute."""

    name: str
    filepaths: list[str]
    labels: list[str]
    task_type: str = "species"
    lineages: list[Lineage] | None = None
    common_names: list[str] | None = None
    splits: list[str] | None = None  # "train" / "test" where the benchmark defines them
    attributes: np.ndarray | None = None  # (N, A)
    attribute_names: list[str] | None = None
    task_ids: list[str] | None = None  # binary_tasks: the task each image belongs to
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"known_classes": [...]}
    missing: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) skipped

    def __post_init__(self) -> None:
        if self.task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {TASK_TYPES}, got {self.task_type!r}")
        n = len(self.filepaths)
        for name in ("labels", "lineages", "common_names", "splits", "task_ids"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{self.name}: {name} has {len(value)} entries for {n} images")
        if self.attributes is not None and len(self.attributes) != n:
            raise ValueError(
                f"{self.name}: attributes have {len(self.attributes)} rows for {n} images"
            )

    def __len__(self) -> int:
        return len(self.filepaths)

    @property
    def classes(self) -> list[str]:
        """Distinct labels in first-seen order."""
        return list(dict.fromkeys(self.labels))

    def subset(self, keep: np.ndarray | list[bool]) -> EvalSet:
        mask = np.asarray(keep, dtype=bool)
        pick = np.flatnonzero(mask)

        def take(values):
            return None if values is None else [values[i] for i in pick]

        return EvalSet(
            name=self.name,
            filepaths=take(self.filepaths),
            labels=take(self.labels),
            task_type=self.task_type,
            lineages=take(self.lineages),
            common_names=take(self.common_names),
            splits=take(self.splits),
            attributes=None if self.attributes is None else self.attributes[pick],
            attribute_names=self.attribute_names,
            task_ids=take(self.task_ids),
            extra=dict(self.extra),
            missing=list(self.missing),
        )


def read_metadata_folder(folder: str | Path, name: str | None = None) -> EvalSet:
    """A folder with ``metadata.csv`` (``filepath,class`` + optional rank columns, with the
    class rank as ``class_``, and ``common_name``); paths relative to the CSV.

    Rows whose image is missing are reported in ``missing`` and left out, never fatal.
    """
    folder = Path(folder)
    metadata = folder / "metadata.csv"
    if not metadata.is_file():
        raise InputError(f"evaluation folder {folder}: no metadata.csv")
    with metadata.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        if not {"filepath", "class"} <= columns:
            raise InputError(
                f"{metadata}: needs columns filepath and class (has {sorted(columns)})"
            )
        rows = list(reader)
    has_lineage = bool(({*RANK_NAMES, "class_", "species_epithet"} - {"class"}) & columns)
    paths, labels, lineages, commons, extra_columns, missing = [], [], [], [], {}, []
    other = [c for c in reader.fieldnames or [] if c not in {"filepath", "class", "common_name"}]
    for row in rows:
        path = (folder / row["filepath"]).resolve()
        if not path.is_file():
            missing.append((str(path), "no such file"))
            continue
        paths.append(str(path))
        labels.append(row["class"])
        commons.append(row.get("common_name", "") or "")
        if has_lineage:
            lineages.append(Lineage.from_mapping({k: v for k, v in row.items() if k != "class"}))
        for column in other:
            extra_columns.setdefault(column, []).append(row.get(column, ""))
    if not paths:
        raise InputError(f"{metadata}: none of its {len(rows)} images exist")
    return EvalSet(
        name=name or folder.name,
        filepaths=paths,
        labels=labels,
        lineages=lineages if has_lineage else None,
        common_names=commons,
        extra={"columns": extra_columns},
        missing=missing,
    )
