"""The 7-rank Linnaean lineage, with holes allowed at any rank."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum


class Rank(IntEnum):
    """Linnaean ranks, ordered from the root; names as pybioclip spells them (lower case)."""

    KINGDOM = 0
    PHYLUM = 1
    CLASS = 2
    ORDER = 3
    FAMILY = 4
    GENUS = 5
    SPECIES = 6

    def get_label(self) -> str:
        """Lower-case name (``"class"``), as pybioclip's ``Rank.get_label``."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | int | Rank) -> Rank:
        """Accept ``Rank``, an index 0–6, or a name in any case."""
        if isinstance(value, Rank):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[str(value).strip().upper()]
        except KeyError:
            names = ", ".join(r.get_label() for r in cls)
            raise ValueError(f"unknown rank {value!r}; expected one of {names}") from None


RANKS: tuple[Rank, ...] = tuple(Rank)
RANK_NAMES: tuple[str, ...] = tuple(r.get_label() for r in Rank)
N_RANKS = len(RANKS)


def clean_name(value: object) -> str:
    """Normalise one rank's name: NFC, whitespace collapsed, ``None``/NaN → ``""`` (missing)."""
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN from pandas
        return ""
    text = unicodedata.normalize("NFC", str(value))
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class Lineage:
    """Kingdom → species epithet. ``""`` marks a missing rank ("hole-punched" lineages).

    The species slot holds the *epithet* (``hudsonia``), as pybioclip's
    ``txt_emb_species.json`` and TreeOfLife's ``taxonomic_name`` do; the binomial is
    :attr:`species_binomial`.
    """

    kingdom: str = ""
    phylum: str = ""
    klass: str = ""  # "class" is a Python keyword; use lineage[Rank.CLASS] or .ranks
    order: str = ""
    family: str = ""
    genus: str = ""
    species: str = ""

    def __post_init__(self) -> None:
        for field in self.__slots__:
            object.__setattr__(self, field, clean_name(getattr(self, field)))

    @classmethod
    def from_ranks(cls, ranks: Sequence[object]) -> Lineage:
        """From a sequence of up to 7 names, root first (shorter sequences end early)."""
        if len(ranks) > N_RANKS:
            raise ValueError(f"a lineage has at most {N_RANKS} ranks, got {len(ranks)}: {ranks!r}")
        return cls(*ranks)

    @classmethod
    def from_mapping(cls, row: dict[str, object]) -> Lineage:
        """From a dict with rank-name keys (``class`` or ``class_`` accepted for the class)."""
        values = []
        for name in RANK_NAMES:
            if name == "class":
                value = row.get("class_", row.get("class", ""))
            elif name == "species":
                value = row.get("species_epithet") or _epithet(row.get("species"), row.get("genus"))
            else:
                value = row.get(name, "")
            values.append(value)
        return cls(*values)

    @property
    def ranks(self) -> tuple[str, ...]:
        return (
            self.kingdom,
            self.phylum,
            self.klass,
            self.order,
            self.family,
            self.genus,
            self.species,
        )

    def __getitem__(self, rank: Rank | int | str) -> str:
        return self.ranks[Rank.parse(rank)]

    def __iter__(self):
        return iter(self.ranks)

    @property
    def is_empty(self) -> bool:
        return not any(self.ranks)

    @property
    def depth(self) -> int:
        """Number of rank levels down to the deepest present rank (0 for an empty lineage)."""
        for index in range(N_RANKS - 1, -1, -1):
            if self.ranks[index]:
                return index + 1
        return 0

    @property
    def deepest_rank(self) -> Rank | None:
        return RANKS[self.depth - 1] if self.depth else None

    def truncate(self, rank: Rank | int | str) -> Lineage:
        """The lineage down to ``rank`` inclusive (lower ranks emptied)."""
        keep = Rank.parse(rank) + 1
        return Lineage.from_ranks(self.ranks[:keep])

    @property
    def species_binomial(self) -> str:
        """``Genus epithet``; ``""`` unless both genus and species are present."""
        if self.genus and self.species:
            return f"{self.genus} {self.species}"
        return ""

    @property
    def taxonomic_name(self) -> str:
        """Present ranks joined by spaces, missing ones skipped (TreeOfLife's key)."""
        return " ".join(name for name in self.ranks if name)

    @property
    def scientific_name(self) -> str:
        """The binomial, or else the deepest present rank's name, or ``""``."""
        if self.species_binomial:
            return self.species_binomial
        if self.species and not self.genus:
            return self.species
        for name in reversed(self.ranks):
            if name:
                return name
        return ""

    def to_list(self) -> list[str]:
        """``[kingdom, …, species_epithet]`` with ``""`` holes (pybioclip's JSON)."""
        return list(self.ranks)

    def to_dict(self, class_key: str = "class") -> dict[str, str]:
        """pybioclip's column names: rank names, the class rank under ``class_key``, and the
        species slot as ``species_epithet`` (in pybioclip's CSV ``species`` is the binomial)."""
        names = [class_key if n == "class" else n for n in RANK_NAMES[:-1]]
        return dict(zip([*names, "species_epithet"], self.ranks, strict=True))


def _epithet(species: object, genus: object) -> str:
    """pybioclip's ``species`` column is the binomial; reduce it to the epithet."""
    species, genus = clean_name(species), clean_name(genus)
    if genus and species.startswith(genus + " "):
        return species[len(genus) + 1 :]
    return species


def taxonomic_distance(a: Lineage, b: Lineage) -> int:
    """Rank levels from the farther of ``a`` and ``b`` up to their common ancestor, 0–7.

    Ranks are compared from the root; a rank missing on either side is compatible (a hole
    says nothing). The common ancestor is at the first rank where both are present and
    differ; without such a rank it is at the shallower of the two lineages. So identical
    species give 0, congeners 1, and a species beside its own genus 1.
    """
    depth_a, depth_b = a.depth, b.depth
    common = min(depth_a, depth_b)
    for index, (name_a, name_b) in enumerate(zip(a.ranks, b.ranks, strict=True)):
        if name_a and name_b and name_a != name_b:
            common = index
            break
    return max(depth_a, depth_b) - common
