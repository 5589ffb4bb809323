"""Regional species lists: ``taxoclip predict --region LIST --deny LIST``.

A list is a CSV of taxa known from a place (a GBIF checklist or species-list export, an
iNaturalist or national list): rank columns (``kingdom`` … ``species``, any subset;
``species`` may hold the binomial or the epithet, ``species_epithet``/``specificEpithet``
the epithet) and/or a ``scientificName``/``scientific_name`` column (authorship is
dropped), each row resolved against the text index. Names the index lacks are reported
and the rest used.

Roll-up (the geofence of camera-trap pipelines): a taxon is *allowed* when the list names
it or one of its ancestors (everything under a listed genus is allowed), or when it is an
ancestor of a listed taxon (the family of a listed species occurs there), and no denied
taxon is it or above it. Every species of the index lands on its deepest allowed rank:
itself when allowed, else its nearest allowed ancestor; a species with no allowed ancestor
is left out. A prediction at ``--rank R`` sums the species' probabilities over the taxa
they land on (cut at ``R``), so the scores are the model's probabilities, with the mass of
left-out species dropped (they can sum to less than 1). Rows gain ``rank_landed``.

This module resolves the lists into where each species lands (:func:`resolve_region`);
the scorer (:class:`taxoclip.runtime.scoring.TreeScorer`) sums and writes the rows.
"""

from __future__ import annotations

import csv
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taxoclip.errors import InputError, UsageError
from taxoclip.runtime.index import TextIndex
from taxoclip.runtime.scoring import landed_groups
from taxoclip.taxonomy import RANK_NAMES, Rank

_ALIASES = {
    "class_": "class",
    "specificepithet": "species_epithet",
    "species_epithet": "species_epithet",
    "scientificname": "scientific_name",
    "scientific_name": "scientific_name",
    "canonicalname": "scientific_name",
    "canonical_name": "scientific_name",
}
EXAMPLES = 5


def _norm(name: str) -> str:
    return unicodedata.normalize("NFC", str(name)).strip().casefold()


def _canonical(name: str) -> tuple[str, ...]:
    """``Panthera leo (Linnaeus, 1758)`` → ``("panthera", "leo")``; ``Felidae`` → one word."""
    words = unicodedata.normalize("NFC", name).replace("×", " ").split()
    if len(words) >= 2 and words[1][:1].islower() and words[1].isalpha():
        return (words[0].casefold(), words[1].casefold())
    return (words[0].casefold(),) if words else ()


@dataclass
class TaxonList:
    """A resolved list: the index's taxa it names (lineage prefixes) and what it lacks."""

    source: str
    n_rows: int
    taxa: set[tuple[str, ...]] = field(default_factory=set)
    unknown: list[str] = field(default_factory=list)

    def warning(self, flag: str) -> str | None:
        if not self.unknown:
            return None
        shown = ", ".join(self.unknown[:EXAMPLES])
        more = f" and {len(self.unknown) - EXAMPLES} more" if len(self.unknown) > EXAMPLES else ""
        return (
            f"{flag} {self.source}: {len(self.unknown)} of {self.n_rows} names are not in the "
            f"index and were left out ({shown}{more})"
        )


Prefix = tuple[str, ...]


@dataclass(frozen=True)
class _Query:
    """One row of a list: a taxon name at a rank (``depth``; None: any rank), or a
    species as ``(genus, epithet)``; ``words`` are normalised (NFC, case-folded)."""

    label: str
    words: tuple[str, ...]
    depth: int | None = None


def _resolve(index: TextIndex, queries: Sequence[_Query]) -> dict[_Query, set[Prefix]]:
    """Every query's lineage prefixes in the index: one pass over the index, each
    distinct name normalised once (a million taxa in seconds)."""
    by_name: dict[str, list[_Query]] = {}
    by_species: dict[tuple[str, str], list[_Query]] = {}
    for query in queries:
        if len(query.words) == 2:
            by_species.setdefault(query.words, []).append(query)
        elif query.words:
            by_name.setdefault(query.words[0], []).append(query)
    genera = {genus for genus, _ in by_species}
    found: dict[_Query, set[Prefix]] = {query: set() for query in queries}
    memo: dict[str, str] = {}

    def norm(name: str) -> str:
        value = memo.get(name)
        if value is None:
            value = memo[name] = _norm(name)
        return value

    for ranks, _common in index.names:
        for depth in range(6):
            name = ranks[depth]
            if name and by_name:
                for query in by_name.get(norm(name), ()):
                    if query.depth is None or query.depth == depth:
                        found[query].add(tuple(ranks[: depth + 1]))
        if genera and ranks[5] and norm(ranks[5]) in genera and ranks[6]:
            for query in by_species.get((norm(ranks[5]), _norm(ranks[6])), ()):
                found[query].add(tuple(ranks))
    return found


def _query(row: dict[str, str]) -> _Query:
    species = row.get("species", "")
    epithet = row.get("species_epithet", "")
    genus = row.get("genus", "")
    if species and " " in species:
        return _Query(species, _canonical(species))
    if (species or epithet) and genus:
        return _Query(f"{genus} {epithet or species}", (_norm(genus), _norm(epithet or species)))
    for depth in range(5, -1, -1):  # the deepest rank column the row fills
        value = row.get(RANK_NAMES[depth], "")
        if value:
            return _Query(value, (_norm(value),), depth)
    name = row.get("scientific_name", "")
    if name:
        return _Query(name, _canonical(name))
    return _Query(species or epithet or "(empty row)", ())


