"""The raw source's offline backbone in GBIF's format: accepted taxa, synonyms, homonyms.

Synonym rows of Taxon.tsv carry the accepted taxon's kingdom … family but their own genus
and specificEpithet, so ``genus + specificEpithet == canonicalName`` on every species row.
A second, plant-like kingdom repeats some of the tree's binomials as homonyms.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..names import HUE_WORDS, NameMint, hue_word, words
from ..tree import Species
from .spec import (
    AUTHORS,
    GBIF_RANKS,
    HOMONYM_SPECIES_RATE,
    RAW_FORMAT_VERSION,
    SYNONYM_SPECIES_RATE,
    count_of,
    raw_rng,
    write_tsv,
)

TAXON_COLUMNS = (
    "taxonID",
    "parentNameUsageID",
    "acceptedNameUsageID",
    "scientificName",
    "canonicalName",
    "taxonRank",
    "taxonomicStatus",
    "kingdom",
    "phylum",
    "class",
    "order",
    "family",
    "genus",
    "specificEpithet",
)
VERNACULAR_COLUMNS = ("taxonID", "vernacularName", "language")
SYNONYM_STATUSES = ("homotypic synonym", "heterotypic synonym", "synonym")
_BOTANISTS = ("L.", "Mill.", "DC.", "Hook.f.", "Benth.", "Willd.", "Lam.", "Pers.")
_HUE_TRANSLATIONS = {  # in the order of names.HUE_WORDS
    "de": words(
        "Karmesin Orange Bernstein Gelb Limetten Grün Jade Petrol Azur Blau Violett Magenta"
    ),
    "fr": words("cramoisi orange ambré jaune citron vert jade sarcelle azur bleu violet magenta"),
    "es": words(
        "carmesí naranja ámbar amarillo lima verde jade turquesa azur azul violeta magenta"
    ),
}
_OTHER_LANGUAGE_RATE = 0.12


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
    rng = raw_rng(seed, 0)
    mint = FreshNames(rng, (w for sp in species for w in sp.lineage.ranks))
    seen = [sp.species_id for sp in species if sp.seen]
    n_homonyms = count_of(HOMONYM_SPECIES_RATE, len(seen)) if len(seen) >= 2 else 0
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
                table.add_accepted(path[: rank + 1], zoo_authorship(rng) if rank else "")
        # A species moved to another genus cites its original author in parentheses.
        author = zoo_authorship(rng)
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
            author = own if status == "homotypic synonym" else zoo_authorship(rng)
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
    mint: FreshNames,
    rng: np.random.Generator,
) -> dict[int, list[tuple[str, str, str]]]:
    """species_id → [(genus, epithet, status)]; seen species first, so records can use them."""
    plain = [sp for sp in species if sp.species_id not in homonym_species]
    seen = [sp for sp in plain if sp.seen]
    unseen = [sp for sp in plain if not sp.seen]
    chosen = [
        seen[int(i)]
        for i in rng.choice(len(seen), count_of(SYNONYM_SPECIES_RATE, len(seen)), False)
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


class FreshNames:
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


def zoo_authorship(rng: np.random.Generator) -> str:
    if rng.random() < 0.1:
        return "Linnaeus, 1758"
    first, second = rng.choice(len(AUTHORS), 2, replace=False)
    year = int(rng.integers(1760, 1990))
    if rng.random() < 0.2:
        return f"{AUTHORS[first]} & {AUTHORS[second]}, {year}"
    return f"{AUTHORS[first]}, {year}"


def _botanist(rng: np.random.Generator) -> str:
    return _BOTANISTS[int(rng.integers(len(_BOTANISTS)))]


def write_backbone(folder: Path, backbone: Backbone) -> None:
    """Taxon.tsv, VernacularName.tsv and VERSION into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_tsv(folder / "Taxon.tsv", TAXON_COLUMNS, backbone.taxa)
    write_tsv(folder / "VernacularName.tsv", VERNACULAR_COLUMNS, backbone.vernacular)
    (folder / "VERSION").write_text(backbone.version + "\n", encoding="utf-8")
