"""Rare Species (Hugging Face ``imageomics/rare_species``) in the three layouts it is
found in: the release, BioCLIP's annotation CSV, and the release's viewer CSV."""

from __future__ import annotations

from pathlib import Path

from taxoclip.errors import InputError
from taxoclip.evaluate.dataset import EvalSet
from taxoclip.taxonomy import Lineage, clean_name

from .common import (
    IMAGE_SUFFIXES,
    check_nonempty,
    keep_if_present,
    nfc,
    read_bioclip_csv,
    read_csv,
    require_columns,
    resolve,
)
from .registry import SPECIES_PROTOCOLS, register

#: The Rare Species release's catalog (Hugging Face ``imageomics/rare_species``).
RARE_SPECIES_CATALOG = "metadata/rarespecies-catalog.csv"
RARE_SPECIES_CATALOG_COLUMNS = (
    "rarespecies_id",
    "eol_content_id",
    "eol_page_id",
    "kingdom",
    "phylum",
    "class",
    "order",
    "family",
    "genus",
    "species",
    "sciName",
    "common",
)


def _label(lineage: Lineage, sci_name: str) -> str:
    """The class of a Rare Species image: its binomial (``sciName``, else genus + epithet)."""
    return nfc(sci_name) or lineage.species_binomial or lineage.scientific_name


def _catalog_lineage(row: dict[str, str]) -> Lineage:
    return Lineage.from_mapping({k: v for k, v in row.items() if k is not None})


def _read_release(path: Path) -> EvalSet:
    """The Hugging Face release: ``dataset/<Kingdom-…-species>/<eol_content_id>_<eol_page_id>
    _eol…jpg`` and ``metadata/rarespecies-catalog.csv``; each image is matched to its
    catalog row by the content id (and page id) its file name starts with."""
    catalog = path / RARE_SPECIES_CATALOG
    header, rows = read_csv(catalog)
    require_columns(
        catalog, header, ("eol_content_id", "eol_page_id", "kingdom", "genus", "species")
    )
    by_id: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        key = ((row.get("eol_content_id") or "").strip(), (row.get("eol_page_id") or "").strip())
        by_id[key] = row
    images = sorted(
        p
        for p in (path / "dataset").rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    paths, labels, lineages, commons, missing, seen = [], [], [], [], [], set()
    for image in images:
        parts = image.name.split("_")
        key = (parts[0], parts[1]) if len(parts) > 2 else ("", "")
        row = by_id.get(key)
        if row is None:
            missing.append((str(image.resolve()), f"not in {RARE_SPECIES_CATALOG}"))
            continue
        seen.add(key)
        lineage = _catalog_lineage(row)
        paths.append(str(image.resolve()))
        labels.append(_label(lineage, row.get("sciName") or ""))
        lineages.append(lineage)
        commons.append(clean_name(row.get("common")))
    for key in by_id.keys() - seen:
        missing.append((str((path / "dataset").resolve()), f"no image for catalog row {key}"))
    check_nonempty(path / "dataset", paths, missing)
    return EvalSet(
        name="rare_species",
        filepaths=paths,
        labels=labels,
        lineages=lineages,
        common_names=commons,
        missing=missing,
        extra={"source": str(catalog), "layout": "hf-release"},
    )


def _read_viewer_csv(csv_path: Path, path: Path) -> EvalSet:
    """The release's top-level ``metadata.csv`` (the Hugging Face viewer's imagefolder form:
    ``file_name`` relative to the release root, the catalog's rank columns and ``common``)."""
    header, rows = read_csv(csv_path)
    require_columns(csv_path, header, ("file_name", "genus", "species"))
    paths, labels, lineages, commons, missing = [], [], [], [], []
    for number, row in enumerate(rows, start=2):
        relative = (row.get("file_name") or "").strip()
        if not relative:
            raise InputError(f"{csv_path}: line {number} has an empty file_name")
        image = resolve(path, relative)
        if not keep_if_present(image, missing):
            continue
        lineage = _catalog_lineage(row)
        paths.append(str(image))
        labels.append(_label(lineage, row.get("sciName") or ""))
        lineages.append(lineage)
        commons.append(clean_name(row.get("common")))
    check_nonempty(csv_path, paths, missing)
    return EvalSet(
        name="rare_species",
        filepaths=paths,
        labels=labels,
        lineages=lineages,
        common_names=commons,
        missing=missing,
        extra={"source": str(csv_path), "layout": "hf-viewer-metadata"},
    )


@register(
    "rare_species",
    protocols=SPECIES_PROTOCOLS,
    markers=("metadata.csv", RARE_SPECIES_CATALOG),
    text_type="taxon_com",
    layout=(
        "Hugging Face release imageomics/rare_species: dataset/<Kingdom-…-species>/"
        "<eol_content_id>_<eol_page_id>_eol…jpg + metadata/rarespecies-catalog.csv; "
        "or BioCLIP's annotation metadata.csv "
        "(,kingdom,phylum,cls,order,family,genus,species,common_name,filepath,class) with "
        "image paths relative to it (Imageomics/bioclip data/annotation/rare_species/); "
        "or the release's top-level metadata.csv (file_name + catalog columns)"
    ),
)
def load_rare_species(path: Path) -> EvalSet:
    """Rare Species in any of its layouts, in this order:

    * the Hugging Face release ``imageomics/rare_species``: ``dataset/…`` +
      ``metadata/rarespecies-catalog.csv`` (columns :data:`RARE_SPECIES_CATALOG_COLUMNS`);
    * BioCLIP's annotation CSV ``metadata.csv`` (``,kingdom,phylum,cls,order,family,genus,
      species,common_name,filepath,class``; 11,983 rows, paths ``2024-03-20/<file>``) with
      images relative to it;
    * the release's own top-level ``metadata.csv`` (``file_name`` + catalog columns).
    """
    if (path / RARE_SPECIES_CATALOG).is_file() and (path / "dataset").is_dir():
        return _read_release(path)
    csv_path = path / "metadata.csv"
    header, _ = read_csv(csv_path)
    if "file_name" in header and "filepath" not in header:
        return _read_viewer_csv(csv_path, path)
    return read_bioclip_csv(csv_path, path, "rare_species")
