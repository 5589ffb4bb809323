"""Offline taxonomic name resolution against a GBIF-format backbone.

A verbatim scientific name (authorship, qualifiers, odd case and all) is parsed with GBIF's
own name parser, then matched against the backbone: exact accepted name, synonym → its
accepted taxon, a conservative fuzzy match for misspellings, and, failing those, the deepest
higher rank that does match. Homonyms are told apart only by the higher ranks the record
gives; anywhere else the backbone's classification wins over the record's.
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import nameparser
from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from taxoclip.curate.records import (
    GIVEN_RANKS,
    RESOLVED_STATUSES,
    STATUS_EXACT,
    STATUS_FUZZY,
    STATUS_HIGHER_RANK,
    STATUS_SYNONYM,
    STATUS_UNRESOLVED,
)
from taxoclip.errors import UsageError
from taxoclip.taxonomy import Lineage, clean_name
from taxoclip.taxonomy.backbone import (
    TAXON_REQUIRED,
    backbone_version,
    english_names,
    read_columns,
    taxon_file,
)

__all__ = ["Backbone", "NameResolver", "ParsedQuery", "Resolution", "name_key", "parse_name"]

# Lineage ranks above species, as backbone rank names, in the order of GIVEN_RANKS.
HIGHER_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus")
_HIGHER_INDEX = {rank: index for index, rank in enumerate(HIGHER_RANKS)}
_TAXON_COLUMNS = (
    "taxonID",
    "parentNameUsageID",
    "acceptedNameUsageID",
    "canonicalName",
    "taxonRank",
    "taxonomicStatus",
    *HIGHER_RANKS,
    "specificEpithet",
)
_NO_HIGHER = ("",) * len(HIGHER_RANKS)
# Epithet qualifiers that say the specimen is *not* (or not only) the named species.
_NOT_THE_SPECIES = {"aff.": "'aff.' names a species near it, not it"}


def name_key(text: str) -> str:
    """Matching key of a name: whitespace collapsed, lower case, accents dropped
    (``Müller`` and ``Muller`` are one key: data sets and backbones disagree on them)."""
    text = " ".join(text.split())
    if not text.isascii():
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in decomposed if not unicodedata.combining(c))
    return text.lower()


def _shown(key: str) -> str:
    """A binomial key as a name is written (``fringilla coelebs`` → ``Fringilla coelebs``)."""
    return key[:1].upper() + key[1:]


def _status_kind(status: str) -> str:
    """``accepted``, ``doubtful``, ``synonym`` or ``other`` from GBIF's spellings."""
    status = status.strip().lower().replace("_", " ")
    if status in ("accepted", "doubtful"):
        return status
    if "synonym" in status or status == "misapplied":
        return "synonym"
    return "other"


class _Taxon(NamedTuple):
    """One accepted (or doubtful) backbone taxon, as much as resolution needs (a tuple:
    a million of them are built at load time, and tuples build fastest)."""

    parent: str
    rank: str  # lower case: "species", "genus", "subspecies", …
    canonical: str
    higher: tuple[str, ...]  # kingdom … genus columns, "" where the file leaves them empty
    epithet: str  # specificEpithet column ("" if absent)

    @property
    def below_species(self) -> bool:
        return (
            self.rank != "species"
            and self.rank not in _HIGHER_INDEX
            and (len(self.canonical.split()) >= 3)
        )


