"""Controls for every emergent-property statistic: planted effects and negative controls.

Each statistic of :mod:`taxoclip.analyze.suite` is run on embeddings whose geometry is
known, built from the labels of a real SynthToL world (its tree, habitats, traits, sexes
and life stages; :class:`~taxoclip.analyze.data.Embedded` without embeddings):

- **planted** (:func:`plant`): per-image embeddings in ``dim`` dimensions made of a species
  centroid, variant offsets and isotropic noise of sd 1 per dimension, then L2-normalised.
  The centroid lives in the first half of the dimensions (the *species half*): a random
  identity vector per species (always there: species differ), plus for each rank from
  kingdom to genus a random direction per taxon (``taxonomy``), a direction per habitat
  value (``habitat``), and directions along the finch genus' beak length and every
  species' hue (``beak``, ``hue``, times the z-scored trait). The sex offset (adults of
  dimorphic species, ``sex``) and the life-stage offset (``life_stage``) lie in the
  other half, outside every species vector, or with ``inside=True`` along the species'
  own difference from its genus mean, i.e. inside the span the orthogonality metric
  projects on. Every strength is a length in noise-sd units.
- **negative control**: the same noise and identity vectors, every strength 0.

:func:`run_controls` runs :func:`~taxoclip.analyze.suite.compute_metrics` on a grid of
strengths (all properties planted together at each level) and on negative controls over
many seeds, and returns per headline statistic its detection rate at each strength
("holds" over seeds), its detectable effect (the smallest strength detected in at least
:data:`DETECTED_SHARE` of the seeds) and its false-positive rate on the negative control.
Each draw comes from ``(seed, component)``, so every strength of one seed sees the same
noise and identity vectors, and the same seed gives the same numbers. No file I/O;
``bench/analysis_controls.py`` prints and writes the table.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from taxoclip.stats import l2_normalize

from .data import FINCH_TRAIT, AnalysisData, Embedded
from .suite import STAGE_VALUES, compute_metrics

#: The properties a control can plant, each a length in noise-sd units.
PROPERTIES = ("taxonomy", "habitat", "beak", "hue", "sex", "life_stage")
#: The length of each species' random identity vector (not a property: species differ).
IDENTITY = 2.0
#: The planted strengths of the default grid (noise-sd units).
LEVELS = (0.25, 0.5, 1.0, 2.0, 4.0)
#: A statistic "detects" a strength when it holds in at least this share of the seeds.
DETECTED_SHARE = 0.8
#: Which planted property each metric should read; None: a control that reads nothing.
READS: dict[str, str | None] = {
    "trait_finch_beak_length": "beak",
    "trait_hue": "hue",
    "trait_elongation": None,
    "ecological_habitat": "habitat",
    "taxonomic": "taxonomy",
    "separation_sex": "sex",
    "separation_sex_monomorphic": None,
    "separation_life_stage": "life_stage",
    "orthogonality_sex": "sex",
    "orthogonality_life_stage": "life_stage",
}
# Components of one seed's draws (each its own stream: SeedSequence([seed, component])).
_IDENTITY, _TAXA, _HABITAT, _TRAITS, _VARIANTS, _NOISE = range(6)
_BASELINE_SEED = 1_000_003  # the baseline's draws: an independent negative control


@dataclass(frozen=True)
class Strengths:
    """How strongly each property is planted (noise-sd units; 0 = absent)."""

    taxonomy: float = 0.0
    habitat: float = 0.0
    beak: float = 0.0
    hue: float = 0.0
    sex: float = 0.0
    life_stage: float = 0.0
    inside: bool = False  # variant offsets inside the species span instead of outside

    @classmethod
    def every(cls, level: float, inside: bool = False) -> Strengths:
        """Every property planted at ``level``."""
        return cls(**dict.fromkeys(PROPERTIES, level), inside=inside)


def labels_from(data: AnalysisData) -> Embedded:
    """The labels of ``data`` (from :func:`~taxoclip.analyze.data.read_analysis_data`) as
    an :class:`Embedded` without embeddings, ready for :func:`with_embeddings`."""
    n = len(data.species)
    return Embedded(
        {},
        np.asarray(data.species, dtype=str),
        np.asarray(data.sex, dtype=str),
        np.asarray(data.life_stage, dtype=str),
        np.asarray(data.split, dtype=str),
        np.asarray(data.filepaths, dtype=str).reshape(n),
        data.table,
        data.kind,
        list(data.analysis_traits),
    )


def with_embeddings(labels: Embedded, model: np.ndarray, baseline: np.ndarray | None = None):
    """``labels`` with ``model`` (and ``baseline``) as its embeddings."""
    z = {"model": model} if baseline is None else {"model": model, "baseline": baseline}
    return dataclasses.replace(labels, z=z)


def _rng(seed: int, component: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, component]))


def _directions(rng: np.random.Generator, n: int, width: int, length: float) -> np.ndarray:
    """``n`` random directions in ``width`` dimensions, each about ``length`` long."""
    return rng.normal(size=(n, width)) * (length / math.sqrt(width))


def _zscore(values: np.ndarray) -> np.ndarray:
    """Z-scores of the finite values; 0 where a value is missing or nothing varies."""
    finite = np.isfinite(values)
    out = np.zeros(len(values))
    if finite.sum() >= 2 and np.std(values[finite]) > 0:
        out[finite] = (values[finite] - values[finite].mean()) / values[finite].std()
    return out


def species_vectors(labels: Embedded, strengths: Strengths, seed: int, half: int) -> np.ndarray:
    """(S, half) planted species centroids before noise: identity, taxa, habitat, traits."""
    table = labels.table
    n_species = len(table.ids)
    centres = _directions(_rng(seed, _IDENTITY), n_species, half, IDENTITY)
    taxa = _rng(seed, _TAXA)
    for rank in range(table.lineages.shape[1] - 1):  # kingdom … genus; species is identity
        # a taxon is its path from the root, so homonyms in different clades stay apart
        paths = ["/".join(row[: rank + 1]) for row in table.lineages]
        names, index = np.unique(paths, return_inverse=True)
        vectors = _directions(taxa, len(names), half, strengths.taxonomy)
        centres += np.where((table.lineages[:, rank] != "")[:, None], vectors[index], 0.0)
    habitats, index = np.unique(table.habitat, return_inverse=True)
    vectors = _directions(_rng(seed, _HABITAT), len(habitats), half, strengths.habitat)
    centres += np.where((table.habitat != "")[:, None], vectors[index], 0.0)
    traits = _rng(seed, _TRAITS)
    finch = np.nan_to_num(table.is_finch, nan=0.0) == 1
    beak = np.where(finch, table.trait(FINCH_TRAIT), np.nan)
    for trait, strength in ((beak, strengths.beak), (table.trait("hue"), strengths.hue)):
        direction = traits.normal(size=half)
        centres += np.outer(_zscore(trait), direction / np.linalg.norm(direction) * strength)
    return centres


def _inside_directions(labels: Embedded, centres: np.ndarray) -> np.ndarray:
    """Per species, the unit direction of its centroid from its genus' mean (family's when
    it is alone in its genus): a direction inside the span of its group's differences."""
    out = np.zeros_like(centres)
    for rank in (5, 4, 3):  # genus, family, order
        groups = labels.table.lineages[:, : rank + 1]
        keys = ["/".join(row) for row in groups]
        for key in set(keys):
            members = [i for i, k in enumerate(keys) if k == key]
            if len(members) < 2:
                continue
            todo = [i for i in members if not out[i].any()]
            offsets = centres[todo] - centres[members].mean(axis=0)
            out[todo] = l2_normalize(offsets)
    return out


