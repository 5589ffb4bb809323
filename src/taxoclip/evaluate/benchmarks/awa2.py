"""Animals with Attributes 2: 85 binary predicates per class, every image given its
class's row, on the standard train/test class split (BioCLIP 2's ``awa2.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from taxoclip.errors import InputError
from taxoclip.evaluate.dataset import EvalSet

from .common import IMAGE_SUFFIXES, check_nonempty, read_lines
from .registry import register


def strip_index(name: str) -> str:
    """``"1\\tantelope"`` or ``"antelope"`` → ``"antelope"`` (AwA2 list files)."""
    parts = name.split()
    return parts[-1] if len(parts) > 1 and parts[0].isdigit() else name.strip()


def _read_names(path: Path) -> list[str]:
    return [strip_index(line) for line in read_lines(path)]


def _read_matrix(matrix_txt: Path, classes_txt: Path, n_classes: int) -> np.ndarray:
    """The class × predicate 0/1 matrix, one row per class of ``classes.txt``."""
    rows = []
    for number, line in enumerate(read_lines(matrix_txt), start=1):
        try:
            rows.append([int(v) for v in line.split()])
        except ValueError:
            raise InputError(
                f"{matrix_txt}: line {number} is not whitespace-separated 0/1"
            ) from None
    widths = {len(r) for r in rows}
    if len(rows) != n_classes or len(widths) != 1:
        raise InputError(
            f"{matrix_txt}: needs one row per class in {classes_txt.name} ({n_classes}) of equal "
            f"width; has {len(rows)} rows of widths {sorted(widths)}"
        )
    matrix = np.asarray(rows, dtype=np.int8)
    if not np.isin(matrix, (0, 1)).all():
        raise InputError(f"{matrix_txt}: values must be 0 or 1")
    return matrix


@register(
    "awa2",
    protocols=("mlp_attributes_macro_f1",),
    markers=("predicate-matrix-binary.txt",),
    layout=(
        "AwA2 release (Animals_with_Attributes2): classes.txt, predicates.txt, "
        "predicate-matrix-binary.txt, trainclasses.txt, testclasses.txt, "
        "JPEGImages/<class>/*.jpg (cvml.ista.ac.at/AwA2; Imageomics/bioclip-2 "
        "src/evaluation/awa2.py)"
    ),
)
def load_awa2(path: Path) -> EvalSet:
    """AwA2 release (``Animals_with_Attributes2``): ``classes.txt``, ``predicates.txt``,
    ``predicate-matrix-binary.txt`` (50×85, space-separated 0/1), ``trainclasses.txt`` /
    ``testclasses.txt`` (the standard class split), images ``JPEGImages/<class>/*.jpg`` —
    the files BioCLIP 2's ``awa2.py`` reads. Each image gets its class's predicate row."""
    classes_txt = path / "classes.txt"
    classes = _read_names(classes_txt)
    predicates_txt = path / "predicates.txt"
    predicates = _read_names(predicates_txt) if predicates_txt.is_file() else None
    matrix = _read_matrix(path / "predicate-matrix-binary.txt", classes_txt, len(classes))
    if predicates is not None and len(predicates) != matrix.shape[1]:
        raise InputError(
            f"{predicates_txt}: {len(predicates)} predicates but the matrix has {matrix.shape[1]} columns"
        )
    row_of = {name: i for i, name in enumerate(classes)}
    paths, labels, splits, attribute_rows, missing = [], [], [], [], []
    for split, list_name in (("train", "trainclasses.txt"), ("test", "testclasses.txt")):
        list_path = path / list_name
        for class_name in _read_names(list_path):
            if class_name not in row_of:
                raise InputError(f"{list_path}: class {class_name!r} is not in {classes_txt.name}")
            class_dir = path / "JPEGImages" / class_name
            if not class_dir.is_dir():
                missing.append((str(class_dir.resolve()), "no such folder"))
                continue
            images = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            for image in images:
                paths.append(str(image.resolve()))
                labels.append(class_name)
                splits.append(split)
                attribute_rows.append(row_of[class_name])
    check_nonempty(path / "JPEGImages", paths, missing)
    return EvalSet(
        name="awa2",
        filepaths=paths,
        labels=labels,
        task_type="attributes",
        splits=splits,
        attributes=matrix[attribute_rows],
        attribute_names=predicates or [f"attribute_{i}" for i in range(matrix.shape[1])],
        missing=missing,
        extra={"classes": classes},
    )
