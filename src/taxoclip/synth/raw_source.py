"""SynthToL raw-source mode: the same organisms as a GBIF-like source, with real data's faults.

Layout under ``OUT/raw/``::

    dwca/meta.xml                  Darwin Core Archive (directory form): core Occurrence,
    dwca/occurrence.txt            extension Multimedia, tab-separated UTF-8, joined on gbifID
    dwca/multimedia.txt            identifier = image path relative to dwca/
    dwca/media/0000000.jpg …
    backbone/Taxon.tsv             an offline backbone in GBIF's format, with synonyms and
    backbone/VernacularName.tsv    homonyms across kingdoms
    backbone/VERSION
    truth.csv                      one row per multimedia row: faults and expected outcome
    raw.json                       counts, rates, config

Every training image of a seen species becomes one record (an occurrence with one media
row; a few occurrences have two). Name faults and unusual image modes are applied to some
of them and must survive curation. Junk (duplicates, corrupt, tiny, bomb, label, leaked,
unresolvable) comes as extra records that curation must reject at the stage truth.csv
names. Every record carries at most one fault; originals of duplicates carry none and have
smaller gbifIDs than their copies, and come first in the files.

truth.csv identifies a record as (gbifID, media_index: n-th media row of that gbifID, from
0); ``duplicate_of`` is the original's gbifID, ``leak_of`` the test image's path relative
to OUT, ``species_id`` is empty for images that show no organism (corrupt, bomb, label).

Synonym rows of Taxon.tsv carry the accepted taxon's kingdom … family but their own genus
and specificEpithet, so ``genus + specificEpithet == canonicalName`` on every species row.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein
from tqdm import tqdm

from taxoclip.curate.records import (
    CATEGORY_CAMERA_TRAP,
    CATEGORY_CITIZEN,
    CATEGORY_MUSEUM,
    CATEGORY_OTHER,
    REJECT_STAGES,
    STATUS_EXACT,
    STATUS_FUZZY,
    STATUS_HIGHER_RANK,
    STATUS_SYNONYM,
    STATUS_UNRESOLVED,
)

from .names import HUE_WORDS, NameMint, hue_word
from .tree import Species

if TYPE_CHECKING:
    from .dataset import SynthConfig

RAW_FORMAT_VERSION = 1
# species_rng stream of this module (0 tree, 1 rendering, 2 shard order are dataset.py's).
RAW_STREAM = 3

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
    *NAME_FAULT_RATES, HOMONYM, *MODE_FAULT_RATES, *EXTRA_FAULT_RATES,
)  # fmt: skip
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
MUSEUM_PUBLISHER = "SynthToL Museum of Natural History"
CITIZEN_PUBLISHER = "iNaturalist-like community"
CAMERA_TRAP_REMARK = "camera trap"
GBIF_ID_START = 1_000_000_000

OCCURRENCE_COLUMNS = (
    "gbifID", "basisOfRecord", "scientificName", "kingdom", "phylum", "class", "order",
    "family", "genus", "vernacularName", "eventRemarks", "publisher", "license",
)  # fmt: skip
MULTIMEDIA_COLUMNS = ("gbifID", "type", "format", "identifier", "license", "publisher")
TAXON_COLUMNS = (
    "taxonID", "parentNameUsageID", "acceptedNameUsageID", "scientificName", "canonicalName",
    "taxonRank", "taxonomicStatus", "kingdom", "phylum", "class", "order", "family", "genus",
    "specificEpithet",
)  # fmt: skip
VERNACULAR_COLUMNS = ("taxonID", "vernacularName", "language")
TRUTH_COLUMNS = (
    "gbifID", "media_index", "file", "species_id", "true_name", "faults", "duplicate_of",
    "leak_of", "category", "expected", "expected_stage", "expected_status",
)  # fmt: skip
GBIF_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
SYNONYM_STATUSES = ("homotypic synonym", "heterotypic synonym", "synonym")
GIVEN_RANK_COLUMNS = GBIF_RANKS[:6]

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
_LICENSES = (
    "http://creativecommons.org/publicdomain/zero/1.0/legalcode",
    "http://creativecommons.org/licenses/by/4.0/legalcode",
    "http://creativecommons.org/licenses/by-nc/4.0/legalcode",
)
_CATEGORY_FIELDS = {  # basisOfRecord choices, eventRemarks choices, publisher
    CATEGORY_MUSEUM: (("PRESERVED_SPECIMEN",), ("", "dry mount", "ex coll. A. Smith"),
                      MUSEUM_PUBLISHER),
    CATEGORY_CAMERA_TRAP: (("MACHINE_OBSERVATION",), (CAMERA_TRAP_REMARK,),
                           "SynthToL Camera Trap Network"),
    CATEGORY_CITIZEN: (("HUMAN_OBSERVATION",), ("", "seen on a morning walk", "in the garden"),
                       CITIZEN_PUBLISHER),
    CATEGORY_OTHER: (("OCCURRENCE", "OBSERVATION"), ("", "transect survey"),
                     "SynthToL Regional Survey"),
}  # fmt: skip
_AUTHORS = (
    "Smith", "Jones", "Gray", "Cuvier", "Lamarck", "Müller", "Günther", "Boulenger",
    "Walker", "Say", "Pallas", "Fabricius", "Latreille", "Bonaparte", "Temminck", "Agassiz",
)  # fmt: skip
_BOTANISTS = ("L.", "Mill.", "DC.", "Hook.f.", "Benth.", "Willd.", "Lam.", "Pers.")
_HUE_TRANSLATIONS = {  # in the order of names.HUE_WORDS
    "de": ("Karmesin", "Orange", "Bernstein", "Gelb", "Limetten", "Grün", "Jade", "Petrol",
           "Azur", "Blau", "Violett", "Magenta"),
    "fr": ("cramoisi", "orange", "ambré", "jaune", "citron", "vert", "jade", "sarcelle",
           "azur", "bleu", "violet", "magenta"),
    "es": ("carmesí", "naranja", "ámbar", "amarillo", "lima", "verde", "jade", "turquesa",
           "azur", "azul", "violeta", "magenta"),
}  # fmt: skip
_OTHER_LANGUAGE_RATE = 0.12
_HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head>\n"
    b"<body><h1>Service Unavailable</h1><p>The media server is temporarily unable to "
    b"service your request. Please try again later.</p></body></html>\n"
)


# --------------------------------------------------------------------------- backbone


@dataclass
class Backbone:
    """The GBIF-format backbone and what record planning needs to know about it."""

    version: str
    taxa: list[dict[str, str]]
    vernacular: list[dict[str, str]]
    synonyms: dict[int, list[str]]  # species_id → synonym canonical names
    homonym_species: set[int]
    homonym_genera: set[str]
    names: set[str]  # every canonicalName, any rank or status

    @property
    def species_names(self) -> list[str]:
        return sorted(n for n in self.names if " " in n)


class _TaxonTable:
    """Rows of Taxon.tsv, keyed by lineage path (kingdom … epithet) for parent look-ups."""

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []
        self.ids: dict[tuple[str, ...], str] = {}

    def add_accepted(self, path: tuple[str, ...], authorship: str) -> None:
        rank = len(path) - 1
        canonical = f"{path[5]} {path[6]}" if rank == 6 else path[-1]
        self.ids[path] = self._add(
            parentNameUsageID=self.ids.get(path[:-1], ""),
            scientificName=f"{canonical} {authorship}".strip(),
            canonicalName=canonical,
            taxonRank=GBIF_RANKS[rank],
            taxonomicStatus="accepted",
            **dict(zip(GBIF_RANKS[:6], path[:6], strict=False)),
            specificEpithet=path[6] if rank == 6 else "",
        )

    def add_synonym(
        self, accepted: tuple[str, ...], genus: str, epithet: str, status: str, authorship: str
    ) -> None:
        # Like GBIF: the accepted taxon's parent and higher ranks, the synonym's own name.
        self._add(
            parentNameUsageID=self.ids[accepted[:6]],
            acceptedNameUsageID=self.ids[accepted],
            scientificName=f"{genus} {epithet} {authorship}",
            canonicalName=f"{genus} {epithet}",
            taxonRank="species",
            taxonomicStatus=status,
            **dict(zip(GBIF_RANKS[:5], accepted[:5], strict=True)),
            genus=genus,
            specificEpithet=epithet,
        )

    def _add(self, **values: str) -> str:
        taxon_id = str(len(self.rows) + 1)
        self.rows.append({c: "" for c in TAXON_COLUMNS} | values | {"taxonID": taxon_id})
        return taxon_id


def build_backbone(species: Sequence[Species], seed: int) -> Backbone:
    """Accepted taxa of the tree, synonyms, and a second kingdom holding homonyms."""
    rng = _rng(seed, 0)
    mint = _FreshNames(rng, (w for sp in species for w in sp.lineage.ranks))
    seen = [sp.species_id for sp in species if sp.seen]
    n_homonyms = _count(HOMONYM_SPECIES_RATE, len(seen)) if len(seen) >= 2 else 0
    homonym_species = {int(i) for i in rng.choice(seen, n_homonyms, replace=False)}
    homonyms = [sp for sp in species if sp.species_id in homonym_species]
    taken = {w for sp in species for w in sp.lineage.ranks[:6]}
    taken |= {sp.lineage.species_binomial for sp in species}
    genera = sorted({sp.lineage.genus for sp in species})
    synonyms = _plan_synonyms(species, homonym_species, genera, taken, mint, rng)

    table = _TaxonTable()
    authorship: dict[int, str] = {}
    for sp in species:
        path = tuple(sp.lineage.ranks)
        for rank in range(6):
            if path[: rank + 1] not in table.ids:
                table.add_accepted(path[: rank + 1], _zoo_authorship(rng) if rank else "")
        # A species moved to another genus cites its original author in parentheses.
        author = _zoo_authorship(rng)
        moved = any(s[2] == "homotypic synonym" for s in synonyms.get(sp.species_id, ()))
        authorship[sp.species_id] = f"({author})" if moved or rng.random() < 0.15 else author
        table.add_accepted(path, authorship[sp.species_id])

    # A plant-like kingdom whose genera and species repeat some of the tree's binomials.
    if homonyms:
        chain = tuple(mint.name(rank) for rank in range(5))
        for rank in range(5):
            table.add_accepted(chain[: rank + 1], _botanist(rng) if rank else "")
        for sp in homonyms:
            genus = (*chain, sp.lineage.genus)
            if genus not in table.ids:
                table.add_accepted(genus, _botanist(rng))
                table.add_accepted((*genus, mint.name(6)), _botanist(rng))
            table.add_accepted((*genus, sp.lineage.species), _botanist(rng))

    by_id = {sp.species_id: sp for sp in species}
    for species_id, entries in synonyms.items():
        accepted = tuple(by_id[species_id].lineage.ranks)
        for genus, epithet, status in entries:
            # A homotypic synonym is the original combination, by the accepted name's author.
            own = authorship[species_id].strip("()")
            author = own if status == "homotypic synonym" else _zoo_authorship(rng)
            table.add_synonym(accepted, genus, epithet, status, author)

    return Backbone(
        version=f"synthtol-backbone-seed{seed}-v{RAW_FORMAT_VERSION}",
        taxa=table.rows,
        vernacular=_vernacular_rows(species, table.rows, table.ids, rng),
        synonyms={
            sid: [f"{genus} {epithet}" for genus, epithet, _ in entries]
            for sid, entries in synonyms.items()
        },
        homonym_species=homonym_species,
        homonym_genera={sp.lineage.genus for sp in homonyms},
        names={row["canonicalName"] for row in table.rows},
    )


def _plan_synonyms(
    species: Sequence[Species],
    homonym_species: set[int],
    genera: list[str],
    names: set[str],
    mint: _FreshNames,
    rng: np.random.Generator,
) -> dict[int, list[tuple[str, str, str]]]:
    """species_id → [(genus, epithet, status)]; seen species first, so records can use them."""
    plain = [sp for sp in species if sp.species_id not in homonym_species]
    seen = [sp for sp in plain if sp.seen]
    unseen = [sp for sp in plain if not sp.seen]
    chosen = [
        seen[int(i)] for i in rng.choice(len(seen), _count(SYNONYM_SPECIES_RATE, len(seen)), False)
    ]
    chosen += [
        unseen[int(i)]
        for i in rng.choice(len(unseen), round(SYNONYM_SPECIES_RATE * len(unseen)), False)
    ]
    synonyms: dict[int, list[tuple[str, str, str]]] = {}
    for sp in sorted(chosen, key=lambda s: s.species_id):
        for _ in range(1 + int(rng.random() < 0.3)):
            # The first few cycle through the statuses, so even small trees have each.
            n_made = sum(len(v) for v in synonyms.values())
            pick = n_made if n_made < 3 else int(rng.choice(3, p=[0.4, 0.25, 0.35]))
            status = SYNONYM_STATUSES[pick]
            for _attempt in range(20):
                other_genus = str(rng.choice(genera))
                if other_genus == sp.lineage.genus or rng.random() < 0.5:
                    other_genus = mint.name(5)
                if status == "homotypic synonym":
                    genus, epithet = other_genus, sp.lineage.species
                elif status == "heterotypic synonym":
                    genus, epithet = sp.lineage.genus, mint.name(6)
                else:
                    genus, epithet = other_genus, mint.name(6)
                if f"{genus} {epithet}" not in names:
                    break
            else:  # pragma: no cover - the name space is vast
                continue
            names.add(f"{genus} {epithet}")
            synonyms.setdefault(sp.species_id, []).append((genus, epithet, status))
    return synonyms


def _vernacular_rows(
    species: Sequence[Species],
    taxa: list[dict[str, str]],
    ids: dict[tuple[str, ...], str],
    rng: np.random.Generator,
) -> list[dict[str, str]]:
    rows = []
    for sp in species:
        if not sp.common_name:
            continue
        taxon_id = ids[tuple(sp.lineage.ranks)]
        rows.append({"taxonID": taxon_id, "vernacularName": sp.common_name, "language": "en"})
        if rng.random() < _OTHER_LANGUAGE_RATE:
            language = str(rng.choice(sorted(_HUE_TRANSLATIONS)))
            hue = _HUE_TRANSLATIONS[language][_hue_index(sp.hue)]
            genus = sp.lineage.genus
            name = f"{hue}-{genus}" if language == "de" else f"{genus} {hue}"
            rows.append({"taxonID": taxon_id, "vernacularName": name, "language": language})
    # Species of the homonym kingdom: plant-like common names.
    animal_ids = {ids[tuple(sp.lineage.ranks)] for sp in species}
    for row in taxa:
        plant = row["taxonomicStatus"] == "accepted" and row["taxonID"] not in animal_ids
        if row["taxonRank"] == "species" and plant:
            name = f"{row['specificEpithet']} {row['genus'].lower()}wort"
            rows.append({"taxonID": row["taxonID"], "vernacularName": name, "language": "en"})
    return rows


def _hue_index(hue: float) -> int:
    return HUE_WORDS.index(hue_word(hue))


class _FreshNames:
    """Pseudo-Latin names that clash with none already taken (any rank, any case)."""

    def __init__(self, rng: np.random.Generator, taken: Iterable[str]) -> None:
        self._mint = NameMint(rng)
        self._taken = {w.lower() for w in taken}

    def name(self, rank_index: int) -> str:
        while True:
            word = self._mint.name(rank_index)
            if word.lower() not in self._taken:
                self._taken.add(word.lower())
                return word


def _zoo_authorship(rng: np.random.Generator) -> str:
    if rng.random() < 0.1:
        return "Linnaeus, 1758"
    first, second = rng.choice(len(_AUTHORS), 2, replace=False)
    year = int(rng.integers(1760, 1990))
    if rng.random() < 0.2:
        return f"{_AUTHORS[first]} & {_AUTHORS[second]}, {year}"
    return f"{_AUTHORS[first]}, {year}"


def _botanist(rng: np.random.Generator) -> str:
    return _BOTANISTS[int(rng.integers(len(_BOTANISTS)))]


# ----------------------------------------------------------------------- name faults


def authorship_variant(index: int, rng: np.random.Generator) -> str:
    """An authorship string in one of the forms records use (cycled by ``index``)."""
    first, second = (_AUTHORS[i] for i in rng.choice(len(_AUTHORS), 2, replace=False))
    year = int(rng.integers(1760, 1990))
    forms = (
        "L.",
        f"({first}, {year})",
        f"{first} & {second} {year}",
        f"{first}, {year}",
        f"{first} {year}",
        f"({first}) {second}",
        f"{first} et al., {year}",
    )
    return forms[index % len(forms)]


MISSPELLING_EDITS = ("substitution", "transposition", "insertion", "deletion")
MISSPELLING_MIN_LENGTH = 6
_LETTERS = "abcdefghilmnoprstuvy"


def misspell(
    binomial: str, edit: str, rng: np.random.Generator, valid: set[str], others: Sequence[str]
) -> str | None:
    """One ``edit`` in the genus or epithet (a word of 6+ letters, never its first letter).

    The result is no valid name (``valid``: every canonical name) and strictly nearer to
    ``binomial`` than to any of ``others`` (other species names), so fuzzy matching has one
    right answer. ``None`` when no such edit is found.
    """
    words = binomial.split(" ")
    eligible = [i for i, w in enumerate(words) if len(w) >= MISSPELLING_MIN_LENGTH]
    if not eligible:
        return None
    for _ in range(40):
        index = int(rng.choice(eligible))
        word = words[index]
        new_word = _edit(word, edit, rng)
        if new_word is None or new_word == word or new_word in valid:
            continue
        candidate = " ".join([*words[:index], new_word, *words[index + 1 :]])
        if candidate in valid:
            continue
        distance = Levenshtein.distance(candidate, binomial)
        nearest = process.extractOne(
            candidate,
            [o for o in others if o != binomial],
            scorer=Levenshtein.distance,
            score_cutoff=distance,
        )
        if nearest is None:
            return candidate
    return None


def _edit(word: str, edit: str, rng: np.random.Generator) -> str | None:
    position = int(rng.integers(1, len(word)))  # the first letter is rarely mistyped
    letter = _LETTERS[int(rng.integers(len(_LETTERS)))]
    if edit == "substitution":
        return word[:position] + letter + word[position + 1 :]
    if edit == "insertion":
        return word[:position] + letter + word[position:]
    if edit == "deletion":
        return word[:position] + word[position + 1 :]
    if position + 1 >= len(word) or word[position] == word[position + 1]:
        return None
    return word[:position] + word[position + 1] + word[position] + word[position + 2 :]


def invented_name(mint: _FreshNames, names: Iterable[str]) -> str:
    """A binomial whose genus and whole name are more than 2 edits from any backbone name."""
    pool = sorted(names)
    words = sorted({w for n in pool for w in n.split(" ")})
    while True:
        genus, epithet = mint.name(5), mint.name(6)
        candidate = f"{genus} {epithet}"
        near_name = process.extractOne(candidate, pool, scorer=Levenshtein.distance, score_cutoff=2)
        near_genus = process.extractOne(genus, words, scorer=Levenshtein.distance, score_cutoff=2)
        if near_name is None and near_genus is None:
            return candidate


# --------------------------------------------------------------------------- records


@dataclass(eq=False)  # identity, not value: records are looked up in lists
class _Media:
    fault: str = ""
    source: str = ""  # OUT-relative path of the synth image it is made from
    original: _Occurrence | None = None
    min_side: int = CLEAN_SIDE[0]
    corrupt_kind: str = ""
    identifier: str = ""
    data: bytes = b""


@dataclass(eq=False)
class _Occurrence:
    species: Species  # the species shown, or named by junk
    scientific_name: str
    ranks: tuple[str, ...]  # kingdom … genus as given (blank = missing)
    true_name: str
    name_fault: str = ""
    junk: bool = False  # shows no organism at all
    media: list[_Media] = field(default_factory=list)
    leak_of: str = ""
    gbif_id: int = 0
    category: str = ""
    basis_of_record: str = ""
    event_remarks: str = ""
    publisher: str = ""
    license: str = ""
    vernacular: str = ""


def _clean_occurrence(sp: Species, sources: Sequence[str] = ()) -> _Occurrence:
    return _Occurrence(
        species=sp,
        scientific_name=sp.lineage.species_binomial,
        ranks=tuple(sp.lineage.ranks[:6]),
        true_name=sp.lineage.species_binomial,
        media=[_Media(source=s) for s in sources],
    )


def _plan_records(
    species: Sequence[Species],
    train: dict[int, list[str]],
    test: dict[int, list[str]],
    backbone: Backbone,
    rng: np.random.Generator,
) -> list[_Occurrence]:
    """Every occurrence with its faults, in file order, gbifIDs assigned."""
    by_id = {sp.species_id: sp for sp in species}
    base = [(by_id[sid], path) for sid in sorted(train) for path in train[sid]]
    n_base = len(base)

    # Pairs of consecutive images of one species share an occurrence.
    pair_starts = [i for i in range(n_base - 1) if base[i][0] is base[i + 1][0]]
    n_pairs = _count(TWO_MEDIA_RATE, n_base)
    paired: set[int] = set()  # the first image of each pair
    for i in [pair_starts[int(k)] for k in rng.permutation(len(pair_starts))]:
        if len(paired) >= n_pairs:
            break
        if not {i - 1, i, i + 1} & paired:
            paired.add(i)
    occurrences: list[_Occurrence] = []
    i = 0
    while i < n_base:
        width = 2 if i in paired else 1
        occurrences.append(_clean_occurrence(base[i][0], [p for _, p in base[i : i + width]]))
        i += width
    for occ in occurrences:
        if occ.species.species_id in backbone.homonym_species:
            occ.name_fault = HOMONYM

    free = [o for o in occurrences if not o.name_fault]
    _apply_name_faults(free, n_base, backbone, rng)
    clean = [o for o in occurrences if not o.name_fault and len(o.media) == 1]
    clean = [clean[int(i)] for i in rng.permutation(len(clean))]

    n_dups = {f: _count(EXTRA_FAULT_RATES[f], n_base) for f in (EXACT_DUPLICATE, NEAR_DUPLICATE)}
    originals = clean[: sum(n_dups.values())]
    clean = clean[len(originals) :]
    for occ in originals:
        occ.media[0].min_side = ORIGINAL_SIDE[0]
    for fault, rate in MODE_FAULT_RATES.items():
        for occ in clean[: _count(rate, n_base)]:
            occ.media[0].fault = fault
        clean = clean[_count(rate, n_base) :]

    duplicates = []
    dup_faults = [f for f, n in n_dups.items() for _ in range(n)]
    for occ, fault in zip(originals, dup_faults, strict=False):  # small trees: fewer
        copy = _clean_occurrence(occ.species)
        copy.media = [_Media(fault=fault, original=occ)]
        duplicates.append(copy)

    extras = _extra_records(species, train, test, backbone, n_base, rng)
    order = occurrences + extras
    order = [order[int(i)] for i in rng.permutation(len(order))]
    for copy in duplicates:
        after = order.index(copy.media[0].original) + 1
        order.insert(int(rng.integers(after, len(order) + 1)), copy)
    gaps = rng.integers(1, 5000, len(order))
    for occ, gbif_id in zip(order, GBIF_ID_START + np.cumsum(gaps), strict=True):
        occ.gbif_id = int(gbif_id)
        _set_category(occ, rng)
    return order


def _apply_name_faults(
    free: list[_Occurrence], n_base: int, backbone: Backbone, rng: np.random.Generator
) -> None:
    """Give disjoint sets of occurrences each name fault, as far as candidates allow."""
    pool = [free[int(i)] for i in rng.permutation(len(free))]
    species_names = backbone.species_names
    for fault, rate in NAME_FAULT_RATES.items():
        wanted, done = _count(rate, n_base), 0
        for occ in list(pool):
            if done >= wanted:
                break
            sp = occ.species
            binomial = sp.lineage.species_binomial
            if fault == SYNONYM:
                options = backbone.synonyms.get(sp.species_id)
                if not options:
                    continue
                occ.scientific_name = str(rng.choice(options))
                occ.ranks = (*occ.ranks[:5], occ.scientific_name.split(" ")[0])
            elif fault == MISSPELLING:
                edit = MISSPELLING_EDITS[done % len(MISSPELLING_EDITS)]
                wrong = misspell(binomial, edit, rng, backbone.names, species_names)
                if wrong is None:
                    continue
                occ.scientific_name = wrong
            elif fault == AUTHORSHIP:
                occ.scientific_name = f"{binomial} {authorship_variant(done, rng)}"
            elif sp.lineage.genus in backbone.homonym_genera:
                continue  # without a full binomial, a homonym genus cannot be told apart
            elif fault == MISSING_RANKS:
                n_blank = int(rng.integers(2, 7))
                blank = set(rng.choice(6, n_blank, replace=False).tolist())
                occ.ranks = tuple("" if r in blank else v for r, v in enumerate(occ.ranks))
            elif fault == HIGHER_RANK_ONLY:
                genus = sp.lineage.genus
                occ.scientific_name = (genus, f"{genus} sp.", f"{genus} spec.")[done % 3]
                occ.true_name = genus
            occ.name_fault = fault
            pool.remove(occ)
            done += 1


def _extra_records(
    species: Sequence[Species],
    train: dict[int, list[str]],
    test: dict[int, list[str]],
    backbone: Backbone,
    n_base: int,
    rng: np.random.Generator,
) -> list[_Occurrence]:
    """Junk records: each one a single media row with one fault that curation rejects."""
    by_id = {sp.species_id: sp for sp in species}
    plain_train = [
        (by_id[sid], path)
        for sid in sorted(train)
        if sid not in backbone.homonym_species
        for path in train[sid]
    ]
    plain_test = [
        (by_id[sid], path)
        for sid in sorted(test)
        if sid not in backbone.homonym_species
        for path in test[sid]
    ]
    if not plain_train:
        return []
    mint = _FreshNames(rng, (w for n in backbone.names for w in n.split(" ")))
    extras: list[_Occurrence] = []

    def pick(pool: list[tuple[Species, str]], k: int) -> list[tuple[Species, str]]:
        return [pool[int(i)] for i in rng.choice(len(pool), k, replace=len(pool) < k)]

    for fault in (CORRUPT, LABEL, TOO_SMALL, BOMB):
        # Enough corrupt records for every kind of corruption to appear.
        minimum = len(CORRUPT_KINDS) if fault == CORRUPT else 1
        picked = pick(plain_train, _count(EXTRA_FAULT_RATES[fault], n_base, minimum))
        for index, (sp, path) in enumerate(picked):
            occ = _clean_occurrence(sp, [path])
            occ.media[0].fault = fault
            occ.junk = fault != TOO_SMALL
            if fault == CORRUPT:
                occ.media[0].corrupt_kind = CORRUPT_KINDS[index % len(CORRUPT_KINDS)]
            extras.append(occ)
    if plain_test:
        k = min(_count(EXTRA_FAULT_RATES[LEAK], n_base), len(plain_test))
        for sp, path in [plain_test[int(i)] for i in rng.choice(len(plain_test), k, False)]:
            occ = _clean_occurrence(sp, [path])
            occ.media[0].fault = LEAK
            occ.leak_of = path
            extras.append(occ)
    for sp, path in pick(plain_train, _count(EXTRA_FAULT_RATES[UNRESOLVABLE], n_base)):
        occ = _clean_occurrence(sp, [path])
        occ.scientific_name = invented_name(mint, backbone.names)
        occ.ranks = ("",) * 6  # given ranks would let a resolver fall back to them
        occ.true_name = ""
        occ.name_fault = UNRESOLVABLE
        extras.append(occ)
    return extras


def _set_category(occ: _Occurrence, rng: np.random.Generator) -> None:
    is_label = any(m.fault == LABEL for m in occ.media)
    if is_label:
        category = CATEGORY_MUSEUM  # a specimen label belongs to a museum record
    else:
        categories = list(CATEGORY_WEIGHTS)
        category = categories[int(rng.choice(len(categories), p=list(CATEGORY_WEIGHTS.values())))]
    bases, remarks, publisher = _CATEGORY_FIELDS[category]
    occ.category = category
    occ.basis_of_record = str(rng.choice(bases))
    occ.event_remarks = str(rng.choice(remarks))
    occ.publisher = publisher
    occ.license = _LICENSES[int(rng.integers(len(_LICENSES)))]
    keeps_common_name = rng.random() < (0.6 if category == CATEGORY_CITIZEN else 0.2)
    if keeps_common_name and occ.name_fault != UNRESOLVABLE:
        occ.vernacular = occ.species.common_name


def _count(rate: float, n: int, minimum: int = 1) -> int:
    return max(minimum, round(rate * n)) if n else 0


# ---------------------------------------------------------------------------- images


def upscale(image: Image.Image, side: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Bicubic resize to both sides within ``side`` and an aspect ratio within 10 %."""
    short = int(rng.integers(side[0], side[1] + 1))
    long = min(round(short * float(rng.uniform(1.0, 1.1))), side[1])
    size = (long, short) if rng.random() < 0.5 else (short, long)
    return image.resize(size, Image.Resampling.BICUBIC)


