"""The paper's claims as verdicts over seeds: pure functions over per-replicate values.

A *replicate* is one (world seed, model seed) pair: a SynthToL tree and a training seed.
Every statistic is a value per replicate for the stage-2 model at each data size and for
each baseline (the untrained twin, the stage-1 "general" model, a flat-label run, a
no-replay run) and its null (labels shuffled within species, as ``taxoclip analyze``
draws it). These functions turn them into the ``claims`` and ``trends`` of study.json.

The rule (one rule, used for every claim; docs/analyze.md):

- **claim** at the largest size: with m the mean over replicates and s their sd, a claim
  *holds* when, for every comparator c it names (baselines and/or the null),
  m - m_c > 2 * sqrt((s² + s_c²) / 2) (higher-is-better statistics; reversed for lower).
  It *does not hold* when m is not beyond some comparator's mean at all, and is
  *inconclusive* otherwise (beyond every mean, not by the margin). The margin is also
  the smallest difference the design can call a hold; study.json gives it as
  ``detectable``. With one replicate there is no seed spread: each value's own sampling
  sd stands in for s and s_c where its metric gives one (a bootstrap over species, the
  separation and orthogonality statistics), else the null's own sd (from its
  permutations); the entry says so (``n_seeds`` 1).
- **trend** ("grows with data"): per replicate, the least-squares slope of the statistic
  over log2(training images); the mean slope's 95 % t-interval over replicates. It
  *holds* when the interval lies above 0 (below for lower-is-better), *does not hold*
  when it lies on the wrong side, and is *inconclusive* when it contains 0. Fewer than two
  replicates give no interval: inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t

HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"
BASELINES = ("untrained", "general", "flat", "no_replay", "null")
RULE = (
    "claim holds when its mean over replicates (world seed x model seed) beats the mean of "
    "every comparator it names by more than 2 * sqrt((sd^2 + sd_c^2) / 2); does not hold "
    "when it does not beat some comparator's mean; inconclusive otherwise. Trend holds when "
    "the 95% t-interval over replicates of the slope against log2(training images) excludes "
    "0 on the claimed side"
)


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims, measured by one statistic of the study's runs."""

    claim: str
    statistic: str  # a key of a run's ``values``: "<metric>.<statistic>" or "zero_shot.…"
    against: tuple[str, ...]  # comparators the verdict needs beating (of BASELINES)
    higher: bool = True
    trend: bool = True  # also asked: does it grow with data?
    keep: bool = False  # judged by keep_verdict: a share of the general model's value kept
    grows: str = ""  # the trend's wording, when not "<claim> grows with data"
    needs: tuple[str, ...] = ()  # comparators without which there is no verdict at all


#: A claim about what the recipe adds is judged against the models before it (the
#: untrained twin, the stage-1 general model) and the null; one about how it adds it, also
#: against its two ablations (flat labels, no replay).
BEFORE = ("untrained", "general", "null")
EVERY = ("untrained", "general", "flat", "no_replay", "null")

#: The paper's claims (BioCLIP 2, section 5), in the order the report lists them.
CLAIMS: tuple[Claim, ...] = (
    Claim("finches ordered by beak length", "trait_finch_beak_length.pc1_spearman", BEFORE),
    Claim("habitats separate across orders", "ecological_habitat.probe_accuracy", BEFORE),
    Claim("centroid distances follow taxonomy", "taxonomic.spearman", BEFORE),
    Claim("life stages separated", "separation_life_stage.fdr", EVERY),
    Claim("life stages separated", "separation_life_stage.probe_accuracy", EVERY),
    Claim("sexes separated", "separation_sex.fdr", EVERY),
    Claim("sexes separated", "separation_sex.probe_accuracy", EVERY),
    Claim(
        "sex direction orthogonal to the species span",
        "orthogonality_sex.fraction_outside",
        ("null",),
    ),
    Claim(
        "life-stage direction orthogonal to the species span",
        "orthogonality_life_stage.fraction_outside",
        ("null",),
    ),
    Claim(
        "hierarchical text beats flat: seen species",
        "zero_shot.seen_top1",
        ("untrained", "flat"),
        grows="zero-shot on seen species grows with data",
        needs=("flat",),
    ),
    Claim(
        "hierarchical text beats flat: genus of unseen species",
        "zero_shot.unseen_genus_top1",
        ("untrained", "flat"),
        grows="zero-shot genus of unseen species grows with data",
        needs=("flat",),
    ),
    Claim(
        "replay keeps the general ability",
        "web.retrieval_r5",
        ("no_replay",),
        trend=False,
        keep=True,
    ),
)
#: "Replay keeps the general ability" also needs this share of the general model's value.
KEEP_SHARE = 0.9


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None, int]:
    """Mean, sample sd (0 for one value) and count of the finite values (None, None, 0
    when there are none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None, None, 0
    sd = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return float(np.mean(finite)), sd, len(finite)


def margin(sd: float, sd_other: float) -> float:
    """The rule's margin: twice the pooled sd of the two groups."""
    return 2.0 * math.sqrt((sd * sd + sd_other * sd_other) / 2.0)


