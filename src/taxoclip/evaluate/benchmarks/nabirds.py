"""NABirds (dl.allaboutbirds.org/nabirds): the release's text files, or BioCLIP 2's
``metadata.csv`` (Imageomics/bioclip-2 ``slurm/eval.sh``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from taxoclip.errors import InputError
from taxoclip.evaluate.dataset import EvalSet

from .common import check_nonempty, keep_if_present, read_bioclip_csv, read_lines
from .registry import SPECIES_PROTOCOLS, register


def split_pairs(path: Path, lines: Iterable[str]) -> list[tuple[str, str]]:
    """``"<key> <value with spaces>"`` lines (the CUB/NABirds .txt format)."""
    pairs = []
    for number, line in enumerate(lines, start=1):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise InputError(f"{path}: line {number} should be '<id> <value>', got {line!r}")
        pairs.append((parts[0], parts[1].strip()))
    return pairs


def _read_pairs(path: Path) -> dict[str, str]:
    return dict(split_pairs(path, read_lines(path)))


def _read_splits(split_txt: Path) -> dict[str, str]:
    """Image id → ``train`` / ``test`` from ``train_test_split.txt`` (empty without one)."""
    if not split_txt.is_file():
        return {}
    splits = {}
    for image_id, flag in split_pairs(split_txt, read_lines(split_txt)):
        if flag not in {"0", "1"}:
            raise InputError(f"{split_txt}: is_training_image must be 0 or 1, got {flag!r}")
        splits[image_id] = "train" if flag == "1" else "test"
    return splits


@register(
    "nabirds",
    protocols=SPECIES_PROTOCOLS,
    markers=("images", "metadata.csv"),
    layout=(
        "NABirds release: images.txt, classes.txt, image_class_labels.txt, "
        "train_test_split.txt, images/<dir>/<file>.jpg (dl.allaboutbirds.org/nabirds); "
        "or BioCLIP 2's metadata.csv (,filepath,class) with paths under images/ "
        "(Imageomics/bioclip-2 slurm/eval.sh)"
    ),
)
def load_nabirds(path: Path) -> EvalSet:
    """NABirds: the release's ``images.txt``/``classes.txt``/``image_class_labels.txt``/
    ``train_test_split.txt`` with ``images/``; or, when ``metadata.csv`` is present,
    BioCLIP 2's ``metadata.csv`` with paths relative to ``images/``."""
    if (path / "metadata.csv").is_file():
        return read_bioclip_csv(path / "metadata.csv", path / "images", "nabirds")
    images_txt = path / "images.txt"
    id_to_file = _read_pairs(images_txt)
    classes_txt = path / "classes.txt"
    class_names = _read_pairs(classes_txt)
    labels_txt = path / "image_class_labels.txt"
    id_to_class = _read_pairs(labels_txt)
    id_to_split = _read_splits(path / "train_test_split.txt")
    paths, labels, splits, missing = [], [], [], []
    for image_id, relative in id_to_file.items():
        if image_id not in id_to_class:
            raise InputError(f"{labels_txt}: no class for image id {image_id}")
        class_id = id_to_class[image_id]
        if class_id not in class_names:
            raise InputError(f"{classes_txt}: no class id {class_id} (used by image {image_id})")
        image = (path / "images" / relative).resolve()
        if not keep_if_present(image, missing):
            continue
        paths.append(str(image))
        labels.append(class_names[class_id])
        splits.append(id_to_split.get(image_id, "test"))
    check_nonempty(images_txt, paths, missing)
    return EvalSet(
        name="nabirds",
        filepaths=paths,
        labels=labels,
        splits=splits if id_to_split else None,
        missing=missing,
        extra={"class_ids": {v: k for k, v in class_names.items()}},
    )
