"""Deterministic pseudo-Latin taxon names and English-like common names."""

from __future__ import annotations

import numpy as np


def words(text: str) -> tuple[str, ...]:
    """A vocabulary written as one string: its words, in order."""
    return tuple(text.split())


_ONSETS = words("b c d f g l m n p r s t v x z br cr dr gr pr tr ch ph th st sc pl cl")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "au", "y")
_CODAS = ("", "", "", "n", "r", "s", "l", "x", "m")

# Suffixes by rank, as in real nomenclature (animal-like and plant-like variants).
_RANK_SUFFIXES: tuple[tuple[str, ...], ...] = (
    ("ia", "ota", "ozoa"),  # kingdom
    ("ata", "phyta", "poda"),  # phylum
    ("ida", "opsida", "ea"),  # class
    ("iformes", "ales", "ida"),  # order
    ("idae", "aceae", "inae"),  # family
    ("us", "a", "is", "um", "ops", "ella"),  # genus
    ("ensis", "us", "a", "ii", "atus", "icola", "oides", "ea"),  # species epithet
)

HUE_WORDS = words("crimson orange amber yellow lime green jade teal azure blue violet magenta")
_PLACE_WORDS = words(
    "northern southern eastern western marsh highland coastal island forest desert "
    "river mountain valley reef lake cave"
)
_NOUNS = {
    "freshwater": ("minnow", "darter", "shiner", "loach", "chub", "dace", "gudgeon", "bream"),
    "marine": ("wrasse", "snapper", "goby", "blenny", "grunt", "damsel", "jack", "tang"),
    "terrestrial": ("shrew", "vole", "skink", "runner", "hopper", "digger", "quail", "mole"),
    "arboreal": ("glider", "climber", "finch", "creeper", "lemur", "tanager", "gecko", "sloth"),
}


def _stem(rng: np.random.Generator, syllables: int) -> str:
    parts = []
    for index in range(syllables):
        onset = _ONSETS[rng.integers(len(_ONSETS))]
        vowel = _VOWELS[rng.integers(len(_VOWELS))]
        coda = _CODAS[rng.integers(len(_CODAS))] if index == syllables - 1 else ""
        parts.append(onset + vowel + coda)
    return "".join(parts)


class NameMint:
    """Issues pseudo-Latin names, unique across the whole tree (no homonyms in clean data)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._used: set[str] = set()

    def name(self, rank_index: int) -> str:
        """A new name for a taxon at ``rank_index`` (0 kingdom … 6 species epithet)."""
        suffixes = _RANK_SUFFIXES[rank_index]
        for attempt in range(10_000):
            syllables = 2 if attempt < 2_000 else 3
            stem = _stem(self._rng, syllables)
            suffix = suffixes[self._rng.integers(len(suffixes))]
            if stem[-1] in "aeiouy" and suffix[0] in "aeiouy":
                stem = stem[:-1] or stem
            word = stem + suffix
            if rank_index < 6:
                word = word.capitalize()
            if word.lower() not in self._used:
                self._used.add(word.lower())
                return word
        raise RuntimeError("name space exhausted")  # pragma: no cover - 10^9 combinations


def hue_word(hue: float) -> str:
    return HUE_WORDS[int((hue % 1.0) * len(HUE_WORDS)) % len(HUE_WORDS)]


def common_name_candidates(
    hue: float, pattern: str, size: float, beak: float, habitat: str, family_noun: str
) -> list[str]:
    """Names from the species' look, from plainest to most qualified."""
    colour = hue_word(hue)
    pattern_word = {"stripes": "striped", "spots": "spotted"}.get(pattern, "")
    size_word = "lesser" if size < 0.55 else ("greater" if size > 0.62 else "")
    beak_word = "short-billed" if beak < 0.14 else ("long-billed" if beak > 0.28 else "")
    first = " ".join(w for w in (size_word, pattern_word, colour, family_noun) if w)
    second = " ".join(w for w in (size_word, beak_word, pattern_word, colour, family_noun) if w)
    return [first, second]


def family_noun(rng: np.random.Generator, habitat: str) -> str:
    nouns = _NOUNS[habitat]
    return nouns[rng.integers(len(nouns))]


def place_word(rng: np.random.Generator) -> str:
    return _PLACE_WORDS[rng.integers(len(_PLACE_WORDS))]
