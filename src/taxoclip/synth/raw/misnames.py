"""Name faults of the raw source: authorship variants, misspellings, invented names."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from .spec import AUTHORS

if TYPE_CHECKING:
    from .backbone import FreshNames


def authorship_variant(index: int, rng: np.random.Generator) -> str:
    """An authorship string in one of the forms records use (cycled by ``index``)."""
    first, second = (AUTHORS[i] for i in rng.choice(len(AUTHORS), 2, replace=False))
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


def invented_name(mint: FreshNames, names: Iterable[str]) -> str:
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
