"""PlantDoc (github.com/pratikkayal/PlantDoc-Dataset): train/test image folders of plant
diseases, scored 1-shot as BioCLIP 2's ``plantdoc.py`` does."""

from __future__ import annotations

from pathlib import Path

from taxoclip.errors import InputError
from taxoclip.evaluate.dataset import EvalSet

from .common import check_nonempty, image_folder
from .registry import register


@register(
    "plantdoc",
    protocols=("few_shot_1",),
    markers=("train",),
    layout=(
        "PlantDoc-Dataset release: train/<class>/, test/<class>/ "
        "(github.com/pratikkayal/PlantDoc-Dataset; Imageomics/bioclip-2 "
        "src/evaluation/plantdoc.py)"
    ),
)
def load_plantdoc(path: Path) -> EvalSet:
    """PlantDoc classification release (``pratikkayal/PlantDoc-Dataset``): ``train/<class>/``
    and ``test/<class>/`` image folders, as BioCLIP 2's ``plantdoc.py`` reads them."""
    paths, labels, splits = [], [], []
    for split in ("train", "test"):
        folder = path / split
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder (PlantDoc needs train/ and test/)")
        split_paths, split_labels = image_folder(folder)
        paths += split_paths
        labels += split_labels
        splits += [split] * len(split_paths)
    check_nonempty(path, paths, [])
    return EvalSet(name="plantdoc", filepaths=paths, labels=labels, splits=splits)
