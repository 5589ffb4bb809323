"""IDLE-OO Camera Traps (Hugging Face ``imageomics/IDLE-OO-Camera-Traps``): five sets, each
a ``<set>-balanced.csv`` at the top with images under ``data/test/<set>/``; a suite of
sets, each loaded on its own."""

from __future__ import annotations

from pathlib import Path

from taxoclip.errors import InputError
from taxoclip.evaluate.dataset import EvalSet
from taxoclip.taxonomy import Lineage, clean_name

from .common import (
    check_nonempty,
    keep_if_present,
    lineage_of,
    nfc,
    read_csv,
    require_columns,
    resolve,
)
from .registry import SPECIES_PROTOCOLS, Part, register

#: The five IDLE-OO Camera Traps sets (dataset card; bioclip-2 slurm/eval.sh).
CAMERA_TRAP_SETS = ("desert-lion", "ENA24", "island", "ohio-small-animals", "orinoquia")

#: The released ``<set>-balanced.csv`` header up to ``filepath`` (IDLE-OO Camera Traps on
#: Hugging Face; the released files hold 352, 1120, 310, 468 and 336 rows). There is no
#: ``class`` column: BioCLIP 2 builds the class from the ranks and ``common_name``
#: (``--text_type taxon_com``, Imageomics/bioclip-2 ``slurm/eval.sh``).
CAMERA_TRAP_COLUMNS = (
    "url_gcp",
    "url_aws",
    "url_azure",
    "image_id",
    "sequence_id",
    "location_id",
    "frame_num",
    "original_label",
    "scientific_name",
    "common_name",
    "kingdom",
    "phylum",
    "cls",
    "order",
    "family",
    "genus",
    "species",
    "filepath",
)


def taxon_com(lineage: Lineage, common: str) -> str:
    """BioCLIP's ``taxon_com`` text: the present ranks, then ``with common name …``."""
    taxon = lineage.taxonomic_name
    return f"{taxon} with common name {common}" if common else taxon


def camera_trap_sets(path: Path) -> list[str]:
    """The sets of :data:`CAMERA_TRAP_SETS` whose ``<set>-balanced.csv`` is under ``path``."""
    return [s for s in CAMERA_TRAP_SETS if (path / f"{s}-balanced.csv").is_file()]


def _absent(folder: Path) -> str | None:
    return None if camera_trap_sets(folder) else "holds no <set>-balanced.csv"


def _sets(folder: Path) -> list[Part]:
    return [
        (f"camera_trap/{s}", lambda s=s: load_camera_trap_set(folder, s))
        for s in camera_trap_sets(folder)
    ]


def _image_root(path: Path, set_name: str, first: str) -> Path:
    """Where ``filepath`` (``<set>/<uuid>.png``) is relative to: ``data/test/`` in the
    release; ``images/`` as bioclip-2's ``slurm/eval.sh`` lays it out; for older files whose
    paths lack the set folder, ``data/test/<set>/`` or ``images/<set>/``."""
    candidates = [
        path / "data" / "test",
        path / "images",
        path,
        path / "data" / "test" / set_name,
        path / "images" / set_name,
    ]
    for base in candidates:
        if first and (base / first).is_file():
            return base
    return candidates[0]


def load_camera_trap_set(path: Path, set_name: str) -> EvalSet:
    """One IDLE-OO Camera Traps set: ``<set>-balanced.csv`` (columns
    :data:`CAMERA_TRAP_COLUMNS`, rank ``cls`` for class) with images under ``data/test/``.
    The class is the ``taxon_com`` string built from the ranks and ``common_name`` (a
    ``class`` column, as in BioCLIP-style CSVs, is used when present)."""
    csv_path = path / f"{set_name}-balanced.csv"
    header, rows = read_csv(csv_path)
    require_columns(csv_path, header, ("filepath",))
    if "class" not in header:
        require_columns(csv_path, header, ("kingdom", "genus", "species", "common_name"))
    first = next((r.get("filepath", "").strip() for r in rows if r.get("filepath")), "")
    image_root = _image_root(path, set_name, first)
    paths, labels, lineages, commons, missing = [], [], [], [], []
    for number, row in enumerate(rows, start=2):
        relative = (row.get("filepath") or "").strip()
        if not relative:
            raise InputError(f"{csv_path}: line {number} has an empty filepath")
        lineage = lineage_of(row)
        common = clean_name(row.get("common_name"))
        label = nfc(row.get("class") or "") if "class" in header else taxon_com(lineage, common)
        if not label:
            raise InputError(f"{csv_path}: line {number} has no ranks, common name or class")
        image = resolve(image_root, relative)
        if not keep_if_present(image, missing):
            continue
        paths.append(str(image))
        labels.append(label)
        lineages.append(lineage)
        commons.append(common)
    check_nonempty(csv_path, paths, missing)
    return EvalSet(
        name=f"camera_trap/{set_name}",
        filepaths=paths,
        labels=labels,
        lineages=lineages,
        common_names=commons,
        missing=missing,
        extra={"source": str(csv_path), "image_root": str(image_root)},
    )


@register(
    "camera_trap",
    protocols=SPECIES_PROTOCOLS,
    text_type="taxon_com",
    absent=_absent,
    sets=_sets,
    layout=(
        "IDLE-OO Camera Traps release: <set>-balanced.csv for desert-lion, ENA24, island, "
        "ohio-small-animals, orinoquia (url_gcp … common_name, kingdom, phylum, cls, "
        "order, family, genus, species, filepath; no class column: the class is the "
        "taxon_com text of the ranks and common_name); filepath <set>/<uuid>.png "
        "relative to data/test/ (HF dataset card) or images/ (bioclip-2 slurm/eval.sh)"
    ),
)
def load_camera_trap(path: Path) -> list[EvalSet]:
    """IDLE-OO Camera Traps: every ``<set>-balanced.csv`` present (see
    :func:`load_camera_trap_set`)."""
    present = camera_trap_sets(path)
    if not present:
        raise InputError(f"{path}: no <set>-balanced.csv for any of {list(CAMERA_TRAP_SETS)}")
    return [load_camera_trap_set(path, s) for s in present]