class Backbone:
    """An indexed GBIF-format backbone: accepted names (homonyms kept apart), synonyms,
    lineages (filled from parents where the rank columns are empty), English names, and
    each genus's epithets for fuzzy matching."""

    COLUMNS = _TAXON_COLUMNS

    def __init__(
        self,
        rows: Iterable[tuple[str, ...]],
        english: Mapping[str, str] | None = None,
        version: str = "",
    ) -> None:
        """Index ``rows`` (tuples in the order of ``Backbone.COLUMNS``); prefer :meth:`load`."""
        self.version = version
        self.english: dict[str, str] = dict(english or {})
        self._taxa: dict[str, _Taxon] = {}
        self._accepted: dict[str, tuple[str, ...]] = {}  # name key -> accepted taxonIDs
        self._synonyms: dict[str, tuple[str, ...]] = {}  # name key -> accepted taxonIDs
        self._genera: set[str] = set()  # keys of every genus the backbone knows
        self._epithets: dict[str, set[str]] = {}  # genus key -> epithet keys (binomials)
        self._genera_of_epithet: dict[str, tuple[str, ...]] | None = None  # built when needed
        self._doubtful: set[str] = set()  # taxonIDs GBIF marks doubtful
        self._higher_cache: dict[str, tuple[str, ...]] = {}
        self._index(rows)

    @classmethod
    def load(cls, folder: str | Path) -> Backbone:
        """Read and index ``folder`` (``Taxon.tsv``, optional ``VernacularName.tsv`` and
        ``VERSION``); raises :class:`InputError` if Taxon.tsv is missing or malformed."""
        folder = Path(folder)
        rows = read_columns(taxon_file(folder), _TAXON_COLUMNS, required=TAXON_REQUIRED)
        return cls(rows, english_names(folder), backbone_version(folder))

    def _index(self, rows: Iterable[tuple[str, ...]]) -> None:
        # Tuples grown by concatenation, not lists: at 10⁶ rows nearly every name is
        # unique, and a 1-tuple is built faster and kept smaller than a list.
        accepted_names, doubtful_names = self._accepted, {}
        synonym_rows: list[tuple[str, str, str]] = []  # (name key, own id, accepted id)
        binomials: list[str] = []
        ranks: dict[str, str] = {}  # verbatim rank -> normalised ("SPECIES" -> "species")
        kinds: dict[str, str] = {}  # verbatim status -> _status_kind()
        intern = sys.intern  # one copy of each repeated rank name ("Animalia" × 10⁶)
        for taxon_id, parent, accepted, canonical, rank, status, *rest in rows:
            canonical = " ".join(canonical.split())
            if not canonical:
                continue
            if status not in kinds:
                kinds[status] = _status_kind(status)
            kind = kinds[status]
            key = canonical.lower() if canonical.isascii() else name_key(canonical)
            if kind == "synonym":
                synonym_rows.append((key, taxon_id, accepted or parent))
                binomials.append(key)
                continue
            if kind == "other":
                continue
            higher = tuple([intern(value.strip()) for value in rest[:-1]])
            if rank not in ranks:
                ranks[rank] = rank.strip().lower().replace(" ", "_")
            rank = ranks[rank]
            self._taxa[taxon_id] = _Taxon(parent, rank, canonical, higher, rest[-1].strip())
            names = accepted_names if kind == "accepted" else doubtful_names
            names[key] = names.get(key, ()) + (taxon_id,)
            if kind == "doubtful":
                self._doubtful.add(taxon_id)
            if rank == "genus":
                self._genera.add(key)
            elif rank == "species":
                binomials.append(key)
        # A doubtful name counts only where no accepted taxon has that name (GBIF keeps
        # many doubtful duplicates of accepted names; they must not make homonyms).
        for key, ids in doubtful_names.items():
            accepted_names.setdefault(key, ids)
        self._index_binomials(binomials)
        synonym_of = {own: target for _, own, target in synonym_rows}
        for key, _, target in synonym_rows:
            for _ in range(5):  # a synonym of a synonym: follow the chain a few steps
                if target in self._taxa or target not in synonym_of:
                    break
                target = synonym_of[target]
            targets = self._synonyms.get(key, ())
            if target in self._taxa and target not in targets:
                self._synonyms[key] = (*targets, target)

    def _index_binomials(self, keys: Iterable[str]) -> None:
        epithets = self._epithets
        for key in keys:
            genus, _, epithet = key.partition(" ")
            if epithet and " " not in epithet:
                bucket = epithets.get(genus)
                if bucket is None:
                    bucket = epithets[genus] = set()
                bucket.add(epithet)
        self._genera.update(epithets)

    def __len__(self) -> int:
        """Number of accepted and doubtful taxa."""
        return len(self._taxa)

    # ---- look-ups (keys are name_key()s) ----
    def accepted_ids(self, key: str) -> tuple[str, ...]:
        return self._accepted.get(key, ())

    def synonym_targets(self, key: str) -> tuple[str, ...]:
        return self._synonyms.get(key, ())

    def has_genus(self, key: str) -> bool:
        return key in self._genera

    def epithets(self, genus_key: str) -> frozenset[str]:
        return frozenset(self._epithets.get(genus_key, ()))

    def genera_with_epithet(self, epithet_key: str) -> tuple[str, ...]:
        if self._genera_of_epithet is None:  # only misspelt genera need it: build on demand
            index: dict[str, tuple[str, ...]] = {}
            for genus, epithets in self._epithets.items():
                for epithet in epithets:
                    index[epithet] = index.get(epithet, ()) + (genus,)
            self._genera_of_epithet = index
        return self._genera_of_epithet.get(epithet_key, ())

    def rank(self, taxon_id: str) -> str:
        return self._taxa[taxon_id].rank

    def canonical(self, taxon_id: str) -> str:
        return self._taxa[taxon_id].canonical

    def is_below_species(self, taxon_id: str) -> bool:
        return self._taxa[taxon_id].below_species

    def is_doubtful(self, taxon_id: str) -> bool:
        return taxon_id in self._doubtful

    def species_of(self, taxon_id: str) -> str:
        """The taxon itself, or for a subspecies/variety/… its species (if the backbone
        links one): records resolve to species, the deepest rank a lineage holds."""
        seen = 0
        current = taxon_id
        while current in self._taxa and self._taxa[current].below_species and seen < 10:
            current, seen = self._taxa[current].parent, seen + 1
        return current if current in self._taxa else taxon_id

    def lineage(self, taxon_id: str) -> Lineage:
        """All 7 ranks down to the taxon's own (species epithet ``""`` above species)."""
        taxon = self._taxa[taxon_id]
        higher = self._higher(taxon_id)
        if taxon.rank != "species" and not taxon.below_species:
            return Lineage(*higher)
        words = taxon.canonical.split(" ")
        epithet = taxon.epithet or (words[1] if len(words) > 1 else "")
        if not higher[-1]:  # no genus column nor genus parent: the binomial names it
            higher = (*higher[:-1], words[0])
        return Lineage(*higher, epithet)

    def _higher(self, taxon_id: str) -> tuple[str, ...]:
        """Kingdom … genus of a taxon: its own columns, holes filled from its parents."""
        if taxon_id in self._higher_cache:
            return self._higher_cache[taxon_id]
        chain: list[str] = []
        current = taxon_id
        while current in self._taxa and current not in self._higher_cache:
            if current in chain:  # a cycle in parentNameUsageID: stop walking
                break
            chain.append(current)
            current = self._taxa[current].parent
        above = self._higher_cache.get(current, _NO_HIGHER)
        for member in reversed(chain):
            taxon = self._taxa[member]
            names = [own or inherited for own, inherited in zip(taxon.higher, above, strict=True)]
            if taxon.rank in _HIGHER_INDEX:
                depth = _HIGHER_INDEX[taxon.rank]
                names[depth] = taxon.canonical
                names[depth + 1 :] = [""] * (len(names) - depth - 1)
            above = self._higher_cache[member] = tuple(names)
        return self._higher_cache.get(taxon_id, _NO_HIGHER)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What one verbatim name resolved to, and why."""

    status: str  # one of taxoclip.curate.records.STATUSES
    lineage: Lineage = field(default_factory=Lineage)
    taxon_id: str = ""  # accepted backbone taxonID
    accepted_name: str = ""  # canonical name of that taxon
    common_name: str = ""
    score: float = 0.0  # 100 for exact/synonym/higher rank, rapidfuzz ratio for fuzzy
    note: str = ""  # why: unresolved, higher rank, ambiguity, ignored qualifiers
    backbone_version: str = ""

    @property
    def resolved(self) -> bool:
        """Resolved to a species (exact, synonym or fuzzy), TaxonoPy's "resolved"."""
        return self.status in RESOLVED_STATUSES


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """The parts of a verbatim name that matching uses (keys, not display forms)."""

    genus: str = ""  # genus of a binomial, or "" for a uninomial
    epithet: str = ""
    infraspecific: str = ""
    uninomial: str = ""  # a name above species: "Carabidae", "Fringilla" in "Fringilla sp."
    not_species: str = ""  # why the epithet must not be taken (aff., aggregates)
    note: str = ""  # why parsing gave no name, or what was ignored

    @property
    def binomial(self) -> str:
        return f"{self.genus} {self.epithet}" if self.genus and self.epithet else ""


