"""``write_raw_source``: the raw source of a SynthToL just generated, and its manifest."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from taxoclip.records import REJECT_STAGES

from ..config import SynthConfig
from ..tree import Species
from .backbone import Backbone, build_backbone, write_backbone
from .dwca import TRUTH_COLUMNS, write_archive
from .occurrences import Occurrence, plan_records
from .spec import (
    CATEGORY_WEIGHTS,
    CORRUPT_KINDS,
    EXTRA_FAULT_RATES,
    FAULTS,
    HOMONYM_SPECIES_RATE,
    MODE_FAULT_RATES,
    NAME_FAULT_RATES,
    RAW_FORMAT_VERSION,
    SYNONYM_SPECIES_RATE,
    TWO_MEDIA_RATE,
    raw_rng,
)


def write_raw_source(
    root: Path, species: list[Species], config: SynthConfig, progress: bool = False
) -> dict[str, object]:
    """Write ``root/raw/`` from the SynthToL just generated in ``root``; returns its counts."""
    root = Path(root)
    raw = root / "raw"
    train, test = _read_splits(root / "images.csv")
    backbone = build_backbone(species, config.seed)
    occurrences = plan_records(species, train, test, backbone, raw_rng(config.seed, 1))
    write_backbone(raw / "backbone", backbone)
    truth = write_archive(root, raw / "dwca", occurrences, raw_rng(config.seed, 2), progress)
    with (raw / "truth.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRUTH_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(truth)

    counts = _counts(occurrences, truth, backbone)
    manifest = {
        "generator": "taxoclip.synth.raw_source",
        "format_version": RAW_FORMAT_VERSION,
        "backbone_version": backbone.version,
        "config": config.parameters(),
        "rates": {
            "name_faults": NAME_FAULT_RATES,
            "mode_faults": MODE_FAULT_RATES,
            "extra_records": EXTRA_FAULT_RATES,
            "homonym_species": HOMONYM_SPECIES_RATE,
            "synonym_species": SYNONYM_SPECIES_RATE,
            "two_media": TWO_MEDIA_RATE,
            "categories": CATEGORY_WEIGHTS,
        },
        "counts": counts,
    }
    (raw / "raw.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return counts


def _read_splits(images_csv: Path) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    splits: dict[str, dict[int, list[str]]] = {"train": {}, "test": {}}
    with images_csv.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            splits[row["split"]].setdefault(int(row["species_id"]), []).append(row["filepath"])
    return splits["train"], splits["test"]


def _counts(
    occurrences: list[Occurrence], truth: list[dict[str, str]], backbone: Backbone
) -> dict[str, object]:
    faults = Counter(f for row in truth for f in row["faults"].split(";") if f)
    kinds = Counter(m.corrupt_kind for o in occurrences for m in o.media if m.corrupt_kind)
    statuses = Counter(row["taxonomicStatus"] for row in backbone.taxa)
    return {
        "occurrences": len(occurrences),
        "media": len(truth),
        "expected_keep": sum(row["expected"] == "keep" for row in truth),
        "expected_reject": sum(row["expected"] == "reject" for row in truth),
        "faults": {f: faults[f] for f in FAULTS},
        "corrupt_kinds": {k: kinds[k] for k in CORRUPT_KINDS},
        "categories": dict(sorted(Counter(row["category"] for row in truth).items())),
        "expected_stages": {s: sum(r["expected_stage"] == s for r in truth) for s in REJECT_STAGES},
        "backbone_taxa": len(backbone.taxa),
        "backbone_accepted": statuses["accepted"],
        "backbone_synonyms": len(backbone.taxa) - statuses["accepted"],
        "backbone_vernacular_names": len(backbone.vernacular),
        "homonym_species": len(backbone.homonym_species),
    }