def plant(labels: Embedded, strengths: Strengths, seed: int, dim: int = 64) -> np.ndarray:
    """(N, dim) L2-normalised float32 embeddings of ``labels``' images (module docstring)."""
    if dim < 4 or dim % 2:
        raise ValueError(f"dim must be an even number >= 4, got {dim}")
    half = dim // 2
    table = labels.table
    n = len(labels.species)
    centres = np.zeros((len(table.ids), dim))
    centres[:, :half] = species_vectors(labels, strengths, seed, half)
    z = centres[labels.species_index].copy()
    variants = _rng(seed, _VARIANTS)
    adult = labels.life_stage == STAGE_VALUES[0]
    dimorphic = np.nan_to_num(table.sex_strength, nan=0.0)[labels.species_index] > 0
    # +1/2 for one variant, -1/2 for the other: the two differ by one strength
    sex_sign = np.where(labels.sex == "male", 0.5, -0.5) * (adult & dimorphic)
    stage_sign = np.where(adult, 0.5, -0.5) * np.isin(labels.life_stage, STAGE_VALUES)
    outside = [variants.normal(size=half) for _ in range(2)]
    if strengths.inside:
        along = _inside_directions(labels, centres[:, :half])[labels.species_index]
        sex_dir = stage_dir = np.hstack([along, np.zeros((n, half))])
    else:
        sex_dir, stage_dir = (np.r_[np.zeros(half), v / np.linalg.norm(v)] for v in outside)
    z += (sex_sign * strengths.sex)[:, None] * sex_dir
    z += (stage_sign * strengths.life_stage)[:, None] * stage_dir
    z += _rng(seed, _NOISE).normal(size=(n, dim))
    return l2_normalize(z).astype(np.float32)


def negative_control(labels: Embedded, seed: int, dim: int = 64) -> np.ndarray:
    """The same noise and identity vectors as :func:`plant` with every strength 0."""
    return plant(labels, Strengths(), seed, dim)


# --------------------------------------------------------------------------- running