def read_list_rows(path: str | os.PathLike, flag: str = "--region") -> list[_Query]:
    """The rows of a list file as queries (an empty list is a usage error)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{flag} {path}: no such file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            sample = handle.read(4096)
            handle.seek(0)
            delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
            reader = csv.DictReader(handle, delimiter=delimiter)
            header = {
                raw: _ALIASES.get(raw.strip().lower(), raw.strip().lower())
                for raw in reader.fieldnames or []
            }
            known = set(RANK_NAMES) | {"species_epithet", "scientific_name"}
            if not known & set(header.values()):
                raise UsageError(
                    f"{flag} {path}: no taxon columns; expected some of "
                    f"{', '.join(RANK_NAMES)} or scientificName"
                )
            rows = [
                {header[k]: (v or "").strip() for k, v in row.items() if k in header}
                for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{flag} {path}: cannot read ({exc})") from exc
    rows = [row for row in rows if any(row.values())]
    if not rows:
        raise UsageError(f"{flag} {path} lists no taxa")
    return [_query(row) for row in rows]


def read_taxon_list(
    path: str | os.PathLike,
    index: TextIndex,
    flag: str = "--region",
    resolved: dict[_Query, set[Prefix]] | None = None,
) -> TaxonList:
    """Resolve the rows of a list against ``index``: names it lacks are kept in
    ``unknown``; a list none of whose names it knows is a usage error."""
    queries = read_list_rows(path, flag)
    resolved = resolved if resolved is not None else _resolve(index, queries)
    out = TaxonList(source=str(path), n_rows=len(queries))
    for query in queries:
        found = resolved.get(query, set())
        if found:
            out.taxa |= found
        else:
            out.unknown.append(query.label)
    if not out.taxa:
        raise UsageError(
            f"{flag} {path}: none of its {len(queries)} taxa is in the index "
            f"(e.g. {', '.join(out.unknown[:EXAMPLES])})"
        )
    return out


@dataclass
class Region:
    """Where every species of an index lands under an allow list and a deny list."""

    index: TextIndex
    landing: np.ndarray  # (N,) depth 0..6 each species lands on; -1: left out
    allow: TaxonList | None = None
    deny: TaxonList | None = None

    @classmethod
    def build(cls, index: TextIndex, allow: TaxonList | None, deny: TaxonList | None) -> Region:
        allowed = allow.taxa if allow else None
        ancestors: set[tuple[str, ...]] = set()
        for taxon in allowed or ():
            ancestors.update(taxon[: d + 1] for d in range(len(taxon)))
        denied = deny.taxa if deny else set()
        landing = np.full(len(index), -1, dtype=np.int64)
        for i, (ranks, _common) in enumerate(index.names):
            lineage = tuple(ranks)
            under_listed = allowed is None
            best = -1
            for depth in range(7):
                prefix = lineage[: depth + 1]
                if prefix in denied:
                    break
                under_listed = under_listed or prefix in allowed
                if under_listed or prefix in ancestors:
                    best = depth
            while best >= 0 and not lineage[best]:
                best -= 1  # a hole in the lineage: land on the named rank above it
            landing[i] = best
        if (landing < 0).all():
            raise UsageError("the region and deny lists leave no taxon of the index")
        return cls(index, landing, allow, deny)

    def groups(self, rank: Rank | str) -> tuple[np.ndarray, list[tuple[str, ...]], list[str]]:
        """``(group, labels, commons)``: species → the taxon it lands on, cut at ``rank``
        (the scorer's map: :func:`taxoclip.runtime.scoring.landed_groups`)."""
        return landed_groups(self.index.names, self.landing, Rank.parse(rank))

    def summary(self) -> dict:
        counts = {RANK_NAMES[d]: int((self.landing == d).sum()) for d in range(7)}
        return {
            "allow": self.allow.source if self.allow else None,
            "deny": self.deny.source if self.deny else None,
            "species_landing_on": {k: v for k, v in counts.items() if v},
            "species_left_out": int((self.landing < 0).sum()),
        }


def resolve_region(
    index: TextIndex, region: str | os.PathLike | None, deny: str | os.PathLike | None
) -> tuple[Region, list[str]]:
    """``--region``/``--deny`` resolved against ``index`` (after any ``--subset``): where
    each species lands, and a warning for each list naming taxa the index lacks."""
    queries = [
        *(read_list_rows(region, "--region") if region else []),
        *(read_list_rows(deny, "--deny") if deny else []),
    ]
    resolved = _resolve(index, queries)  # one pass over the index for both lists
    allow = read_taxon_list(region, index, "--region", resolved) if region else None
    denied = read_taxon_list(deny, index, "--deny", resolved) if deny else None
    warnings = [allow and allow.warning("--region"), denied and denied.warning("--deny")]
    return Region.build(index, allow, denied), [w for w in warnings if w]


def landing_table(region: Region) -> list[dict]:
    """Per species of the index: its lineage and the taxon it lands on (for docs/tests)."""
    rows = []
    for (ranks, common), depth in zip(region.index.names, region.landing.tolist(), strict=True):
        rows.append(
            {
                "species": f"{ranks[5]} {ranks[6]}",
                "common_name": common,
                "lands_on": ranks[depth]
                if depth < 6 and depth >= 0
                else (f"{ranks[5]} {ranks[6]}" if depth == 6 else ""),
                "rank_landed": RANK_NAMES[depth] if depth >= 0 else "",
            }
        )
    return rows
