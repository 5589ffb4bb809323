"""NeWT 2021: many binary tasks over one image pool, as BioCLIP 2's ``newt.py`` reads it."""

from __future__ import annotations

from pathlib import Path

from taxoclip.errors import InputError
from taxoclip.evaluate.dataset import EvalSet

from .common import check_nonempty, keep_if_present, read_csv, require_columns
from .registry import register


@register(
    "newt",
    protocols=("svm_binary_tasks",),
    markers=("newt2021_labels.csv",),
    layout=(
        "NeWT 2021 release: newt2021_labels.csv (id, task, label, split, task_cluster, "
        "task_subcluster) + newt2021_images/<id>.jpg (Imageomics/bioclip-2 "
        "src/evaluation/newt.py)"
    ),
)
def load_newt(path: Path) -> EvalSet:
    """NeWT 2021 release: ``newt2021_labels.csv`` (``id``, ``task``, ``label`` 0/1,
    ``split`` train/test, ``task_cluster``, ``task_subcluster``) and
    ``newt2021_images/<id>.jpg`` — as BioCLIP 2's ``newt.py`` reads it."""
    csv_path = path / "newt2021_labels.csv"
    header, rows = read_csv(csv_path)
    require_columns(csv_path, header, ("id", "task", "label", "split"))
    paths, labels, splits, tasks, clusters, subclusters, missing = [], [], [], [], [], [], []
    for number, row in enumerate(rows, start=2):
        image_id = (row.get("id") or "").strip()
        label = (row.get("label") or "").strip()
        split = (row.get("split") or "").strip()
        task = (row.get("task") or "").strip()
        if not image_id or not task:
            raise InputError(f"{csv_path}: line {number} has an empty id or task")
        if label not in {"0", "1"}:
            raise InputError(f"{csv_path}: line {number}: label must be 0 or 1, got {label!r}")
        if split not in {"train", "test"}:
            raise InputError(
                f"{csv_path}: line {number}: split must be train or test, got {split!r}"
            )
        image = (path / "newt2021_images" / f"{image_id}.jpg").resolve()
        if not keep_if_present(image, missing):
            continue
        paths.append(str(image))
        labels.append(label)
        splits.append(split)
        tasks.append(task)
        clusters.append((row.get("task_cluster") or "").strip())
        subclusters.append((row.get("task_subcluster") or "").strip() or "none")
    check_nonempty(csv_path, paths, missing)
    return EvalSet(
        name="newt",
        filepaths=paths,
        labels=labels,
        task_type="binary_tasks",
        splits=splits,
        task_ids=tasks,
        missing=missing,
        extra={"task_cluster": clusters, "task_subcluster": subclusters},
    )
