"""Every emergent-property metric the data allows, for a model and its baseline.

:func:`compute_metrics` takes :class:`~taxoclip.analyze.data.Embedded` (the same images
embedded by each model) and runs the pure functions of :mod:`taxoclip.analyze.metrics` on
the species, images and variants each one needs, chosen from the labels only (never
from the embeddings), so the model and its baseline are measured on the same sets.
Each metric's entry holds the full result per model and, per headline statistic
(:data:`STATS`), the value beside its null, any named reference and the baseline
model's value, with a verdict (:func:`stat_entry`). The selection rules (species
centroids, which variants, which group rank) live here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import norm as normal
from scipy.stats import t as student_t

from taxoclip.errors import UsageError

from . import metrics as m
from .data import FINCH_TRAIT, Embedded

SEX_VALUES = ("female", "male")
STAGE_VALUES = ("adult", "juvenile")
MIN_CLADE_SPECIES = 5
TRAIT_PERMUTATIONS = 20  # the core's default 5 gives too rough a null sd for a verdict
GROUP_RANKS = ("genus", "family", "order")
#: The habitat null moves habitats between whole orders of the same class (metrics.
#: _permute_groups): a null must keep what the group split keeps (docs/analyze.md).
HABITAT_NULL_PARENT: str | None = "class"

#: The one-seed verdict's one-sided level (calibrated on the controls: docs/analyze.md).
ONE_SEED_LEVEL = 0.95
VERDICT_BASIS = (
    "one seed: 'holds' when the value lies beyond the one-sided 95% prediction bound of "
    "its null (null mean + t(0.95, df) * sqrt(sd_v^2 + sd_null^2 / n), n permutations, "
    "sd_v the value's sampling sd: its bootstrap sd over the S species used where the "
    "metric gives one, else the null's sd), beyond any named reference (majority class) by "
    "t * sd_v and beyond the baseline model's value by t * sqrt(sd_v^2 + sd_b^2); df by "
    "Welch-Satterthwaite (S-1 for a bootstrap sd, n-1 for a permutation sd; n-1 when the "
    "null's sd stands in for sd_v); 'does not hold' when it does "
    "not beat one of them at all; 'inconclusive' in between or when a number is missing. "
    "'detectable' is the largest of those widths. Measured false-positive rate on "
    "negative controls: <= 5% per statistic (docs/analyze.md). A claim needs >= 3 seeds "
    "before it is said to hold (docs/reference.md#metrics): read this as a screen."
)
CENTROID_POLICY = (
    "species centroid = mean of L2-normalised image embeddings over adult images (all "
    "images when the data has no life stage), as the midpoint of the female and male "
    "means when the species has both; species without such images are left out"
)


# --------------------------------------------------------------------------- selections


def variant_pair(labels: np.ndarray, preferred: tuple[str, str]) -> tuple[str, str] | None:
    """The two variant values to compare: ``preferred`` when both occur, else the two most
    frequent non-empty values (sorted), else None."""
    present = [v for v in labels.tolist() if v]
    if preferred[0] in present and preferred[1] in present:
        return preferred
    values = sorted(set(present), key=lambda v: (-present.count(v), v))
    return (values[0], values[1]) if len(values) >= 2 else None


def adult_rows(emb: Embedded) -> np.ndarray:
    """Images a centroid and the sex comparison use: adults, or all without life stages."""
    adult = emb.life_stage == STAGE_VALUES[0]
    return adult if adult.any() else np.ones(len(emb.species), dtype=bool)


def species_centroids(z: np.ndarray, emb: Embedded) -> tuple[np.ndarray, np.ndarray]:
    """(indices into ``emb.table``, centroids (S', D)) by the policy of this module."""
    rows = adult_rows(emb)
    pair = variant_pair(emb.sex[rows], SEX_VALUES)
    kept, centroids = [], []
    for index in range(len(emb.table.ids)):
        mine = rows & (emb.species_index == index)
        if not mine.any():
            continue
        centre = z[mine].mean(axis=0)
        if pair is not None:
            a, b = mine & (emb.sex == pair[0]), mine & (emb.sex == pair[1])
            if a.any() and b.any():
                centre = (z[a].mean(axis=0) + z[b].mean(axis=0)) / 2
        kept.append(index)
        centroids.append(centre)
    width = z.shape[1] if z.ndim == 2 else 0
    return np.asarray(kept, dtype=int), np.asarray(centroids, dtype=np.float64).reshape(-1, width)


def usable_species(
    species: np.ndarray, variant: np.ndarray, pair: tuple[str, str], min_per_variant: int
) -> list[str]:
    """Species with at least ``min_per_variant`` images of each of ``pair`` (sorted)."""
    used = []
    for name in np.unique(species):
        mine = variant[species == name]
        if min(int(np.sum(mine == pair[0])), int(np.sum(mine == pair[1]))) >= min_per_variant:
            used.append(str(name))
    return used


def group_labels(emb: Embedded, rank: str) -> np.ndarray:
    """Each image's name at ``rank``; a species missing that rank forms its own group."""
    names = emb.table.rank(rank)[emb.species_index]
    orphan = np.char.add("?", emb.species.astype(str))
    return np.where(names == "", orphan, names)


def choose_group_rank(
    emb: Embedded, rows: np.ndarray, variant: np.ndarray, pair: tuple[str, str], min_per: int
) -> str | None:
    """The lowest of genus, family, order where some group holds ≥ 2 usable species."""
    used = set(usable_species(emb.species[rows], variant[rows], pair, min_per))
    for rank in GROUP_RANKS:
        groups = group_labels(emb, rank)
        counts: dict[str, int] = {}
        for name in used:
            first = int(np.flatnonzero(emb.species == name)[0])
            counts[groups[first]] = counts.get(groups[first], 0) + 1
        if any(count >= 2 for count in counts.values()):
            return rank
    return None


# --------------------------------------------------------------------------- metrics

# kind -> [(statistic, null mean key, null sd key, higher is better, extra reference keys)]
# (higher is better is None for a descriptive number without a null)
STATS: dict[str, list[tuple[str, str | None, str | None, bool | None, tuple[str, ...]]]] = {
    "trait_alignment": [
        ("pc1_spearman", "null_pc1_spearman", "null_pc1_spearman_sd", True, ()),
        ("ridge_r2", "null_ridge_r2", "null_ridge_r2_sd", True, ()),
    ],
    "ecological_alignment": [
        (
            "probe_accuracy",
            "null_probe_accuracy",
            "null_probe_accuracy_sd",
            True,
            ("majority_accuracy",),
        ),
        ("cosine_gap", "null_cosine_gap", "null_cosine_gap_sd", True, ()),
    ],
    "taxonomic_alignment": [("spearman", "null_spearman", "null_spearman_sd", True, ())],
    "intra_species_separation": [
        ("probe_accuracy", "null_probe_accuracy", "null_probe_accuracy_sd", True, ()),
        ("fdr", "null_fdr", "null_fdr_sd", True, ()),
    ],
    "orthogonality": [
        ("fraction_outside", "null_fraction_outside", "null_fraction_outside_sd", True, ()),
        ("mean_abs_cos", "null_mean_abs_cos", "null_mean_abs_cos_sd", False, ()),
    ],
    "effective_dimension": [("images", None, None, None, ()), ("centroids", None, None, None, ())],
}


def to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _null_repeats(result: dict, sd_key: str) -> int | None:
    """How many permutations stand behind ``sd_key`` in a metric's result."""
    names = ("n_probe_permutations",) if "probe" in sd_key else ()
    for name in (*names, "n_null", "n_permutations"):
        if isinstance(result.get(name), int | float) and result[name] >= 1:
            return int(result[name])
    return None


def one_seed_width(*parts: tuple[float, int | None]) -> float:
    """What a value must clear to beat a reference on one seed.

    ``parts``: (sd, degrees of freedom) of each independent term of the difference, the
    df None for an sd taken as known. The width is ``t · √Σ sd²`` with t the
    :data:`ONE_SEED_LEVEL` quantile of Student's t whose degrees of freedom are
    Welch–Satterthwaite's, ``(Σ sd²)² / Σ (sd⁴ / df)`` (the normal quantile when no term
    has a count). Against a null, the parts are the value's sampling sd (a bootstrap over
    S species: S − 1 df; or the null's sd over n permutations: n − 1) and the null mean's
    own (sd/√n, n − 1 df): the one-sided prediction bound of one new draw from the null.
    Why Welch: with 3 permutations, t(0.95, 2) = 2.92 treated the whole width as known
    only to 2 df, although a bootstrap over 60 species gave most of it; the separation
    FDR then needed 4 noise-sd where 2 suffice at a 5 % false-positive rate
    (docs/analyze.md, "Welch–Satterthwaite").
    """
    variance = sum(sd * sd for sd, _ in parts)
    spread = sum((sd * sd) ** 2 / df for sd, df in parts if df is not None and df >= 1)
    if spread > 0:
        quantile = float(student_t.ppf(ONE_SEED_LEVEL, variance * variance / spread))
    else:
        quantile = float(normal.ppf(ONE_SEED_LEVEL))
    return quantile * math.sqrt(variance)


def _own_sd(result: dict, key: str, sd_key: str) -> tuple[float, int | None]:
    """(sd, df) of a value: its own bootstrap sd over the species the metric used where it
    gives one (``<key>_sd``; S − 1 df), else the null's sd (n − 1 df over n permutations):
    a permutation null's sd is the statistic's sd under H0."""
    own = result.get(f"{key}_sd")
    if own is None:
        n_null = _null_repeats(result, sd_key)
        return to_float(result.get(sd_key)), (n_null - 1 if n_null and n_null >= 2 else None)
    species = result.get("n_species_used") or result.get("n_species")
    return to_float(own), (int(species) - 1 if species and species >= 2 else None)


def stat_entry(model: dict, baseline: dict | None, spec) -> dict:
    """One headline statistic of a metric: value, baseline, null and the one-seed verdict
    (:data:`VERDICT_BASIS`; ``detectable``: the largest width it had to clear)."""
    key, null_key, sd_key, higher, extras = spec
    value = to_float(model.get(key))
    entry: dict[str, Any] = {
        "value": value,
        "baseline_value": to_float(baseline.get(key)) if baseline else None,
        "null": None,
        "higher_is_better": higher,
    }
    if null_key is None:
        entry["verdict"] = None
        return entry
    null_mean, null_sd = to_float(model.get(null_key)), to_float(model.get(sd_key))
    entry["null"] = {"mean": null_mean, "sd": null_sd}
    if baseline:
        entry["baseline_null"] = {
            "mean": to_float(baseline.get(null_key)),
            "sd": to_float(baseline.get(sd_key)),
        }
    n_null = _null_repeats(model, sd_key) or 1
    own = _own_sd(model, key, sd_key)
    null_df = n_null - 1 if n_null >= 2 else None
    if model.get(f"{key}_sd") is not None:  # two estimates: Welch–Satterthwaite combines them
        to_null = one_seed_width(own, (null_sd / math.sqrt(n_null), null_df))
    else:  # one estimate for both terms: the classic bound, t(n − 1) · sd · √(1 + 1/n)
        to_null = one_seed_width((null_sd * math.sqrt(1 + 1 / n_null), null_df))
    references = [(null_mean, to_null)]
    for extra in extras:
        entry[extra] = to_float(model.get(extra))
        references.append((entry[extra], one_seed_width(own)))
    if baseline:
        references.append(
            (entry["baseline_value"], one_seed_width(own, _own_sd(baseline, key, sd_key)))
        )
    rank = {m.DOES_NOT_HOLD: 0, m.INCONCLUSIVE: 1, m.HOLDS: 2}
    worst = None
    for reference, width in references:
        found = m.claim_holds(value, reference, spread=width, higher_is_better=higher, min_values=1)
        if worst is None or rank[found.verdict] < rank[worst.verdict]:
            worst = found
    assert worst is not None
    widths = [w for _, w in references]
    entry.update(
        verdict=worst.verdict,
        margin=worst.margin,
        spread=worst.spread,
        detectable=max(widths) if all(math.isfinite(w) for w in widths) else math.nan,
    )
    return entry


def _entry(
    kind: str, description: str, scope: str, n_used: dict, results: dict[str, dict], **extra
) -> dict:
    model, baseline = results["model"], results.get("baseline")
    return {
        "kind": kind,
        "description": description,
        "scope": scope,
        "n_used": n_used,
        **extra,
        "stats": {spec[0]: stat_entry(model, baseline, spec) for spec in STATS[kind]},
        "model": model,
        "baseline": baseline,
    }


def _pooled_trait(per_clade: dict[str, dict]) -> dict:
    """Clade results averaged, weighted by species; null sd that of the weighted mean."""
    usable = {k: v for k, v in per_clade.items() if math.isfinite(to_float(v["pc1_spearman"]))}
    weights = np.array([v["n_species"] for v in usable.values()], dtype=float)
    pooled: dict[str, Any] = {"n_species": int(weights.sum()), "n_clades": len(usable)}
    for key in ("pc1_spearman", "ridge_r2", "null_pc1_spearman", "null_ridge_r2"):
        values = np.array([to_float(v[key]) for v in usable.values()])
        pooled[key] = float(np.average(values, weights=weights)) if len(values) else math.nan
        sd_key = f"{key}_sd"
        if key.startswith("null"):
            sds = np.array([to_float(v[sd_key]) for v in usable.values()])
            w = weights / weights.sum() if len(weights) else weights
            pooled[sd_key] = float(np.sqrt(np.sum((w * sds) ** 2))) if len(sds) else math.nan
    pooled["n_permutations"] = TRAIT_PERMUTATIONS
    pooled["per_clade"] = per_clade
    return pooled


@dataclass
class _Run:
    """What every metric of one :func:`compute_metrics` call shares."""

    emb: Embedded
    seed: int
    min_per_variant: int
    centroids: dict[str, tuple[np.ndarray, np.ndarray]]  # model -> (table rows, centroids)
    out: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def kept(self) -> np.ndarray:
        """Rows of the species table that have a centroid (the same for every model)."""
        return self.centroids["model"][0]

    def each(self, function) -> dict[str, dict]:
        """``function(model name)`` for the model and the baseline, keyed by name."""
        return {name: function(name) for name in self.emb.z}

    def rows_by_sex(self) -> tuple[np.ndarray, tuple[str, str] | None, np.ndarray, bool]:
        """(adult rows, sex pair, per-image sex_strength, whether strength is known)."""
        adults = adult_rows(self.emb)
        table = self.emb.table
        strength = table.sex_strength[self.emb.species_index]
        known = not np.all(np.isnan(table.sex_strength))
        return adults, variant_pair(self.emb.sex[adults], SEX_VALUES), strength, known


def compute_metrics(
    emb: Embedded, *, seed: int = 0, min_per_variant: int = 4, only: Collection[str] = ()
) -> tuple[dict[str, dict], dict[str, str]]:
    """Every metric ``emb`` allows, for each model in ``emb.z``: ``(metrics, skipped)``.

    Which species and images go into a metric depends on the labels only, never on the
    embeddings, so the model and its baseline are measured on the same sets. ``only``:
    run just these families of :data:`FAMILIES` (the controls bench uses it to spend
    many seeds on a few statistics); empty runs every one.
    """
    if min_per_variant < 4:
        raise UsageError("min_per_variant must be >= 4 (each variant is split in halves)")
    unknown = sorted(set(only) - set(FAMILIES))
    if unknown:
        raise UsageError(f"unknown metric families {unknown}; choose from {sorted(FAMILIES)}")
    run = _Run(
        emb, seed, min_per_variant, {name: species_centroids(z, emb) for name, z in emb.z.items()}
    )
    for family, measure in FAMILIES.items():
        if not only or family in only:
            measure(run)
    return run.out, run.skipped


def _finch_metric(run: _Run) -> None:
    """The paper's claim: beak length along the finch genus' main axis."""
    name, table, kept = "trait_finch_beak_length", run.emb.table, run.kept
    finch = kept[np.nan_to_num(table.is_finch[kept], nan=0.0) == 1]
    finch = finch[np.isfinite(table.trait(FINCH_TRAIT)[finch])]
    if np.all(np.isnan(table.is_finch)):
        run.skipped[name] = "no is_finch column (SynthToL species.csv)"
        return
    if FINCH_TRAIT not in table.trait_names:
        run.skipped[name] = f"no {FINCH_TRAIT} column"
        return
    if len(finch) < 3:
        run.skipped[name] = f"{len(finch)} finch species with a centroid; need 3"
        return
    genera = sorted(set(table.rank("genus")[finch].tolist()))
    select = np.isin(kept, finch)
    beak = table.trait(FINCH_TRAIT)[kept[select]]
    results = run.each(
        lambda model: m.trait_alignment(
            run.centroids[model][1][select],
            beak,
            seed=run.seed,
            n_permutations=TRAIT_PERMUTATIONS,
        ).as_dict()
    )
    run.out[name] = _entry(
        "trait_alignment",
        "|Spearman rho| of beak length with PC1 of the finch species' centroids; "
        "cross-validated ridge R^2 centroid -> beak length",
        f"finch genus {', '.join(genera)} (is_finch), {len(finch)} species",
        {"species": int(len(finch))},
        results,
        trait=FINCH_TRAIT,
    )


def _trait_metrics(run: _Run) -> None:
    """Other traits within each order with >= MIN_CLADE_SPECIES species, averaged."""
    table, kept = run.emb.table, run.kept
    orders = table.rank("order")[kept]
    if not run.emb.analysis_traits:
        run.skipped["trait_other"] = "no numeric per-species trait column"
    for trait in run.emb.analysis_traits:
        name = f"trait_{trait}"
        values = table.trait(trait)[kept]
        finite = np.isfinite(values)
        clades = {
            order: np.flatnonzero(finite & (orders == order))
            for order in sorted(set(orders.tolist()))
            if order and np.sum(finite & (orders == order)) >= MIN_CLADE_SPECIES
        }
        if not clades and finite.sum() < 3:
            run.skipped[name] = f"{int(finite.sum())} species with a value of {trait}; need 3"
            continue
        if clades:
            scope = (
                f"within each order with >= {MIN_CLADE_SPECIES} species "
                f"({len(clades)} orders), averaged weighted by species"
            )
        else:
            scope = f"all species (no order has >= {MIN_CLADE_SPECIES} species)"

        def measure(model: str, clades=clades, values=values, finite=finite) -> dict:
            def one(rows: np.ndarray) -> dict:
                return m.trait_alignment(
                    run.centroids[model][1][rows],
                    values[rows],
                    seed=run.seed,
                    n_permutations=TRAIT_PERMUTATIONS,
                ).as_dict()

            if not clades:
                return one(np.flatnonzero(finite))
            return _pooled_trait({order: one(rows) for order, rows in clades.items()})

        n_species = sum(len(r) for r in clades.values()) if clades else int(finite.sum())
        run.out[name] = _entry(
            "trait_alignment",
            f"|Spearman rho| of {trait} with PC1 of the species centroids; cross-validated "
            f"ridge R^2 centroid -> {trait}",
            scope,
            {"species": int(n_species)},
            run.each(measure),
            trait=trait,
        )


def _ecology_metric(run: _Run) -> None:
    name, table, kept = "ecological_habitat", run.emb.table, run.kept
    habitat, orders = table.habitat[kept], table.rank("order")[kept]
    has = (habitat != "") & (orders != "")
    n_orders, n_habitats = len(set(orders[has].tolist())), len(set(habitat[has].tolist()))
    if not np.any(table.habitat != ""):
        run.skipped[name] = "no habitat column"
        return
    if n_orders < 2 or n_habitats < 2:
        run.skipped[name] = (
            f"species with a habitat and an order span {n_orders} orders and "
            f"{n_habitats} habitats; need 2 of each"
        )
        return
    parents = table.rank(HABITAT_NULL_PARENT)[kept][has] if HABITAT_NULL_PARENT else None
    results = run.each(
        lambda model: m.ecological_alignment(
            run.centroids[model][1][has],
            habitat[has],
            orders[has],
            parents=parents,
            seed=run.seed,
        ).as_dict()
    )
    run.out[name] = _entry(
        "ecological_alignment",
        "habitat from species centroids by a logistic probe, group split by order (no "
        "order in both training and test); cosine gap of same- vs different-habitat "
        "pairs from different orders",
        "species centroids, groups = order",
        {"species": int(has.sum()), "orders": n_orders, "habitats": n_habitats},
        results,
    )


def _taxonomy_metric(run: _Run) -> None:
    lineages = run.emb.table.lineages[run.kept]
    known = np.any(lineages != "", axis=1)
    n_known = int(known.sum())
    if n_known < 3:
        run.skipped["taxonomic"] = f"{n_known} species with a lineage; need 3"
        return
    tree = [tuple(row) for row in lineages[known]]
    results = run.each(
        lambda model: m.taxonomic_alignment(
            run.centroids[model][1][known], tree, seed=run.seed
        ).as_dict()
    )
    run.out["taxonomic"] = _entry(
        "taxonomic_alignment",
        "Spearman between centroid cosine distance and taxonomic distance (ranks to the "
        "common ancestor) over species pairs",
        "all species with a lineage",
        {"species": n_known, "pairs": n_known * (n_known - 1) // 2},
        results,
    )


# (name, rows, variant labels, pair, scope, expected)
_Plan = tuple[str, np.ndarray, np.ndarray, tuple[str, str], str, str | None]


def _separation_plans(run: _Run) -> list[_Plan]:
    """Sex among adults (dimorphic species; monomorphic as a control), life stage; what
    the labels cannot support goes into ``run.skipped``."""
    emb = run.emb
    adults, sex_pair, strength, known_strength = run.rows_by_sex()
    life_stage_pair = variant_pair(emb.life_stage, STAGE_VALUES)
    plans: list[_Plan] = []
    if sex_pair is None:
        run.skipped["separation_sex"] = "no sex column with two values"
        run.skipped["separation_sex_monomorphic"] = "no sex column with two values"
    elif known_strength:
        dimorphic = "adults of sexually dimorphic species (sex_strength > 0)"
        control = "adults of monomorphic species (sex_strength = 0): a control"
        expected = "no separation: the control should not beat its null"
        plans.append(
            ("separation_sex", adults & (strength > 0), emb.sex, sex_pair, dimorphic, None)
        )
        plans.append(
            (
                "separation_sex_monomorphic",
                adults & (strength == 0),
                emb.sex,
                sex_pair,
                control,
                expected,
            )
        )
    else:
        scope = "adults of all species (dimorphism unknown)"
        plans.append(("separation_sex", adults, emb.sex, sex_pair, scope, None))
        run.skipped["separation_sex_monomorphic"] = "no sex_strength column: monomorphic unknown"
    if life_stage_pair is None:
        run.skipped["separation_life_stage"] = "no life_stage column with two values"
    else:
        everything = np.ones(len(emb.species), dtype=bool)
        plans.append(
            (
                "separation_life_stage",
                everything,
                emb.life_stage,
                life_stage_pair,
                "all images, both sexes",
                None,
            )
        )
    return plans


def _separation_metrics(run: _Run) -> None:
    """Within-species separation of each planned variant pair (:func:`_separation_plans`)."""
    emb = run.emb
    plans = _separation_plans(run)
    for name, rows, variant, pair, scope, expected in plans:
        rows = rows & np.isin(variant, pair)
        used = usable_species(emb.species[rows], variant[rows], pair, run.min_per_variant)
        if not used:
            run.skipped[name] = (
                f"no species has >= {run.min_per_variant} images of both "
                f"{pair[0]} and {pair[1]} ({scope})"
            )
            continue

        def measure(model: str, rows=rows, variant=variant, pair=pair) -> dict:
            return m.intra_species_separation(
                emb.z[model][rows],
                emb.species[rows],
                variant[rows],
                values=pair,
                min_per_variant=run.min_per_variant,
                seed=run.seed,
            ).as_dict()

        extra: dict[str, Any] = {"variants": list(pair)}
        if expected:
            extra["expected"] = expected
        n_present = len(np.unique(emb.species[rows]))
        run.out[name] = _entry(
            "intra_species_separation",
            f"{pair[0]} vs {pair[1]} within each species: out-of-sample Fisher ratio "
            "(split halves) and balanced within-species probe accuracy",
            scope,
            {
                "species": len(used),
                "skipped_species": n_present - len(used),
                "images": int(rows.sum()),
                "min_per_variant": run.min_per_variant,
            },
            run.each(measure),
            **extra,
        )


def _orthogonality_metrics(run: _Run) -> None:
    emb = run.emb
    adults, sex_pair, strength, known_strength = run.rows_by_sex()
    life_stage_pair = variant_pair(emb.life_stage, STAGE_VALUES)
    plans: list[tuple[str, np.ndarray, np.ndarray, tuple[str, str], str]] = []
    if sex_pair is None:
        run.skipped["orthogonality_sex"] = "no sex column with two values"
    else:
        rows = adults & (strength > 0) if known_strength else adults
        scope = "adults of dimorphic species" if known_strength else "adults"
        plans.append(("orthogonality_sex", rows, emb.sex, sex_pair, scope))
    if life_stage_pair is None:
        run.skipped["orthogonality_life_stage"] = "no life_stage column with two values"
    else:
        plans.append(
            (
                "orthogonality_life_stage",
                np.ones(len(emb.species), dtype=bool),
                emb.life_stage,
                life_stage_pair,
                "all images, both sexes",
            )
        )
    for name, rows, variant, pair, scope in plans:
        rows = rows & np.isin(variant, pair)
        rank = choose_group_rank(emb, rows, variant, pair, run.min_per_variant)
        if rank is None:
            run.skipped[name] = (
                f"no genus, family or order holds 2 species with >= "
                f"{run.min_per_variant} images of both {pair[0]} and "
                f"{pair[1]}"
            )
            continue
        groups = group_labels(emb, rank)

        def measure(model: str, rows=rows, variant=variant, pair=pair, groups=groups) -> dict:
            return m.orthogonality(
                emb.z[model][rows],
                emb.species[rows],
                variant[rows],
                groups[rows],
                values=pair,
                min_per_variant=run.min_per_variant,
                seed=run.seed,
            ).as_dict()

        results = run.each(measure)
        first = results["model"]
        run.out[name] = _entry(
            "orthogonality",
            f"delta = mean({pair[0]}) - mean({pair[1]}) per species: fraction of its norm "
            f"outside the span of the {rank}'s species differences, and mean |cos| with them",
            f"{scope}; groups = {rank} (species centre = midpoint of the variant means)",
            {
                "groups": first["n_groups_used"],
                "species": first["n_species_used"],
                "images": int(rows.sum()),
                "group_rank": rank,
            },
            results,
            variants=list(pair),
        )


def _dimension_metric(run: _Run) -> None:
    def measure(model: str) -> dict:
        centroids = run.centroids[model][1]
        return {
            "images": m.effective_dimension(run.emb.z[model]),
            "centroids": m.effective_dimension(centroids) if len(centroids) >= 2 else math.nan,
        }

    run.out["effective_dimension"] = _entry(
        "effective_dimension",
        "participation ratio of the covariance eigenvalues: how many dimensions the "
        "embeddings use (no null: a descriptive number)",
        "all images; species centroids",
        {"images": int(len(run.emb.species)), "species": int(len(run.kept))},
        run.each(measure),
        embed_dim=int(run.emb.z["model"].shape[1]),
    )


#: The metric families :func:`compute_metrics` runs, in order (``only`` picks some).
FAMILIES: dict[str, Callable[[_Run], None]] = {
    "finch": _finch_metric,
    "traits": _trait_metrics,
    "ecology": _ecology_metric,
    "taxonomy": _taxonomy_metric,
    "separation": _separation_metrics,
    "orthogonality": _orthogonality_metrics,
    "dimension": _dimension_metric,
}
