"""Planning the raw source's occurrences: which record carries which fault, in file order.

Every training image of a seen species becomes one record (an occurrence with one media
row; a few occurrences have two). Junk comes as extra records; originals of duplicates
carry no fault, have smaller gbifIDs than their copies and come first in the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from taxoclip.records import CATEGORY_CAMERA_TRAP, CATEGORY_CITIZEN, CATEGORY_MUSEUM, CATEGORY_OTHER

from ..tree import Species
from .backbone import Backbone, FreshNames
from .misnames import MISSPELLING_EDITS, authorship_variant, invented_name, misspell
from .spec import (
    AUTHORSHIP,
    BOMB,
    CATEGORY_WEIGHTS,
    CLEAN_SIDE,
    CORRUPT,
    CORRUPT_KINDS,
    EXACT_DUPLICATE,
    EXTRA_FAULT_RATES,
    GBIF_ID_START,
    HIGHER_RANK_ONLY,
    HOMONYM,
    LABEL,
    LEAK,
    MISSING_RANKS,
    MISSPELLING,
    MODE_FAULT_RATES,
    NAME_FAULT_RATES,
    NEAR_DUPLICATE,
    ORIGINAL_SIDE,
    SYNONYM,
    TOO_SMALL,
    TWO_MEDIA_RATE,
    UNRESOLVABLE,
    count_of,
)

MUSEUM_PUBLISHER = "SynthToL Museum of Natural History"
CITIZEN_PUBLISHER = "iNaturalist-like community"
CAMERA_TRAP_REMARK = "camera trap"
_LICENSES = (
    "http://creativecommons.org/publicdomain/zero/1.0/legalcode",
    "http://creativecommons.org/licenses/by/4.0/legalcode",
    "http://creativecommons.org/licenses/by-nc/4.0/legalcode",
)
_CATEGORY_FIELDS = {  # basisOfRecord choices, eventRemarks choices, publisher
    CATEGORY_MUSEUM: (
        ("PRESERVED_SPECIMEN",),
        ("", "dry mount", "ex coll. A. Smith"),
        MUSEUM_PUBLISHER,
    ),
    CATEGORY_CAMERA_TRAP: (
        ("MACHINE_OBSERVATION",),
        (CAMERA_TRAP_REMARK,),
        "SynthToL Camera Trap Network",
    ),
    CATEGORY_CITIZEN: (
        ("HUMAN_OBSERVATION",),
        ("", "seen on a morning walk", "in the garden"),
        CITIZEN_PUBLISHER,
    ),
    CATEGORY_OTHER: (
        ("OCCURRENCE", "OBSERVATION"),
        ("", "transect survey"),
        "SynthToL Regional Survey",
    ),
}


@dataclass(eq=False)  # identity, not value: records are looked up in lists
class Media:
    fault: str = ""
    source: str = ""  # OUT-relative path of the synth image it is made from
    original: Occurrence | None = None
    min_side: int = CLEAN_SIDE[0]
    corrupt_kind: str = ""
    identifier: str = ""
    data: bytes = b""


@dataclass(eq=False)
class Occurrence:
    species: Species  # the species shown, or named by junk
    scientific_name: str
    ranks: tuple[str, ...]  # kingdom … genus as given (blank = missing)
    true_name: str
    name_fault: str = ""
    junk: bool = False  # shows no organism at all
    media: list[Media] = field(default_factory=list)
    leak_of: str = ""
    gbif_id: int = 0
    category: str = ""
    basis_of_record: str = ""
    event_remarks: str = ""
    publisher: str = ""
    license: str = ""
    vernacular: str = ""


def clean_occurrence(sp: Species, sources: Sequence[str] = ()) -> Occurrence:
    return Occurrence(
        species=sp,
        scientific_name=sp.lineage.species_binomial,
        ranks=tuple(sp.lineage.ranks[:6]),
        true_name=sp.lineage.species_binomial,
        media=[Media(source=s) for s in sources],
    )


def plan_records(
    species: Sequence[Species],
    train: dict[int, list[str]],
    test: dict[int, list[str]],
    backbone: Backbone,
    rng: np.random.Generator,
) -> list[Occurrence]:
    """Every occurrence with its faults, in file order, gbifIDs assigned."""
    by_id = {sp.species_id: sp for sp in species}
    base = [(by_id[sid], path) for sid in sorted(train) for path in train[sid]]
    n_base = len(base)

    # Pairs of consecutive images of one species share an occurrence.
    pair_starts = [i for i in range(n_base - 1) if base[i][0] is base[i + 1][0]]
    n_pairs = count_of(TWO_MEDIA_RATE, n_base)
    paired: set[int] = set()  # the first image of each pair
    for i in [pair_starts[int(k)] for k in rng.permutation(len(pair_starts))]:
        if len(paired) >= n_pairs:
            break
        if not {i - 1, i, i + 1} & paired:
            paired.add(i)
    occurrences: list[Occurrence] = []
    i = 0
    while i < n_base:
        width = 2 if i in paired else 1
        occurrences.append(clean_occurrence(base[i][0], [p for _, p in base[i : i + width]]))
        i += width
    for occ in occurrences:
        if occ.species.species_id in backbone.homonym_species:
            occ.name_fault = HOMONYM

    free = [o for o in occurrences if not o.name_fault]
    _apply_name_faults(free, n_base, backbone, rng)
    clean = [o for o in occurrences if not o.name_fault and len(o.media) == 1]
    clean = [clean[int(i)] for i in rng.permutation(len(clean))]

    n_dups = {f: count_of(EXTRA_FAULT_RATES[f], n_base) for f in (EXACT_DUPLICATE, NEAR_DUPLICATE)}
    originals = clean[: sum(n_dups.values())]
    clean = clean[len(originals) :]
    for occ in originals:
        occ.media[0].min_side = ORIGINAL_SIDE[0]
    for fault, rate in MODE_FAULT_RATES.items():
        for occ in clean[: count_of(rate, n_base)]:
            occ.media[0].fault = fault
        clean = clean[count_of(rate, n_base) :]

    duplicates = []
    dup_faults = [f for f, n in n_dups.items() for _ in range(n)]
    for occ, fault in zip(originals, dup_faults, strict=False):  # small trees: fewer
        copy = clean_occurrence(occ.species)
        copy.media = [Media(fault=fault, original=occ)]
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
    free: list[Occurrence], n_base: int, backbone: Backbone, rng: np.random.Generator
) -> None:
    """Give disjoint sets of occurrences each name fault, as far as candidates allow."""
    pool = [free[int(i)] for i in rng.permutation(len(free))]
    species_names = backbone.species_names
    for fault, rate in NAME_FAULT_RATES.items():
        wanted, done = count_of(rate, n_base), 0
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
) -> list[Occurrence]:
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
    mint = FreshNames(rng, (w for n in backbone.names for w in n.split(" ")))
    extras: list[Occurrence] = []

    def pick(pool: list[tuple[Species, str]], k: int) -> list[tuple[Species, str]]:
        return [pool[int(i)] for i in rng.choice(len(pool), k, replace=len(pool) < k)]

    for fault in (CORRUPT, LABEL, TOO_SMALL, BOMB):
        # Enough corrupt records for every kind of corruption to appear.
        minimum = len(CORRUPT_KINDS) if fault == CORRUPT else 1
        picked = pick(plain_train, count_of(EXTRA_FAULT_RATES[fault], n_base, minimum))
        for index, (sp, path) in enumerate(picked):
            occ = clean_occurrence(sp, [path])
            occ.media[0].fault = fault
            occ.junk = fault != TOO_SMALL
            if fault == CORRUPT:
                occ.media[0].corrupt_kind = CORRUPT_KINDS[index % len(CORRUPT_KINDS)]
            extras.append(occ)
    if plain_test:
        k = min(count_of(EXTRA_FAULT_RATES[LEAK], n_base), len(plain_test))
        for sp, path in [plain_test[int(i)] for i in rng.choice(len(plain_test), k, False)]:
            occ = clean_occurrence(sp, [path])
            occ.media[0].fault = LEAK
            occ.leak_of = path
            extras.append(occ)
    for sp, path in pick(plain_train, count_of(EXTRA_FAULT_RATES[UNRESOLVABLE], n_base)):
        occ = clean_occurrence(sp, [path])
        occ.scientific_name = invented_name(mint, backbone.names)
        occ.ranks = ("",) * 6  # given ranks would let a resolver fall back to them
        occ.true_name = ""
        occ.name_fault = UNRESOLVABLE
        extras.append(occ)
    return extras


def _set_category(occ: Occurrence, rng: np.random.Generator) -> None:
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