def verdict(
    mean: float | None,
    sd: float | None,
    comparators: Mapping[str, tuple[float | None, float | None]],
    higher: bool = True,
) -> tuple[str, float | None]:
    """(verdict, the largest margin the claim had to clear) by the module's rule.

    ``comparators``: name → (mean, sd) of each baseline or null the claim names; ones
    without a value are left out (and with none left, the claim is inconclusive).
    """
    usable = {k: (m, s or 0.0) for k, (m, s) in comparators.items() if m is not None}
    if mean is None or not usable:
        return UNSURE, None
    sign = 1.0 if higher else -1.0
    needed = max(margin(sd or 0.0, s) for _, s in usable.values())
    gaps = [sign * (mean - m) for m, _ in usable.values()]
    if any(g <= 0 for g in gaps):
        return FAILS, needed
    if all(g > margin(sd or 0.0, s) for g, (_, s) in zip(gaps, usable.values(), strict=True)):
        return HOLDS, needed
    return UNSURE, needed


def keep_verdict(
    replay: Sequence[float], no_replay: Sequence[float], general: Sequence[float]
) -> tuple[str, dict]:
    """ "Replay keeps the general ability": the stage-2 model keeps at least KEEP_SHARE of
    the general model's web retrieval (mean of per-replicate ratios) and beats the
    no-replay run by the rule's margin."""
    ratios = [r / g for r, g in zip(replay, general, strict=True) if g]
    lost = [r / g for r, g in zip(no_replay, general, strict=True) if g]
    share, share_sd, _ = mean_sd(ratios)
    lost_share, lost_sd, _ = mean_sd(lost)
    facts = {
        "kept_share": share,
        "kept_share_sd": share_sd,
        "no_replay_share": lost_share,
        "no_replay_share_sd": lost_sd,
        "required_share": KEEP_SHARE,
    }
    if share is None or lost_share is None:
        return UNSURE, facts
    beats, _ = verdict(share, share_sd, {"no_replay": (lost_share, lost_sd)})
    if share < KEEP_SHARE or beats == FAILS:
        return FAILS, facts
    return (HOLDS if beats == HOLDS else UNSURE), facts


def slope(sizes: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares slope of values against log2(sizes) (None with < 2 finite points)."""
    pairs = [
        (math.log2(n), float(v))
        for n, v in zip(sizes, values, strict=True)
        if v is not None and math.isfinite(float(v))
    ]
    if len(pairs) < 2 or len({x for x, _ in pairs}) < 2:
        return None
    x, y = np.array(pairs).T
    return float(np.polyfit(x, y, 1)[0])


def trend(slopes: Sequence[float | None], higher: bool = True) -> dict:
    """Mean slope, its 95 % t-interval over replicates and the verdict of the rule."""
    # Rounded: a statistic that does not move at all (a rank correlation over a few
    # species) gives slopes of ±1e-17, which are no trend.
    mean, sd, n = mean_sd([round(s, 12) for s in slopes if s is not None])
    entry = {"slope": mean, "slope_sd": sd, "n_seeds": n, "ci_low": None, "ci_high": None}
    if mean is None or n < 2:
        entry["verdict"] = UNSURE
        return entry
    half = float(student_t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    entry.update(ci_low=low, ci_high=high)
    good, bad = (low > 0, high < 0) if higher else (high < 0, low > 0)
    entry["verdict"] = HOLDS if good else FAILS if bad else UNSURE
    return entry