def near_duplicate(data: bytes, rng: np.random.Generator) -> bytes:
    """A slightly edited copy of a JPEG: the edits perceptual hashes are built to survive.

    Re-encoded at q60–80, plus at most one of: rescale 0.8–0.95, a trim of up to 0.5 % of
    the area, brightness ± 2–5 %. The copy is not checked against any hash — the ground truth must
    not be chosen by the detector it grades. Larger crops and shifts are a different
    problem (PDQ follows where content sits in the frame; see docs/curate.md).
    """
    with Image.open(io.BytesIO(data)) as source:
        image = source.convert("RGB")
    return _edit_image(image, rng)


def _edit_image(image: Image.Image, rng: np.random.Generator) -> bytes:
    # A re-upload: always re-encoded, plus at most one edit. Stacked edits are a harder
    # problem than "the same photo again" (measured: PDQ moves up to 16 bits).
    edit = int(rng.integers(0, 4))
    rescale, crop, brighten = edit == 1, edit == 2, edit == 3
    if rescale:
        # Stay above the minimum size, so only dedup can catch it.
        low = max(0.8, (MIN_SIDE + 2) / min(image.size))
        if low < 0.95:
            scale = float(rng.uniform(low, 0.95))
            size = (round(image.width * scale), round(image.height * scale))
            image = image.resize(size, Image.Resampling.BICUBIC)
    if crop:
        fraction = float(rng.uniform(0.0005, 0.0025))  # per side: at most 0.5 % of the area
        dx, dy = round(image.width * fraction), round(image.height * fraction)
        # Trim all sides rather than one corner: a shift moves PDQ far more than a zoom.
        left = int(rng.integers(dx // 4, dx - dx // 4 + 1))
        top = int(rng.integers(dy // 4, dy - dy // 4 + 1))
        image = image.crop((left, top, image.width - (dx - left), image.height - (dy - top)))
    if brighten:
        factor = 1.0 + float(rng.choice([-1.0, 1.0])) * float(rng.uniform(0.02, 0.05))
        image = ImageEnhance.Brightness(image).enhance(factor)
    return _jpeg(image, int(rng.integers(60, 81)))


def corrupt_bytes(kind: str, clean_jpeg: bytes, rng: np.random.Generator) -> bytes:
    """Bytes named .jpg that no image reader can decode."""
    if kind == "truncated":
        return clean_jpeg[: int(len(clean_jpeg) * float(rng.uniform(0.3, 0.7)))]
    if kind == "zero_bytes":
        return b""
    if kind == "html_page":
        return _HTML_ERROR_PAGE
    while True:
        blob = rng.bytes(int(rng.integers(2_000, 20_000)))
        if not _decodes(blob):  # formats without a magic number (TGA) could take random bytes
            return blob


def label_card(lines: Sequence[str], rng: np.random.Generator) -> bytes:
    """A museum label: near-white card, a border and lines of black text."""
    width, height = int(rng.integers(280, 321)), int(rng.integers(MIN_SIDE, 261))
    paper = int(rng.integers(236, 251))
    image = Image.new("RGB", (width, height), (paper, paper, paper - int(rng.integers(0, 8))))
    draw = ImageDraw.Draw(image)
    draw.rectangle((6, 6, width - 7, height - 7), outline=(30, 30, 30), width=2)
    size = int(rng.integers(13, 17))
    font = _font(size)
    for row, line in enumerate(lines):
        draw.text((16, 16 + row * (size + 8)), line, fill=(12, 12, 12), font=font)
    return _jpeg(image, CLEAN_JPEG_QUALITY)


def bomb_png(side: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid 1-bit PNG of one colour that declares ``side`` × ``side`` pixels."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", side, side, 1, 3, 0, 0, 0)  # bit depth 1, palette
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"PLTE", bytes(rgb))
        + chunk(b"IDAT", _zero_rows(side))
        + chunk(b"IEND", b"")
    )


@lru_cache(maxsize=2)
def _zero_rows(side: int) -> bytes:
    row = bytes(1 + (side + 7) // 8)  # filter byte + packed pixels, all palette index 0
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(side)]
    return b"".join(parts) + compressor.flush()


def encode_mode(image: Image.Image, fault: str) -> tuple[bytes, str]:
    """An RGB image in the unusual mode ``fault`` names; returns (bytes, extension)."""
    buffer = io.BytesIO()
    if fault == MODE_CMYK:
        image.convert("CMYK").save(buffer, format="JPEG", quality=CLEAN_JPEG_QUALITY)
        return buffer.getvalue(), "jpg"
    if fault == MODE_PALETTE:
        converted = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    elif fault == MODE_16BIT:
        converted = Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257)
    elif fault == MODE_ALPHA:
        converted = image.convert("RGBA")
        alpha = np.full((image.height, image.width), 255, dtype=np.uint8)
        alpha[:3], alpha[-3:], alpha[:, :3], alpha[:, -3:] = 0, 0, 0, 0  # a transparent rim
        converted.putalpha(Image.fromarray(alpha))
    else:
        raise ValueError(f"not a mode fault: {fault}")
    converted.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue(), "png"


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception:  # noqa: BLE001 - any failure means "not an image"
        return False
    return True


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def _media_bytes(
    root: Path, occ: _Occurrence, media: _Media, rng: np.random.Generator
) -> tuple[bytes, str]:
    fault = media.fault
    if fault == EXACT_DUPLICATE:
        return media.original.media[0].data, "jpg"
    if fault == NEAR_DUPLICATE:
        return near_duplicate(media.original.media[0].data, rng), "jpg"
    if fault == LABEL:
        return label_card(_label_lines(occ, rng), rng), "jpg"
    if fault == BOMB:
        return bomb_png(BOMB_SIDE, tuple(int(v) for v in rng.integers(0, 256, 3))), "png"
    with Image.open(root / media.source) as source:
        picture = source.convert("RGB")
    if fault == TOO_SMALL:
        return _jpeg(upscale(picture, TOO_SMALL_SIDE, rng), CLEAN_JPEG_QUALITY), "jpg"
    image = upscale(picture, (media.min_side, CLEAN_SIDE[1]), rng)
    if fault in MODE_FAULT_RATES:
        return encode_mode(image, fault)
    data = _jpeg(image, CLEAN_JPEG_QUALITY)
    if fault == CORRUPT:
        return corrupt_bytes(media.corrupt_kind, data, rng), "jpg"
    return data, "jpg"  # clean, leak, unresolvable


def _label_lines(occ: _Occurrence, rng: np.random.Generator) -> list[str]:
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    collector, determiner = (_AUTHORS[i] for i in rng.choice(len(_AUTHORS), 2, replace=False))
    year = int(rng.integers(1850, 2000))
    return [
        "SYNTHTOL MUSEUM",
        "OF NATURAL HISTORY",
        occ.scientific_name,
        f"Cat. no. SMNH {int(rng.integers(1, 999_999)):06d}",
        f"Leg. {collector}, {int(rng.integers(1, 29))} {months[int(rng.integers(12))]} {year}",
        f"Det. {determiner} {year + int(rng.integers(0, 30))}",
    ]


# ---------------------------------------------------------------------------- writing


def write_raw_source(
    root: Path, species: list[Species], config: SynthConfig, progress: bool = False
) -> dict[str, object]:
    """Write ``root/raw/`` from the SynthToL just generated in ``root``; returns its counts."""
    root = Path(root)
    raw = root / "raw"
    train, test = _read_splits(root / "images.csv")
    backbone = build_backbone(species, config.seed)
    occurrences = _plan_records(species, train, test, backbone, _rng(config.seed, 1))
    _write_backbone(raw / "backbone", backbone)
    truth = _write_archive(root, raw / "dwca", occurrences, _rng(config.seed, 2), progress)
    with (raw / "truth.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRUTH_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(truth)

    counts = _counts(occurrences, truth, backbone)
    manifest = {
        "generator": "taxoclip.synth.raw_source",
        "format_version": RAW_FORMAT_VERSION,
        "backbone_version": backbone.version,
        "config": asdict(config),
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


def _write_backbone(folder: Path, backbone: Backbone) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _write_tsv(folder / "Taxon.tsv", TAXON_COLUMNS, backbone.taxa)
    _write_tsv(folder / "VernacularName.tsv", VERNACULAR_COLUMNS, backbone.vernacular)
    (folder / "VERSION").write_text(backbone.version + "\n", encoding="utf-8")


def _write_archive(
    root: Path,
    folder: Path,
    occurrences: list[_Occurrence],
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
                data, extension = _media_bytes(root, occ, media, rng)
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
    _write_tsv(folder / "occurrence.txt", OCCURRENCE_COLUMNS, occurrence_rows)
    _write_tsv(folder / "multimedia.txt", MULTIMEDIA_COLUMNS, media_rows)
    (folder / "meta.xml").write_text(_meta_xml(), encoding="utf-8")
    return truth


def _occurrence_row(occ: _Occurrence) -> dict[str, str]:
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


def _truth_row(occ: _Occurrence, index: int, media: _Media) -> dict[str, str]:
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


def _write_tsv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, str]]) -> None:
    # No quoting, as GBIF writes: a tab, quote or newline inside a value raises csv.Error.
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE)
        writer.writerow(columns)
        writer.writerows([row[c] for c in columns] for row in rows)


def _counts(
    occurrences: list[_Occurrence], truth: list[dict[str, str]], backbone: Backbone
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


def _rng(seed: int, purpose: int) -> np.random.Generator:
    from .dataset import species_rng

    return species_rng(seed, RAW_STREAM, purpose)
