"""The verdict rule and the claims table, on replicate values made up to test them."""

import math

import pytest

from taxoclip.study.claims import (
    CLAIMS,
    FAILS,
    HOLDS,
    KEEP_SHARE,
    UNSURE,
    keep_verdict,
    margin,
    mean_sd,
    slope,
    trend,
    verdict,
)
from taxoclip.study.summary import format_table, summarise


def test_mean_sd_ignores_missing_values():
    assert mean_sd([1.0, None, float("nan"), 3.0]) == (2.0, pytest.approx(math.sqrt(2)), 2)
    assert mean_sd([5.0]) == (5.0, 0.0, 1)
    assert mean_sd([None]) == (None, None, 0)


def test_a_claim_must_clear_twice_the_pooled_sd_of_every_comparator():
    assert margin(0.3, 0.4) == pytest.approx(2 * math.sqrt(0.125))
    # 0.80 ± 0.01 against 0.70 ± 0.01 (margin 0.02) and a null of 0.5 ± 0.02
    assert verdict(0.80, 0.01, {"untrained": (0.70, 0.01), "null": (0.5, 0.02)})[0] == HOLDS
    # beyond the mean but within the margin of one comparator: inconclusive
    outcome, needed = verdict(0.80, 0.05, {"untrained": (0.75, 0.05), "null": (0.5, 0.01)})
    assert outcome == UNSURE and needed == pytest.approx(0.1)
    # at or below one comparator's mean: does not hold
    assert verdict(0.80, 0.01, {"general": (0.81, 0.01), "null": (0.5, 0.01)})[0] == FAILS
    # lower is better
    assert verdict(0.10, 0.01, {"null": (0.30, 0.01)}, higher=False)[0] == HOLDS
    # comparators without a value are left out; with none, nothing can be said
    assert verdict(0.8, 0.01, {"flat": (None, None)})[0] == UNSURE
    assert verdict(None, None, {"null": (0.5, 0.1)})[0] == UNSURE


def test_keeping_the_general_ability():
    general = [0.40, 0.50, 0.45]
    held = [0.38, 0.47, 0.43]  # ~95 % kept
    lost = [0.20, 0.24, 0.22]  # ~49 % kept
    outcome, facts = keep_verdict(held, lost, general)
    assert outcome == HOLDS and facts["kept_share"] == pytest.approx(
        (0.95 + 0.94 + 0.43 / 0.45) / 3
    )
    assert facts["required_share"] == KEEP_SHARE
    assert keep_verdict([0.30, 0.35, 0.33], lost, general)[0] == FAILS  # under 90 % kept
    assert keep_verdict(held, held, general)[0] == FAILS  # no better than without replay


def test_slopes_and_trend_intervals():
    sizes = [100, 200, 400, 800]
    assert slope(sizes, [1.0, 2.0, 3.0, 4.0]) == pytest.approx(1.0)  # per doubling
    assert slope(sizes, [1.0, None, None, None]) is None
    growing = trend([0.9, 1.0, 1.1])
    assert growing["verdict"] == HOLDS and growing["ci_low"] > 0
    assert growing["ci_high"] == pytest.approx(1.0 + 4.303 * 0.1 / math.sqrt(3), abs=1e-3)
    assert trend([-0.9, -1.0, -1.1])["verdict"] == FAILS
    assert trend([-0.5, 0.1, 0.6])["verdict"] == UNSURE
    assert trend([1.0])["verdict"] == UNSURE  # one replicate: no interval
    assert trend([1e-17, -1e-17, 0.0])["verdict"] == UNSURE  # no movement is no trend
    assert trend([-0.9, -1.0, -1.1], higher=False)["verdict"] == HOLDS


def _runs(stage2, baselines, sizes=(100, 200, 400, 800)):
    """Study runs for 1 world x len(stage2) seeds: stage2[seed] = value per size."""
    stat = "separation_sex.probe_accuracy"

    def entry(kind, seed, n, value, null=0.5):
        return {
            "kind": kind,
            "world": 0,
            "seed": seed,
            "n_train": n,
            "values": {
                stat: {
                    "value": value,
                    "null_mean": null,
                    "null_sd": 0.01,
                    "n_species": 40,
                    "n_images": 900,
                }
            },
        }

    runs = {"w0/general": entry("general", None, None, baselines["general"])}
    for seed, values in enumerate(stage2):
        for n, value in zip(sizes, values, strict=True):
            runs[f"w0/s{seed}/size-{n}"] = entry("stage2", seed, n, value)
        for kind in ("untrained", "flat", "no_replay"):
            runs[f"w0/s{seed}/{kind}"] = entry(kind, seed, None, baselines[kind])
    return runs, stat


