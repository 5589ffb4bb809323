"""What the raw source holds: its faults, how often, and what curation must make of them.

Every record carries at most one fault. Name faults and unusual image modes must survive
curation (with the resolution status ``STATUS_BY_FAULT`` names); the other faults are junk
that curation must reject at the stage ``REJECT_STAGE`` names.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from taxoclip.records import (
    CATEGORY_CAMERA_TRAP,
    CATEGORY_CITIZEN,
    CATEGORY_MUSEUM,
    CATEGORY_OTHER,
    REJECT_STAGES,
    STATUS_FUZZY,
    STATUS_HIGHER_RANK,
    STATUS_SYNONYM,
    STATUS_UNRESOLVED,
)

from ..names import words
from ..seeds import RAW_STREAM, species_rng

RAW_FORMAT_VERSION = 1

# Faults, as truth.csv spells them.
SYNONYM = "synonym"
MISSPELLING = "misspelling"
AUTHORSHIP = "authorship"
MISSING_RANKS = "missing_ranks"
HOMONYM = "homonym"
HIGHER_RANK_ONLY = "higher_rank_only"
UNRESOLVABLE = "unresolvable"
EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
CORRUPT = "corrupt"
LABEL = "label"
LEAK = "leak"
TOO_SMALL = "too_small"
BOMB = "bomb"
MODE_CMYK = "mode_cmyk"
MODE_PALETTE = "mode_palette"
MODE_16BIT = "mode_16bit"
MODE_ALPHA = "mode_alpha"

# Fractions of the base records (one per training image). Each fault occurs at least once
# when there are records enough to carry it.
NAME_FAULT_RATES = {
    SYNONYM: 0.04,
    MISSPELLING: 0.04,
    AUTHORSHIP: 0.05,
    MISSING_RANKS: 0.04,
    HIGHER_RANK_ONLY: 0.03,
}
MODE_FAULT_RATES = {MODE_CMYK: 0.01, MODE_PALETTE: 0.01, MODE_16BIT: 0.01, MODE_ALPHA: 0.01}
EXTRA_FAULT_RATES = {
    EXACT_DUPLICATE: 0.03,
    NEAR_DUPLICATE: 0.03,
    CORRUPT: 0.03,
    LABEL: 0.02,
    LEAK: 0.03,
    TOO_SMALL: 0.02,
    BOMB: 0.01,
    UNRESOLVABLE: 0.02,
}
# Of the seen species; every record of such a species is a homonym case.
HOMONYM_SPECIES_RATE = 0.03
# Of all species: those that get one or two synonyms in the backbone.
SYNONYM_SPECIES_RATE = 0.3
# Of the base records: pairs of images of one species that share one occurrence.
TWO_MEDIA_RATE = 0.04
# Fields per category are unambiguous under any reasonable rule ("other" is neither a human
# observation nor a specimen, and its publisher names no museum or community).
CATEGORY_WEIGHTS = {
    CATEGORY_MUSEUM: 0.2,
    CATEGORY_CAMERA_TRAP: 0.15,
    CATEGORY_CITIZEN: 0.5,
    CATEGORY_OTHER: 0.15,
}

FAULTS = (
    *NAME_FAULT_RATES,
    HOMONYM,
    *MODE_FAULT_RATES,
    *EXTRA_FAULT_RATES,
)
REJECT_STAGE = {
    CORRUPT: "image",
    TOO_SMALL: "image",
    BOMB: "image",
    UNRESOLVABLE: "names",
    LABEL: "model_filter",
    EXACT_DUPLICATE: "dedup",
    NEAR_DUPLICATE: "dedup",
    LEAK: "leak",
}
assert set(REJECT_STAGE.values()) <= set(REJECT_STAGES)
STATUS_BY_FAULT = {
    SYNONYM: STATUS_SYNONYM,
    MISSPELLING: STATUS_FUZZY,
    HIGHER_RANK_ONLY: STATUS_HIGHER_RANK,
    UNRESOLVABLE: STATUS_UNRESOLVED,
}
CORRUPT_KINDS = ("truncated", "zero_bytes", "random_bytes", "html_page")

MIN_SIDE = 224  # the curation image filter's minimum
CLEAN_SIDE = (224, 320)
ORIGINAL_SIDE = (280, 320)  # originals shrink by up to 0.8 × 0.97 as near duplicates
TOO_SMALL_SIDE = (120, 200)
BOMB_SIDE = 12000
CLEAN_JPEG_QUALITY = 90
GBIF_ID_START = 1_000_000_000
GBIF_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
GIVEN_RANK_COLUMNS = GBIF_RANKS[:6]
AUTHORS = words(
    "Smith Jones Gray Cuvier Lamarck Müller Günther Boulenger Walker Say Pallas "
    "Fabricius Latreille Bonaparte Temminck Agassiz"
)


def count_of(rate: float, n: int, minimum: int = 1) -> int:
    """How many of ``n`` records get a fault of ``rate``: at least ``minimum`` if any."""
    return max(minimum, round(rate * n)) if n else 0


def raw_rng(seed: int, purpose: int) -> np.random.Generator:
    """The generator of one ``purpose`` (0 backbone, 1 records, 2 media) of the raw source."""
    return species_rng(seed, RAW_STREAM, purpose)


def write_tsv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, str]]) -> None:
    """Tab-separated UTF-8 with a header row."""
    # No quoting, as GBIF writes: a tab, quote or newline inside a value raises csv.Error.
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE)
        writer.writerow(columns)
        writer.writerows([row[c] for c in columns] for row in rows)
