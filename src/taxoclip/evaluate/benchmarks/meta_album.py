"""Meta-Album's seven "Mini" sets BioCLIP (2) uses, each in BioCLIP's ``metadata.csv``
form or the Meta-Album release form (meta-album.github.io); a suite of sets, each loaded
on its own."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from taxoclip.errors import InputError
from taxoclip.evaluate.dataset import EvalSet

from .common import (
    check_nonempty,
    keep_if_present,
    nfc,
    read_bioclip_csv,
    read_csv,
    require_columns,
    resolve,
)
from .registry import SPECIES_PROTOCOLS, Part, register

#: Our folder name → Meta-Album "Mini" dataset code, for the seven sets BioCLIP (2) uses
#: (Imageomics/bioclip-2 slurm/eval.sh; Imageomics/bioclip data/annotation/meta-album/).
META_ALBUM_SETS: dict[str, str] = {
    "plankton": "PLK_Mini",
    "insects": "INS_Mini",
    "insects2": "INS_2_Mini",
    "plantnet": "PLT_NET_Mini",
    "fungi": "FNG_Mini",
    "plant_village": "PLT_VIL_Mini",
    "medicinal_leaf": "MED_LF_Mini",
}

#: Meta-Album's ``info.json`` keys naming the columns of ``labels.csv`` (with the defaults
#: of the release format, ``DataFormat/check_data_format.py`` in ihsaan-ullah/meta-album).
META_ALBUM_INFO_DEFAULTS = {
    "image_column_name": "FILE_NAME",
    "category_column_name": "CATEGORY",
    "super_category_column_name": "SUPER_CATEGORY",
}


def meta_album_dirs(path: Path) -> list[tuple[str, Path]]:
    """(our name, folder) of each set present: ``<ours>/``, ``<CODE>/`` or, as BioCLIP 2's
    ``slurm/eval.sh`` has them, ``set<k>/<CODE>/``."""
    found = []
    for ours, code in META_ALBUM_SETS.items():
        candidates = [path / ours, path / code, *sorted(path.glob(f"set*/{code}"))]
        for candidate in candidates:
            if candidate.is_dir():
                found.append((ours, candidate))
                break
    return found


def _absent(folder: Path) -> str | None:
    return None if meta_album_dirs(folder) else f"holds none of {list(META_ALBUM_SETS)}"


def _sets(folder: Path) -> list[Part]:
    return [
        (f"meta_album/{ours}", lambda d=d, o=ours: load_meta_album_set(d, o))
        for ours, d in meta_album_dirs(folder)
    ]


def _meta_album_info(folder: Path) -> dict:
    info_path = folder / "info.json"
    if not info_path.is_file():
        return {}
    try:
        info = json.loads(info_path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{info_path}: not readable JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise InputError(f"{info_path}: must hold a JSON object")
    return info


def _read_labels(labels_csv: Path, tabs: bool) -> tuple[list[str], list[dict[str, str]]]:
    """``labels.csv``: comma-separated, or tab-separated when ``info.json`` says so."""
    if not tabs:
        return read_csv(labels_csv)
    try:
        text = labels_csv.read_text(encoding="utf-8-sig")
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t")
        return list(reader.fieldnames or []), list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{labels_csv}: cannot read ({exc})") from exc


def _read_meta_album_release(folder: Path, name: str) -> EvalSet:
    """Meta-Album's release form: ``labels.csv`` (``FILE_NAME, CATEGORY, SUPER_CATEGORY``, or
    the names ``info.json`` gives; tab-separated when it says ``csv_with_tab``) with images
    under ``images/`` (or the set folder when ``images_in_sub_folder`` is false)."""
    labels_csv = folder / "labels.csv"
    info = _meta_album_info(folder)
    columns = {k: str(info.get(k) or v) for k, v in META_ALBUM_INFO_DEFAULTS.items()}
    header, rows = _read_labels(labels_csv, tabs=bool(info.get("csv_with_tab")))
    image_column, category_column = columns["image_column_name"], columns["category_column_name"]
    require_columns(labels_csv, header, (image_column, category_column))
    super_column = columns["super_category_column_name"]
    image_root = folder if info.get("images_in_sub_folder") is False else folder / "images"
    paths, labels, supers, missing = [], [], [], []
    for number, row in enumerate(rows, start=2):
        file_name = (row.get(image_column) or "").strip()
        category = nfc(row.get(category_column) or "")
        if not file_name or not category:
            raise InputError(
                f"{labels_csv}: line {number} has an empty {image_column} or {category_column}"
            )
        image = resolve(image_root, file_name)
        if not keep_if_present(image, missing):
            continue
        paths.append(str(image))
        labels.append(category)
        supers.append(nfc(row.get(super_column) or ""))
    check_nonempty(labels_csv, paths, missing)
    extra = {"source": str(labels_csv), "layout": "meta-album release"}
    if super_column in header:
        extra["super_categories"] = supers
    return EvalSet(
        name=f"meta_album/{name}", filepaths=paths, labels=labels, missing=missing, extra=extra
    )


def load_meta_album_set(folder: Path, name: str) -> EvalSet:
    """One Meta-Album set, in either layout (class names NFC-normalised in both):

    * BioCLIP: ``metadata.csv`` (``,filepath,class``, paths ``<class>/<file>``) relative to
      ``val/`` if that folder exists, else to the set folder (bioclip-2 ``slurm/eval.sh``
      points ``data_root`` at ``<SET>/val``);
    * the Meta-Album release: ``labels.csv`` + ``info.json`` + ``images/``
      (meta-album.github.io format; see :func:`_read_meta_album_release`).
    """
    if (folder / "metadata.csv").is_file():
        root = folder / "val" if (folder / "val").is_dir() else folder
        return read_bioclip_csv(folder / "metadata.csv", root, f"meta_album/{name}")
    if not (folder / "labels.csv").is_file():
        raise InputError(f"{folder}: neither metadata.csv (BioCLIP) nor labels.csv (Meta-Album)")
    return _read_meta_album_release(folder, name)


@register(
    "meta_album",
    protocols=SPECIES_PROTOCOLS,
    absent=_absent,
    sets=_sets,
    layout=(
        "meta_album/<set>/ for set in plankton, insects, insects2, plantnet, fungi, "
        "plant_village, medicinal_leaf (or the Meta-Album codes PLK_Mini … MED_LF_Mini): "
        "BioCLIP metadata.csv (,filepath,class) with images under val/ or the set folder "
        "(Imageomics/bioclip data/annotation/meta-album, bioclip-2 slurm/eval.sh), or the "
        "Meta-Album release labels.csv (FILE_NAME, CATEGORY) + images/"
    ),
)
def load_meta_album(path: Path) -> list[EvalSet]:
    """Every Meta-Album set present under ``ROOT/meta_album`` (see :data:`META_ALBUM_SETS`)."""
    found = meta_album_dirs(path)
    if not found:
        known = ", ".join(f"{a} (or {b})" for a, b in META_ALBUM_SETS.items())
        raise InputError(f"{path}: none of the Meta-Album sets is present: {known}")
    return [load_meta_album_set(folder, ours) for ours, folder in found]
