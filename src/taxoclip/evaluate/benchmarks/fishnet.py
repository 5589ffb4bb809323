"""FishNet: per-image ecological attributes, read by column position as BioCLIP 2's
``fishnet.py`` reads them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from taxoclip.errors import InputError
from taxoclip.evaluate.dataset import EvalSet

from .common import check_nonempty, keep_if_present
from .registry import register

#: FishNet attribute columns as BioCLIP 2's fishnet.py names them; ``FeedingPath`` is
#: ``pelagic`` (1) / ``benthic`` (0), the rest 0/1.
FISHNET_ATTRIBUTES = (
    "FeedingPath",
    "Tropical",
    "Temperate",
    "Subtropical",
    "Boreal",
    "Polar",
    "freshwater",
    "saltwater",
    "brackish",
)
# fishnet.py reads rows of ``pl.read_csv(...).with_row_index()``, whose first column is the
# added row index, and takes the image from position 4 and the folder from position 13 of
# that row: positions 3 and 12 of the CSV itself (0-based).
_IMAGE_COLUMN = 3
_FOLDER_COLUMN = 12


def _value(csv_path: Path, number: int, column: str, value: str) -> int | None:
    """One attribute cell as 0/1 (None when empty: the row is dropped, as there)."""
    value = value.strip()
    if value == "":
        return None
    if column == "FeedingPath":
        if value == "pelagic":
            return 1
        if value == "benthic":
            return 0
        raise InputError(
            f"{csv_path}: line {number}: FeedingPath must be pelagic or benthic, got {value!r}"
        )
    try:
        number_value = float(value)
    except ValueError:
        raise InputError(
            f"{csv_path}: line {number}: {column} must be 0/1, got {value!r}"
        ) from None
    if number_value not in (0.0, 1.0):
        raise InputError(f"{csv_path}: line {number}: {column} must be 0/1, got {value!r}")
    return int(number_value)


def _read_table(csv_path: Path) -> list[list[str]]:
    """The rows of ``train.csv`` / ``test.csv``, header first (read by position)."""
    if not csv_path.is_file():
        raise InputError(f"{csv_path}: no such file (FishNet needs train.csv and test.csv)")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            table = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{csv_path}: cannot read ({exc})") from exc
    if not table:
        raise InputError(f"{csv_path}: empty, no header row")
    return table


@register(
    "fishnet",
    protocols=("mlp_attributes_exact_match",),
    markers=("train.csv",),
    layout=(
        "FishNet as BioCLIP 2 reads it: train.csv/test.csv, image in CSV column 3 "
        "(basename), folder in column 12 (0-based; fishnet.py's 4/13 count a prepended "
        "row index), attribute columns by name (FeedingPath pelagic/benthic, "
        "Tropical … brackish 0/1); images Image_Library/<folder>/<file> "
        "(Imageomics/bioclip-2 src/evaluation/fishnet.py)"
    ),
)
def load_fishnet(path: Path) -> EvalSet:
    """FishNet as BioCLIP 2's ``fishnet.py`` reads it: ``train.csv`` and ``test.csv``; image
    = ``Image_Library/<CSV column 12>/<basename of CSV column 3>`` (0-based); attributes =
    the columns named in :data:`FISHNET_ATTRIBUTES`. Rows with an empty attribute are
    dropped, as there. Label = the image's folder (column 12)."""
    paths, labels, splits, rows_out, missing = [], [], [], [], []
    dropped = 0
    for split in ("train", "test"):
        csv_path = path / f"{split}.csv"
        table = _read_table(csv_path)
        header = table[0]
        absent = [c for c in FISHNET_ATTRIBUTES if c not in header]
        if absent:
            raise InputError(f"{csv_path}: missing attribute column(s) {absent}")
        positions = [header.index(c) for c in FISHNET_ATTRIBUTES]
        want = max([*positions, _FOLDER_COLUMN]) + 1
        for number, row in enumerate(table[1:], start=2):
            if len(row) < want:
                raise InputError(f"{csv_path}: line {number} has {len(row)} fields, needs {want}")
            values = [
                _value(csv_path, number, column, row[position])
                for column, position in zip(FISHNET_ATTRIBUTES, positions, strict=True)
            ]
            if any(v is None for v in values):
                dropped += 1
                continue
            folder = row[_FOLDER_COLUMN].strip()
            image_name = row[_IMAGE_COLUMN].strip().split("/")[-1]
            if not folder or not image_name:
                raise InputError(f"{csv_path}: line {number} has an empty image or folder")
            image = (path / "Image_Library" / folder / image_name).resolve()
            if not keep_if_present(image, missing):
                continue
            paths.append(str(image))
            labels.append(folder)
            splits.append(split)
            rows_out.append(values)
    check_nonempty(path, paths, missing)
    return EvalSet(
        name="fishnet",
        filepaths=paths,
        labels=labels,
        task_type="attributes",
        splits=splits,
        attributes=np.asarray(rows_out, dtype=np.int8),
        attribute_names=list(FISHNET_ATTRIBUTES),
        missing=missing,
        extra={"dropped_rows_without_attributes": dropped},
    )
