"""The procedural tree of life: topology, names, traits evolving down the tree, habitats.

Traits follow Brownian motion on a latent scale with a step that shrinks with depth, so
relatives look alike. Habitat is inherited with occasional switches, so unrelated
lineages share habitats (convergence); habitat shows only through body plan (fins vs
legs, tail form, countershading, elongation), never through the background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from taxoclip.taxonomy import Lineage

from .names import NameMint, common_name_candidates, family_noun, place_word

HABITATS = ("freshwater", "marine", "terrestrial", "arboreal")
PATTERNS = ("none", "stripes", "spots")

# Brownian step per rank level (kingdom … species): variance shrinks with depth.
_STEP = np.array([1.0, 0.85, 0.7, 0.55, 0.45, 0.38, 0.32])
# Probability that a taxon's habitat / pattern differs from its parent's.
_HABITAT_SWITCH = np.array([1.0, 0.35, 0.3, 0.25, 0.15, 0.08, 0.04])
_PATTERN_SWITCH = np.array([1.0, 0.3, 0.25, 0.2, 0.15, 0.1, 0.06])
# Convergent body shape: aquatic species are more elongated whatever their clade.
_HABITAT_ELONGATION = {"freshwater": 0.25, "marine": 0.5, "terrestrial": 0.0, "arboreal": -0.15}

FINCH_BEAK_RANGE = (0.06, 0.42)
SPECIES_PER_GENUS = 3
CHILDREN_PER_PARENT = 2


@dataclass(frozen=True)
class Species:
    """One species of the synthetic tree with its ground truth."""

    species_id: int
    lineage: Lineage
    common_name: str
    hue: float  # 0–1, circular
    elongation: float  # body length / body height
    size: float  # adult body length (without tail and beak) as a fraction of the frame
    pattern: str
    pattern_freq: float
    beak_length: float  # in body lengths
    habitat: str
    sex_strength: float  # 0 = monomorphic
    is_finch: bool
    seen: bool

    def as_row(self) -> dict[str, object]:
        row: dict[str, object] = {"species_id": self.species_id}
        row.update(self.lineage.to_dict(class_key="class"))
        row["species"] = self.lineage.species_binomial
        row.update(
            common_name=self.common_name,
            habitat=self.habitat,
            hue=round(self.hue, 6),
            elongation=round(self.elongation, 6),
            size=round(self.size, 6),
            pattern=self.pattern,
            pattern_freq=round(self.pattern_freq, 6),
            beak_length=round(self.beak_length, 6),
            sex_strength=round(self.sex_strength, 6),
            is_finch=self.is_finch,
            seen=self.seen,
        )
        return row


@dataclass
class _Node:
    rank: int
    name: str
    parent: _Node | None
    latent: np.ndarray  # hue, elongation, size, pattern_freq, beak
    habitat: str
    pattern: str
    children: list[_Node] = field(default_factory=list)

    def lineage(self) -> list[str]:
        names, node = [], self
        while node is not None and node.rank >= 0:
            names.append(node.name)
            node = node.parent
        return names[::-1]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def rank_counts(n_species: int, finch_species: int) -> list[int]:
    """Taxa per rank (kingdom … species) for ``n_species`` species."""
    n_genus = math.ceil((n_species - finch_species) / SPECIES_PER_GENUS) + (finch_species > 0)
    counts = [n_genus]
    for _ in range(4):  # family, order, class, phylum
        counts.append(math.ceil(counts[-1] / CHILDREN_PER_PARENT))
    counts.append(min(2, counts[-1]))  # kingdoms
    return counts[::-1] + [n_species]


def _split(rng: np.random.Generator, total: int, parents: int) -> np.ndarray:
    """Children per parent: at least one each, the rest spread at random."""
    per_parent = np.ones(parents, dtype=int)
    extra = rng.integers(0, parents, size=total - parents)
    np.add.at(per_parent, extra, 1)
    return per_parent


def finch_genus_size(n_species: int) -> int:
    """Species of the finch genus: a tenth of the species, 4 to 24; 16 or more from 160
    species on (a rank correlation over fewer means little: with 10 species |rho| > 0.65
    happens by chance one time in 20)."""
    return 0 if n_species < 8 else min(24, max(4, n_species // 10))


def build_tree(
    n_species: int, rng: np.random.Generator, unseen_fraction: float = 0.1
) -> list[Species]:
    """Species of a fresh tree, ordered by lineage; ``species_id`` is the row index."""
    mint = NameMint(rng)
    n_finch = finch_genus_size(n_species)
    counts = rank_counts(n_species, n_finch)

    root = _Node(-1, "", None, np.zeros(5), HABITATS[rng.integers(4)], "none")
    level = [root]
    for rank, count in enumerate(counts[:-1]):
        if rank == 0:
            sizes = np.array([count])
        else:
            sizes = _split(rng, count, len(level))
        next_level = []
        for parent, n_children in zip(level, sizes, strict=True):
            for _ in range(int(n_children)):
                child = _child(rng, mint, parent, rank)
                parent.children.append(child)
                next_level.append(child)
        level = next_level

    genera = level
    finch_index = int(rng.integers(len(genera))) if n_finch else -1
    species_per_genus = np.zeros(len(genera), dtype=int)
    others = [i for i in range(len(genera)) if i != finch_index]
    if n_finch:
        species_per_genus[finch_index] = n_finch
    species_per_genus[others] = _split(rng, n_species - n_finch, len(others))

    finch_beaks = np.linspace(*FINCH_BEAK_RANGE, n_finch)
    finch_beaks = finch_beaks[rng.permutation(n_finch)]
    species: list[Species] = []
    nouns: dict[str, str] = {}
    used_common: set[str] = set()
    for genus_index, genus in enumerate(genera):
        is_finch = genus_index == finch_index
        for within in range(int(species_per_genus[genus_index])):
            node = _child(rng, mint, genus, 6, damp=0.12 if is_finch else 1.0)
            latent = node.latent
            beak = (
                float(finch_beaks[within])
                if is_finch
                else 0.06 + 0.3 * _sigmoid(float(latent[4]) * 1.6)
            )
            habitat = genus.habitat if is_finch else node.habitat
            elongation = 1.5 + 1.2 * _sigmoid(float(latent[1])) + _HABITAT_ELONGATION[habitat]
            size = 0.48 + 0.2 * _sigmoid(float(latent[2]))
            hue = float(latent[0]) % 1.0
            pattern = genus.pattern if is_finch else node.pattern
            family = genus.parent.name if genus.parent else ""
            noun = nouns.setdefault(family, family_noun(rng, habitat))
            common = _unique_common_name(
                rng,
                common_name_candidates(hue, pattern, size, beak, habitat, noun),
                used_common,
            )
            species.append(
                Species(
                    species_id=len(species),
                    lineage=Lineage.from_ranks(node.lineage()),
                    common_name=common,
                    hue=hue,
                    elongation=elongation,
                    size=size,
                    pattern=pattern,
                    pattern_freq=2.0 + 4.0 * _sigmoid(float(latent[3])),
                    beak_length=beak,
                    habitat=habitat,
                    sex_strength=0.0 if rng.random() < 0.2 else float(rng.uniform(0.55, 1.0)),
                    is_finch=is_finch,
                    seen=True,
                )
            )
    return _hold_out(species, rng, unseen_fraction)


def _child(
    rng: np.random.Generator, mint: NameMint, parent: _Node, rank: int, damp: float = 1.0
) -> _Node:
    step = _STEP[rank] * damp
    # Hue wanders on a smaller scale than the sigmoid-mapped traits (it is circular).
    scale = np.array([0.22, 1.0, 1.0, 1.0, 1.0]) * step
    latent = parent.latent + rng.normal(0.0, 1.0, 5) * scale
    habitat = parent.habitat
    if rng.random() < _HABITAT_SWITCH[rank] * damp:
        habitat = HABITATS[rng.integers(len(HABITATS))]
    pattern = parent.pattern
    if rng.random() < _PATTERN_SWITCH[rank] * damp:
        pattern = PATTERNS[rng.integers(len(PATTERNS))]
    return _Node(rank, mint.name(rank), parent, latent, habitat, pattern)


def _unique_common_name(rng: np.random.Generator, candidates: list[str], used: set[str]) -> str:
    # Like real taxa, some species have no common name at all.
    if rng.random() < 0.08:
        return ""
    for candidate in candidates:
        if candidate not in used:
            used.add(candidate)
            return candidate
    for _ in range(1000):
        candidate = f"{place_word(rng)} {candidates[-1]}"
        if candidate not in used:
            used.add(candidate)
            return candidate
    return ""


def _hold_out(species: list[Species], rng: np.random.Generator, fraction: float) -> list[Species]:
    """Mark a fraction of non-finch species as never seen in training."""
    candidates = [s.species_id for s in species if not s.is_finch]
    n_unseen = round(fraction * len(species)) if len(species) >= 10 else 0
    unseen = set(rng.choice(candidates, size=min(n_unseen, len(candidates)), replace=False))
    return [replace(s, seen=False) if s.species_id in unseen else s for s in species]