def _fix_case(text: str) -> str:
    """``fringilla coelebs`` / ``FRINGILLA COELEBS`` → ``Fringilla coelebs``: the parser
    reads a lower-case first word as a placeholder, and an all-caps second word as an author."""
    if text.isupper():
        text = text.lower()
    first, _, rest = text.partition(" ")
    if first.isalpha():
        first = first[0].upper() + first[1:].lower()
    return f"{first} {rest}" if rest else first


def parse_name(name: str) -> ParsedQuery:
    """Parse a verbatim name with GBIF's parser into matching keys; never raises."""
    text = clean_name(name)
    if not text:
        return ParsedQuery(note="empty name")
    try:
        parsed = nameparser.parse(_fix_case(text))
    except nameparser.UnparsableNameError as error:
        return ParsedQuery(note=f"parse failed: {error}")
    if isinstance(parsed, nameparser.Informal):  # "Fringilla sp.", "Carabidae indet."
        return ParsedQuery(uninomial=name_key(parsed.taxon), note=f"species not given in {text!r}")
    genus = name_key(parsed.genus or "")
    epithet = name_key(parsed.specific_epithet or "")
    if not (genus and epithet):
        return ParsedQuery(uninomial=genus or name_key(parsed.uninomial or ""))
    qualifiers = sorted(set((parsed.epithet_qualifier or {}).values()))
    not_species = "; ".join(_NOT_THE_SPECIES[q] for q in qualifiers if q in _NOT_THE_SPECIES)
    if parsed.rank == "SPECIES_AGGREGATE":
        not_species = not_species or "a species aggregate, not one species"
    ignored = [q for q in qualifiers if q not in _NOT_THE_SPECIES]
    return ParsedQuery(
        genus=genus,
        epithet=epithet,
        infraspecific=name_key(parsed.infraspecific_epithet or ""),
        not_species=not_species,
        note=f"qualifier {', '.join(ignored)} ignored" if ignored else "",
    )