def verdicts(metrics: dict[str, dict]) -> dict[str, dict]:
    """``{"<metric>.<stat>": {"verdict", "value", "null", "null_sd", "detectable",
    "higher_is_better"}}`` of the
    headline statistics with a verdict."""
    out = {}
    for name, entry in metrics.items():
        for stat, cell in entry["stats"].items():
            if cell.get("verdict") is None:
                continue
            out[f"{name}.{stat}"] = {
                "verdict": cell["verdict"],
                "value": cell["value"],
                "null": (cell.get("null") or {}).get("mean"),
                "null_sd": (cell.get("null") or {}).get("sd"),
                "detectable": cell.get("detectable"),
                "higher_is_better": cell.get("higher_is_better"),
            }
    return out


@dataclass(frozen=True)
class ControlRow:
    """One headline statistic over the controls.

    ``reads``: the property it should detect (None for a control statistic that should
    stay quiet everywhere); ``holds``: share of seeds whose verdict is "holds" at each
    strength of the grid (every property planted at it); ``detectable``: the smallest
    strength with ``holds`` ≥ :data:`DETECTED_SHARE` (None: none); ``false_positive_rate``:
    share of negative-control seeds that say "holds"; ``inside``: share saying "holds"
    when the variant offsets lie inside the species span (orthogonality only);
    ``negative_value``/``negative_null``: mean value and null on the negative control.
    """

    statistic: str
    reads: str | None
    holds: dict[float, float]
    detectable: float | None
    false_positive_rate: float
    n_negative: int
    n_seeds: int
    inside: float | None = None
    negative_value: float | None = None
    negative_null: float | None = None


@dataclass(frozen=True)
class ControlTable:
    """Every statistic's row, the design, and each run's verdicts (for further checks)."""

    rows: list[ControlRow]
    levels: tuple[float, ...]
    seeds: tuple[int, ...]
    negative_seeds: tuple[int, ...]
    dim: int
    baseline: bool
    runs: dict[str, list[dict[str, dict]]] = field(default_factory=dict)  # level → per seed


def _mean(values: Iterable[float | None]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else None


def run_controls(
    labels: Embedded,
    *,
    levels: Sequence[float] = LEVELS,
    seeds: Sequence[int] = tuple(range(10)),
    negative_seeds: Sequence[int] = tuple(range(24)),
    dim: int = 64,
    baseline: bool = False,
    inside_level: float | None = 4.0,
    only: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> ControlTable:
    """The control table of every headline statistic (module docstring).

    ``baseline``: give each run a baseline model, an independent negative control (its own
    draws), as ``taxoclip analyze`` gives its untrained twin; else the model alone.
    ``inside_level``: also plant every property at this level with the variant offsets
    inside the species span (None: skip). ``only``: these metric families alone
    (``compute_metrics``).
    """
    runs: dict[str, list[dict[str, dict]]] = {}

    def measure(key: str, strengths: Strengths, seed_list: Sequence[int]) -> None:
        runs[key] = []
        for seed in seed_list:
            model = plant(labels, strengths, seed, dim)
            other = negative_control(labels, _BASELINE_SEED + seed, dim) if baseline else None
            metrics, _ = compute_metrics(
                with_embeddings(labels, model, other), seed=seed, only=only
            )
            runs[key].append(verdicts(metrics))
            if progress:
                progress(f"{key} seed {seed}")

    measure("negative", Strengths(), negative_seeds)
    for level in levels:
        measure(str(float(level)), Strengths.every(level), seeds)
    if inside_level is not None:
        measure("inside", Strengths.every(inside_level, inside=True), seeds)
    return ControlTable(
        _rows(runs, levels), tuple(levels), tuple(seeds), tuple(negative_seeds), dim, baseline, runs
    )


def _holds_share(per_seed: list[dict[str, dict]], statistic: str) -> float | None:
    found = [run[statistic]["verdict"] == "holds" for run in per_seed if statistic in run]
    return float(np.mean(found)) if found else None


def _rows(runs: dict[str, list[dict[str, dict]]], levels: Sequence[float]) -> list[ControlRow]:
    names = sorted({stat for per_seed in runs.values() for run in per_seed for stat in run})
    order = {name: i for i, name in enumerate(READS)}
    names.sort(key=lambda s: (order.get(s.split(".")[0], len(order)), s))
    rows = []
    for statistic in names:
        metric = statistic.split(".")[0]
        holds = {
            float(level): share
            for level in levels
            if (share := _holds_share(runs[str(float(level))], statistic)) is not None
        }
        reads = READS.get(metric)
        detected = [lv for lv, share in sorted(holds.items()) if share >= DETECTED_SHARE]
        negative = runs["negative"]
        inside = _holds_share(runs["inside"], statistic) if "inside" in runs else None
        rows.append(
            ControlRow(
                statistic=statistic,
                reads=reads,
                holds=holds,
                detectable=detected[0] if detected and reads else None,
                false_positive_rate=_holds_share(negative, statistic) or 0.0,
                n_negative=sum(statistic in run for run in negative),
                n_seeds=max(sum(statistic in r for r in runs[str(float(lv))]) for lv in levels),
                inside=inside if metric.startswith("orthogonality") else None,
                negative_value=_mean(r[statistic]["value"] for r in negative if statistic in r),
                negative_null=_mean(r[statistic]["null"] for r in negative if statistic in r),
            )
        )
    return rows
