"""Writing the Darwin Core Archive (directory form) and the truth rows of its media.

truth.csv identifies a record as (gbifID, media_index: n-th media row of that gbifID, from
0); ``duplicate_of`` is the original's gbifID, ``leak_of`` the test image's path relative
to OUT, ``species_id`` is empty for images that show no organism (corrupt, bomb, label).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from taxoclip.records import REJECT_STAGES, STATUS_EXACT

from .images import media_bytes
from .occurrences import Media, Occurrence
from .spec import GIVEN_RANK_COLUMNS, REJECT_STAGE, STATUS_BY_FAULT, write_tsv

OCCURRENCE_COLUMNS = (
    "gbifID",
    "basisOfRecord",
    "scientificName",
    "kingdom",
    "phylum",
    "class",
    "order",
    "family",
    "genus",
    "vernacularName",
    "eventRemarks",
    "publisher",
    "license",
)
MULTIMEDIA_COLUMNS = ("gbifID", "type", "format", "identifier", "license", "publisher")
TRUTH_COLUMNS = (
    "gbifID",
    "media_index",
    "file",
    "species_id",
    "true_name",
    "faults",
    "duplicate_of",
    "leak_of",
    "category",
    "expected",
    "expected_stage",
    "expected_status",
)

_DWC = "http://rs.tdwg.org/dwc/terms/"
_DC = "http://purl.org/dc/terms/"
_GBIF = "http://rs.gbif.org/terms/1.0/"
_TERMS = {
    "gbifID": _GBIF + "gbifID",
    "publisher": _DC + "publisher",
    "license": _DC + "license",
    "type": _DC + "type",
    "format": _DC + "format",
    "identifier": _DC + "identifier",
}


def write_archive(
    root: Path,
    folder: Path,
    occurrences: list[Occurrence],
    rng: np.random.Generator,
    progress: bool,
) -> list[dict[str, str]]:
    """Write the DwC-A; returns the truth rows, one per multimedia row, in file order."""
    (folder / "media").mkdir(parents=True, exist_ok=True)
    occurrence_rows, media_rows, truth = [], [], []
    total = sum(len(o.media) for o in occurrences)
    with tqdm(total=total, unit="img", desc="raw source", disable=not progress) as bar:
        for occ in occurrences:
            occurrence_rows.append(_occurrence_row(occ))
            for index, media in enumerate(occ.media):
                data, extension = media_bytes(root, occ, media, rng)
                media.data = data
                media.identifier = f"media/{len(media_rows):07d}.{extension}"
                (folder / media.identifier).write_bytes(data)
                media_rows.append(
                    {
                        "gbifID": str(occ.gbif_id),
                        "type": "StillImage",
                        "format": "image/png" if extension == "png" else "image/jpeg",
                        "identifier": media.identifier,
                        "license": occ.license,
                        "publisher": occ.publisher,
                    }
                )
                truth.append(_truth_row(occ, index, media))
                bar.update()
    write_tsv(folder / "occurrence.txt", OCCURRENCE_COLUMNS, occurrence_rows)
    write_tsv(folder / "multimedia.txt", MULTIMEDIA_COLUMNS, media_rows)
    (folder / "meta.xml").write_text(_meta_xml(), encoding="utf-8")
    return truth


def _occurrence_row(occ: Occurrence) -> dict[str, str]:
    return {
        "gbifID": str(occ.gbif_id),
        "basisOfRecord": occ.basis_of_record,
        "scientificName": occ.scientific_name,
        **dict(zip(GIVEN_RANK_COLUMNS, occ.ranks, strict=True)),
        "vernacularName": occ.vernacular,
        "eventRemarks": occ.event_remarks,
        "publisher": occ.publisher,
        "license": occ.license,
    }


def _truth_row(occ: Occurrence, index: int, media: Media) -> dict[str, str]:
    faults = [f for f in (occ.name_fault, media.fault) if f]
    stages = [REJECT_STAGE[f] for f in faults if f in REJECT_STAGE]
    stage = min(stages, key=REJECT_STAGES.index) if stages else ""
    return {
        "gbifID": str(occ.gbif_id),
        "media_index": str(index),
        "file": media.identifier,
        "species_id": "" if occ.junk else str(occ.species.species_id),
        "true_name": occ.true_name,
        "faults": ";".join(faults),
        "duplicate_of": str(media.original.gbif_id) if media.original else "",
        "leak_of": occ.leak_of,
        "category": occ.category,
        "expected": "reject" if stage else "keep",
        "expected_stage": stage,
        "expected_status": STATUS_BY_FAULT.get(occ.name_fault, STATUS_EXACT),
    }


def _meta_xml() -> str:
    def fields(columns: Sequence[str]) -> str:
        return "".join(
            f'    <field index="{i}" term="{_TERMS.get(c, _DWC + c)}"/>\n'
            for i, c in enumerate(columns)
        )

    files = (
        'encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" '
        'fieldsEnclosedBy="" ignoreHeaderLines="1"'
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<archive xmlns="http://rs.tdwg.org/dwc/text/" metadata="">\n'
        f'  <core {files} rowType="{_DWC}Occurrence">\n'
        "    <files><location>occurrence.txt</location></files>\n"
        '    <id index="0"/>\n'
        f"{fields(OCCURRENCE_COLUMNS)}"
        "  </core>\n"
        f'  <extension {files} rowType="{_GBIF}Multimedia">\n'
        "    <files><location>multimedia.txt</location></files>\n"
        '    <coreid index="0"/>\n'
        f"{fields(MULTIMEDIA_COLUMNS)}"
        "  </extension>\n"
        "</archive>\n"
    )