def _given_keys(given: Mapping[str, str] | None) -> tuple[str, ...]:
    """The record's higher ranks as name keys, kingdom … genus (``class`` or ``class_``)."""
    given = given or {}
    values = []
    for rank in GIVEN_RANKS:
        value = given.get(rank) or (given.get("class") if rank == "class_" else None) or ""
        values.append(name_key(clean_name(value)))
    return tuple(values)


@dataclass(frozen=True, slots=True)
class _Choice:
    taxon_id: str = ""
    note: str = ""  # why there is no taxon_id when several candidates remained


class NameResolver:
    """Resolves verbatim names against a :class:`Backbone` (see the module docstring)."""

    def __init__(
        self,
        backbone: Backbone,
        fuzzy_cutoff: int = 2,
        fuzzy_min_length: int = 4,
        cache_size: int = 200_000,
    ) -> None:
        """``fuzzy_cutoff``: the most edits (Damerau/OSA: a transposition is one) a misspelt
        epithet of 8 letters or more may carry; shorter epithets and genera allow at most 1,
        and 0 turns fuzzy matching off. ``fuzzy_min_length``: shorter epithets and genera
        are never fuzzy-matched (one edit in "rex" is a third of it)."""
        if fuzzy_cutoff < 0 or fuzzy_min_length < 1:
            raise UsageError(
                f"fuzzy_cutoff must be >= 0 and fuzzy_min_length >= 1, "
                f"got {fuzzy_cutoff} and {fuzzy_min_length}"
            )
        self.backbone = backbone
        self.fuzzy_cutoff = fuzzy_cutoff
        self.fuzzy_min_length = fuzzy_min_length
        self.cache_size = cache_size
        self._cache: dict[tuple[str, tuple[str, ...]], Resolution] = {}

    def resolve_many(
        self, queries: Iterable[tuple[str, Mapping[str, str] | None]]
    ) -> list[Resolution]:
        """Resolve each ``(name, given ranks)``; each distinct pair is resolved once and
        remembered (up to ``cache_size`` pairs) across calls."""
        results = []
        for name, given in queries:
            key = (name, _given_keys(given))
            if key not in self._cache:
                if len(self._cache) >= self.cache_size:
                    self._cache.clear()
                self._cache[key] = self.resolve(name, given)
            results.append(self._cache[key])
        return results

    def resolve(self, name: str, given: Mapping[str, str] | None = None) -> Resolution:
        """Resolve one verbatim name; ``given`` holds the record's higher ranks
        (``kingdom, phylum, class_, order, family, genus``; values may be ``""``)."""
        query = parse_name(name)
        given_keys = _given_keys(given)
        notes = [query.note] if query.note else []
        if query.not_species:
            notes.append(query.not_species)
        elif query.binomial:
            resolution = self._resolve_species(query, given_keys, notes)
            if resolution is not None:
                return resolution
        return self._resolve_higher(query, given_keys, notes, clean_name(name))

    # ---- species ----
    def _resolve_species(
        self, query: ParsedQuery, given: tuple[str, ...], notes: list[str]
    ) -> Resolution | None:
        """Exact, synonym or fuzzy species match; ``None`` to fall back to higher ranks
        (with the reason appended to ``notes``). Homonyms the given ranks cannot tell
        apart end here, unresolved: their genus is as ambiguous as they are."""
        keys = [query.binomial]
        if query.infraspecific:  # a trinomial may itself be a name (or a synonym elsewhere)
            keys.insert(0, f"{query.binomial} {query.infraspecific}")
        for key in keys:
            for status, ids in (
                (STATUS_EXACT, self.backbone.accepted_ids(key)),
                (STATUS_SYNONYM, self.backbone.synonym_targets(key)),
            ):
                if ids:
                    choice = self._choose(ids, given)
                    if not choice.taxon_id:
                        return self._unresolved([*notes, choice.note])
                    return self._resolved(choice.taxon_id, status, 100.0, notes)
        fuzzy = self._fuzzy(query)
        if isinstance(fuzzy, str):
            notes.append(f"no species match for {_shown(query.binomial)!r} ({fuzzy})")
            return None
        target_key, distance = fuzzy
        ids = self.backbone.accepted_ids(target_key) or self.backbone.synonym_targets(target_key)
        choice = self._choose(ids, given)
        if not choice.taxon_id:
            notes.append(f"fuzzy match {_shown(target_key)!r}: {choice.note}")
            return None
        score = round(fuzz.ratio(query.binomial, target_key), 1)
        edits = f"{distance} edit{'s' * (distance > 1)}"
        via = f"fuzzy: {_shown(query.binomial)!r} → {_shown(target_key)!r} ({edits})"
        return self._resolved(choice.taxon_id, STATUS_FUZZY, score, [*notes, via])

    def _fuzzy(self, query: ParsedQuery) -> tuple[str, int] | str:
        """(binomial key, edits) of the one backbone binomial the query misspells, or why
        there is none. Only one part may be misspelt: the epithet within an exactly
        matching genus, or the genus (1 edit) with an exactly matching epithet."""
        genus, epithet = query.genus, query.epithet
        if self.backbone.has_genus(genus):
            if len(epithet) < self.fuzzy_min_length:
                return "epithet too short to fuzzy-match"
            limit = min(self.fuzzy_cutoff, 1 if len(epithet) < 8 else 2)
            best = self._unique_nearest(epithet, self.backbone.epithets(genus), limit)
            if isinstance(best, str):
                return f"epithet: {best} in genus {genus!r}"
            return f"{genus} {best[0]}", best[1]
        if self.fuzzy_cutoff < 1:
            return "unknown genus"
        if len(genus) < self.fuzzy_min_length:
            return "unknown genus, too short to fuzzy-match"
        best = self._unique_nearest(genus, self.backbone.genera_with_epithet(epithet), 1)
        if isinstance(best, str):
            return f"unknown genus: {best} among genera with epithet {epithet!r}"
        return f"{best[0]} {epithet}", best[1]

    @staticmethod
    def _unique_nearest(word: str, choices: Collection[str], limit: int) -> tuple[str, int] | str:
        """The single choice within ``limit`` edits (OSA: a transposition is one edit) that
        is strictly nearer than every other; else why not."""
        if limit < 1 or not choices:
            return "none near enough"
        hits = process.extract(word, choices, scorer=OSA.distance, score_cutoff=limit, limit=None)
        if not hits:
            return f"nothing within {limit} edit{'s' * (limit > 1)}"
        nearest = min(distance for _, distance, _ in hits)
        tied = sorted(choice for choice, distance, _ in hits if distance == nearest)
        if len(tied) > 1:
            return f"ambiguous: {', '.join(map(repr, tied))} equally near"
        return tied[0], nearest

    # ---- higher ranks ----
    def _resolve_higher(
        self, query: ParsedQuery, given: tuple[str, ...], notes: list[str], verbatim: str
    ) -> Resolution:
        """The deepest rank that matches: the name's genus (or the uninomial name at any
        rank), else the record's given ranks from genus up to kingdom."""
        attempts: list[tuple[str, str | None]] = []
        if query.genus:
            attempts.append((query.genus, "genus"))
        elif query.uninomial:
            attempts.append((query.uninomial, None))
        attempts += [
            (value, rank)
            for value, rank in zip(given[::-1], HIGHER_RANKS[::-1], strict=True)
            if value
        ]
        tried = set()
        found_any = bool(query.binomial)  # its species step already said what failed
        for key, rank in attempts:
            if (key, rank) in tried:
                continue
            tried.add((key, rank))
            # an accepted name first; a synonym (a genus sunk into another) only failing that
            ids = self._above_species(self.backbone.accepted_ids(key), rank)
            via_synonym = not ids
            if via_synonym:
                ids = self._above_species(self.backbone.synonym_targets(key), rank)
            if not ids:
                continue
            found_any = True
            choice = self._choose(ids, given)
            if not choice.taxon_id:
                notes.append(f"{rank or 'name'} {_shown(key)!r}: {choice.note}")
                continue
            found = self.backbone.rank(choice.taxon_id)
            matched = f"matched {found} {self.backbone.canonical(choice.taxon_id)!r}"
            notes.append(
                f"{matched} (accepted name of {_shown(key)!r})" if via_synonym else matched
            )
            return self._resolved(choice.taxon_id, STATUS_HIGHER_RANK, 100.0, notes)
        if not found_any and (query.uninomial or not notes):
            notes.append(f"no match for {verbatim!r}")
        return self._unresolved(notes)

    def _above_species(self, ids: Iterable[str], rank: str | None) -> list[str]:
        """Those of ``ids`` at ``rank`` (any rank above species when ``None``)."""
        ranks = [(taxon_id, self.backbone.rank(taxon_id)) for taxon_id in ids]
        if rank is not None:
            return [taxon_id for taxon_id, found in ranks if found == rank]
        return [
            taxon_id
            for taxon_id, found in ranks
            if found != "species" and not self.backbone.is_below_species(taxon_id)
        ]

    # ---- shared ----
    def _choose(self, ids: Iterable[str], given: tuple[str, ...]) -> _Choice:
        """One taxon among candidates (subspecies counted as their species); given ranks
        that contradict a candidate's lineage exclude it, holes on either side do not."""
        candidates = list(dict.fromkeys(self.backbone.species_of(i) for i in ids))
        if not candidates:
            return _Choice(note="no accepted taxon")
        if len(candidates) == 1:
            return _Choice(candidates[0])
        if not any(given):
            return _Choice(note=f"homonym: {len(candidates)} candidates, no higher ranks given")
        agreeing = [c for c in candidates if self._agrees(c, given)]
        if len(agreeing) == 1:
            return _Choice(agreeing[0])
        return _Choice(note=f"homonym: {len(candidates)} candidates, given ranks do not decide")

    def _agrees(self, taxon_id: str, given: tuple[str, ...]) -> bool:
        ranks = self.backbone.lineage(taxon_id).ranks[: len(given)]
        return all(not g or not r or name_key(r) == g for g, r in zip(given, ranks, strict=True))

    def _resolved(self, taxon_id: str, status: str, score: float, notes: list[str]) -> Resolution:
        lineage = self.backbone.lineage(taxon_id)
        if self.backbone.is_doubtful(taxon_id):
            notes = [*notes, "the backbone marks this taxon doubtful"]
        if status != STATUS_HIGHER_RANK and not lineage.species:
            # a name whose accepted taxon sits above species (rare backbone quirk)
            status = STATUS_HIGHER_RANK
            notes = [*notes, f"accepted taxon is a {self.backbone.rank(taxon_id)}"]
        return Resolution(
            status=status,
            lineage=lineage,
            taxon_id=taxon_id,
            accepted_name=self.backbone.canonical(taxon_id),
            common_name=self.backbone.english.get(taxon_id, ""),
            score=score,
            note="; ".join(notes),
            backbone_version=self.backbone.version,
        )

    def _unresolved(self, notes: list[str]) -> Resolution:
        return Resolution(
            status=STATUS_UNRESOLVED,
            note="; ".join(notes),
            backbone_version=self.backbone.version,
        )