def test_summarise_builds_the_schema_other_tools_read():
    runs, stat = _runs(
        [[0.60, 0.65, 0.70, 0.80], [0.61, 0.66, 0.71, 0.81], [0.59, 0.64, 0.69, 0.79]],
        {"general": 0.70, "untrained": 0.52, "flat": 0.75, "no_replay": 0.74},
    )
    summary = summarise(runs, worlds=[0], seeds=[0, 1, 2])
    assert len(summary["claims"]) == len(CLAIMS)
    claim = next(c for c in summary["claims"] if c["statistic"] == stat)
    assert set(claim) >= {
        "claim",
        "statistic",
        "size",
        "mean",
        "sd",
        "n_seeds",
        "baselines",
        "verdict",
    }
    assert claim["size"] == 800 and claim["n_seeds"] == 3
    assert claim["n_species"] == 40 and claim["n_images"] == 900
    assert claim["mean"] == pytest.approx(0.80) and claim["sd"] == pytest.approx(0.01)
    assert set(claim["baselines"]) == {"untrained", "general", "flat", "no_replay", "null"}
    assert claim["baselines"]["general"] == 0.70 and claim["baselines"]["null"] == 0.5
    assert claim["verdict"] == HOLDS
    grows = next(t for t in summary["trends"] if t["statistic"] == stat)
    assert set(grows) >= {"claim", "statistic", "slope", "ci_low", "ci_high", "verdict"}
    assert grows["verdict"] == HOLDS and grows["slope"] > 0
    # statistics nobody measured are inconclusive, never "holds"
    other = next(c for c in summary["claims"] if c["statistic"] == "taxonomic.spearman")
    assert other["mean"] is None and other["verdict"] == UNSURE
    rows = {(r["statistic"], r["kind"], r["size"]): r for r in summary["statistics"]}
    assert rows[(stat, "stage2", 400)]["mean"] == pytest.approx(0.70)
    assert rows[(stat, "stage2", 400)]["n"] == 3 and rows[(stat, "general", None)]["n"] == 1
    table = format_table({**summary, "runs": runs})
    assert "sexes separated" in table and "3 replicate(s)" in table


def test_a_claim_below_the_general_model_does_not_hold():
    runs, stat = _runs(
        [[0.6, 0.6, 0.6, 0.65]] * 3,
        {"general": 0.70, "untrained": 0.52, "flat": 0.6, "no_replay": 0.6},
    )
    claim = next(c for c in summarise(runs, [0], [0, 1, 2])["claims"] if c["statistic"] == stat)
    assert claim["verdict"] == FAILS


def test_one_replicate_uses_the_null_spread():
    runs, stat = _runs(
        [[0.6, 0.62, 0.64, 0.66]],
        {"general": 0.55, "untrained": 0.52, "flat": 0.5, "no_replay": 0.5},
    )
    summary = summarise(runs, [0], [0])
    claim = next(c for c in summary["claims"] if c["statistic"] == stat)
    assert claim["n_seeds"] == 1 and claim["sd"] == pytest.approx(0.01)
    assert claim["verdict"] == HOLDS  # 0.66 vs 0.55: beyond 2 x 0.01
    assert next(t for t in summary["trends"] if t["statistic"] == stat)["verdict"] == UNSURE


def test_one_replicate_reads_each_values_own_sd_where_its_metric_gives_one():
    """One seed: a bootstrap sd of the value (and of each baseline's) replaces the null's
    permutation sd, both ways: a wide one makes a hold inconclusive, a narrow one lets a
    small gap hold."""
    runs, stat = _runs(
        [[0.6, 0.62, 0.64, 0.66]],
        {"general": 0.55, "untrained": 0.52, "flat": 0.5, "no_replay": 0.5},
    )

    def claim_with(own: float, general_own: float | None = None) -> dict:
        changed = {k: {**r, "values": {stat: dict(r["values"][stat])}} for k, r in runs.items()}
        changed["w0/s0/size-800"]["values"][stat]["value_sd"] = own
        if general_own is not None:
            changed["w0/general"]["values"][stat]["value_sd"] = general_own
        summary = summarise(changed, [0], [0])
        return next(c for c in summary["claims"] if c["statistic"] == stat)

    wide = claim_with(0.08)  # gap to the general model 0.11 < 2 * sqrt((0.08² + 0.01²) / 2)
    assert wide["sd"] == pytest.approx(0.08) and wide["verdict"] == UNSURE
    assert wide["baselines_sd"]["general"] == pytest.approx(0.01)  # its stand-in: no own sd
    assert wide["detectable"] == pytest.approx(2 * math.sqrt((0.08**2 + 0.01**2) / 2))
    both = claim_with(0.08, general_own=0.005)
    assert both["baselines_sd"]["general"] == pytest.approx(0.005)
    assert claim_with(0.002)["verdict"] == HOLDS


def test_a_claim_without_the_comparator_it_is_about_has_no_verdict():
    stat = "zero_shot.seen_top1"
    runs = {
        "w0/s0/size-100": {
            "kind": "stage2",
            "world": 0,
            "seed": 0,
            "n_train": 100,
            "values": {stat: {"value": 0.3}},
        },
        "w0/s0/untrained": {
            "kind": "untrained",
            "world": 0,
            "seed": 0,
            "n_train": None,
            "values": {stat: {"value": 0.01}},
        },
    }
    claim = next(c for c in summarise(runs, [0], [0])["claims"] if c["statistic"] == stat)
    assert claim["baselines"]["flat"] is None
    assert claim["verdict"] == UNSURE  # beats the untrained twin, but "beats flat" is untested
