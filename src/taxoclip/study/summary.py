"""From a study's measured runs to its claims table, trends, text table and plot.

``runs`` is study.json's map of :func:`~taxoclip.study.record.run_key` →
:class:`~taxoclip.study.record.StudyRun` (plain dicts in that form are read too): each
with its ``kind`` (stage2, flat, no_replay, general, untrained), ``world``, ``seed``,
``n_train`` and ``values`` (statistic → value, null mean and sd). The verdicts follow
study/claims.py; the entries are study/record.py's, returned in their JSON form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .claims import (
    CLAIMS,
    FAILS,
    HOLDS,
    UNSURE,
    Claim,
    keep_verdict,
    mean_sd,
    slope,
    trend,
    verdict,
)
from .record import (
    ClaimResult,
    StatisticRow,
    StudyRecord,
    StudyRun,
    TrendResult,
    runs_from_json,
)

BASELINE_KINDS = ("untrained", "general", "flat", "no_replay")
Runs = Mapping[str, StudyRun | Mapping[str, Any]]


def _value(run: StudyRun | None, statistic: str, part: str = "value") -> float | None:
    return run.value(statistic, part) if run is not None else None


def _stage2(runs: Sequence[StudyRun], world: int, seed: int) -> list[StudyRun]:
    """The replicate's stage-2 runs, smallest data size first."""
    mine = [r for r in runs if r.kind == "stage2" and r.world == world and r.seed == seed]
    return sorted(mine, key=lambda r: r.n_train)


def _largest(runs: Sequence[StudyRun], world: int, seed: int) -> StudyRun | None:
    """The replicate's stage-2 run on its largest size."""
    mine = _stage2(runs, world, seed)
    return mine[-1] if mine else None


def _of_kind(runs: Sequence[StudyRun], kind: str, world: int, seed: int) -> StudyRun | None:
    """The replicate's baseline of ``kind`` (the general model: the world's)."""
    for run in runs:
        if run.kind == kind and run.world == world and (kind == "general" or run.seed == seed):
            return run
    return None


def summarise(runs: Runs, worlds: Sequence[int], seeds: Sequence[int]) -> dict:
    """``{"claims": [...], "trends": [...], "statistics": [...]}`` for study.json, in its
    JSON form (study/record.py; schema in study.schema.json)."""
    typed = list(runs_from_json(dict(runs)).values())
    replicates = [(w, s) for w in worlds for s in seeds if _largest(typed, w, s) is not None]
    claims = [_claim_entry(claim, typed, replicates, worlds) for claim in CLAIMS]
    trends = [_trend_entry(claim, typed, replicates) for claim in CLAIMS if claim.trend]
    return {
        "claims": [c.to_json() for c in claims],
        "trends": [t.to_json() for t in trends],
        "statistics": [row.to_json() for row in statistics_table(typed)],
    }


def statistics_table(runs: Sequence[StudyRun]) -> list[StatisticRow]:
    """Every statistic any run measured, as mean ± sd over replicates per kind of model and
    data size (the general model and the untrained twin have no size): the claims pick
    some of these rows, the rest (hue, elongation, effective dimension, …) are here."""
    groups: dict[tuple[str, str, int | None], list[float | None]] = {}
    for run in runs:
        for stat in run.values:
            groups.setdefault((stat, run.kind, run.n_train), []).append(run.value(stat))
    rows = []
    for (stat, kind, size), values in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)
    ):
        mean, sd, n = mean_sd(values)
        rows.append(StatisticRow(statistic=stat, kind=kind, size=size, mean=mean, sd=sd, n=n))
    return rows


def _first(runs: Sequence[StudyRun], statistic: str, part: str) -> int | None:
    """A count the analysis reported (the same at every replicate of one design)."""
    found = next((r.value(statistic, part) for r in runs if r.value(statistic, part)), None)
    return None if found is None else int(found)


def _claim_entry(
    claim: Claim, runs: Sequence[StudyRun], replicates: list[tuple[int, int]], worlds
) -> ClaimResult:
    stat = claim.statistic
    largest = [_largest(runs, w, s) for w, s in replicates]
    mean, sd, n = mean_sd([_value(r, stat) for r in largest])
    baselines: dict[str, float | None] = {}
    spreads: dict[str, float | None] = {}
    for kind in BASELINE_KINDS:
        if kind == "general":
            values = [_value(_of_kind(runs, kind, w, 0), stat) for w in worlds]
        else:
            values = [_value(_of_kind(runs, kind, w, s), stat) for w, s in replicates]
        baselines[kind], spreads[kind], _ = mean_sd(values)
    null_sds = [_value(r, stat, "null_sd") for r in largest]
    baselines["null"] = mean_sd([_value(r, stat, "null_mean") for r in largest])[0]
    null_sds = [v for v in null_sds if v is not None]
    spreads["null"] = math.sqrt(sum(v * v for v in null_sds) / len(null_sds)) if null_sds else None
    if n == 1:  # no seed spread: each value's own sampling sd (a bootstrap over species)
        # where its metric gives one, else the null's permutation sd stands in (claims.py)
        stand_in = spreads["null"] or 0.0
        (world, seed), own = replicates[0], _value(largest[0], stat, "value_sd")
        sd = stand_in if own is None else own
        for kind, spread in spreads.items():
            if spread is None:
                continue
            run = (
                None
                if kind == "null"
                else _of_kind(runs, kind, world, 0 if kind == "general" else seed)
            )
            other = _value(run, stat, "value_sd")
            spreads[kind] = stand_in if other is None else other
    entry = ClaimResult(
        claim=claim.claim,
        statistic=stat,
        size=largest[0].n_train if largest else None,
        mean=mean,
        sd=sd,
        n_seeds=n,
        higher_is_better=claim.higher,
        baselines=baselines,
        baselines_sd=spreads,
        against=list(claim.against),
        n_species=_first(largest, stat, "n_species"),
        n_images=_first(largest, stat, "n_images"),
    )
    if claim.keep:
        return _keep_entry(entry, runs, replicates, worlds, largest)
    comparators = {k: (baselines[k], spreads[k]) for k in claim.against}
    entry.verdict, entry.detectable = verdict(mean, sd, comparators, claim.higher)
    if any(baselines[k] is None for k in claim.needs):  # e.g. "beats flat" without a flat run
        entry.verdict = UNSURE
    return entry


def _keep_entry(
    entry: ClaimResult, runs: Sequence[StudyRun], replicates, worlds, largest
) -> ClaimResult:
    """ "Replay keeps the general ability": the share of the general model's value kept,
    against the no-replay run's (claims.keep_verdict)."""
    stat = entry.statistic
    general = {w: _value(_of_kind(runs, "general", w, 0), stat) for w in worlds}
    triples = [
        (_value(r, stat), _value(_of_kind(runs, "no_replay", w, s), stat), general[w])
        for r, (w, s) in zip(largest, replicates, strict=True)
    ]
    triples = [t for t in triples if None not in t]
    entry.verdict, facts = keep_verdict(*zip(*triples, strict=True)) if triples else (UNSURE, {})
    for name, value in facts.items():
        setattr(entry, name, value)
    return entry


def _trend_entry(claim: Claim, runs: Sequence[StudyRun], replicates) -> TrendResult:
    slopes = []
    for w, s in replicates:
        mine = _stage2(runs, w, s)
        slopes.append(slope([r.n_train for r in mine], [_value(r, claim.statistic) for r in mine]))
    wording = claim.grows or f"{claim.claim} grows with data"
    return TrendResult(claim=wording, statistic=claim.statistic, **trend(slopes, claim.higher))


# --------------------------------------------------------------------------- text and plot


def _fmt(value: Any, sd: Any = None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    text = f"{value:.3f}" if abs(value) < 1000 else f"{value:.3g}"
    return f"{text}±{sd:.3f}" if sd is not None else text


def format_table(study: StudyRecord | Mapping[str, Any]) -> str:
    """The claims (mean ± sd over replicates, each baseline, the null, the verdict), then
    the trends (slope per doubling of the data and its 95 % interval)."""
    if not isinstance(study, StudyRecord):
        study = StudyRecord.from_json(dict(study))
    columns = " ".join(f"{k:>9}" for k in (*BASELINE_KINDS, "null"))
    lines = [f"{'claim':52} {'statistic':38} {'mean±sd':>13} {columns}  verdict"]
    for c in study.claims:
        baselines = " ".join(f"{_fmt(c.baselines.get(k)):>9}" for k in (*BASELINE_KINDS, "null"))
        lines.append(
            f"{c.claim[:52]:52} {c.statistic[:38]:38} {_fmt(c.mean, c.sd):>13} "
            f"{baselines}  {c.verdict}"
        )
    if study.trends:  # none with one data size (the demo)
        lines.append("")
        header = f"{'slope/doubling':>15} {'95% interval':>20}"
        lines.append(f"{'trend':52} {'statistic':38} {header}  verdict")
    for t in study.trends:
        interval = f"[{_fmt(t.ci_low)}, {_fmt(t.ci_high)}]" if t.ci_low is not None else "-"
        lines.append(
            f"{t.claim[:52]:52} {t.statistic[:38]:38} {_fmt(t.slope):>15} "
            f"{interval:>20}  {t.verdict}"
        )
    n = max((c.n_seeds for c in study.claims), default=0)
    counts = {v: sum(c.verdict == v for c in study.claims) for v in (HOLDS, UNSURE, FAILS)}
    lines.append("")
    lines.append(
        f"{n} replicate(s); claims: {counts[HOLDS]} hold, {counts[UNSURE]} inconclusive, "
        f"{counts[FAILS]} do not hold"
    )
    return "\n".join(lines) + "\n"


def plot_study(study: StudyRecord | Mapping[str, Any], path: str | Path) -> Path:
    """One panel per claim statistic: the stage-2 mean ± sd over replicates against
    training images (log x); baselines as lines (untrained dashed, general dash-dot, null
    dotted) and the flat / no-replay runs as markers with error bars at the largest size."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from taxoclip.analyze.plots import save_figure

    if not isinstance(study, StudyRecord):
        study = StudyRecord.from_json(dict(study))
    runs = study.runs
    claims = {c.statistic: c for c in study.claims}
    stats = list(claims)
    cols = min(4, len(stats))
    nrows = math.ceil(len(stats) / cols)
    fig = Figure(figsize=(3.8 * cols, 2.8 * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, stat in zip(axes, stats, strict=False):
        by_size: dict[int, list[float]] = {}
        for run in runs.values():
            if run.kind == "stage2" and run.value(stat) is not None:
                by_size.setdefault(run.n_train, []).append(run.value(stat))
        xs = sorted(by_size)
        if xs:
            ms = [mean_sd(by_size[x]) for x in xs]
            ax.errorbar(
                xs,
                [m for m, _, _ in ms],
                yerr=[s for _, s, _ in ms],
                marker="o",
                color="tab:blue",
                capsize=3,
                linewidth=1.6,
            )
            ax.set_xscale("log")
        claim = claims[stat]
        styles = {
            "untrained": ("0.35", "--"),
            "general": ("tab:purple", "-."),
            "null": ("tab:green", ":"),
        }
        for kind, (colour, line) in styles.items():
            if claim.baselines.get(kind) is not None:
                ax.axhline(claim.baselines[kind], color=colour, linestyle=line, linewidth=1.2)
        for kind, (colour, marker) in {
            "flat": ("tab:red", "X"),
            "no_replay": ("tab:orange", "s"),
        }.items():
            if claim.baselines.get(kind) is not None and xs:
                ax.errorbar(
                    [xs[-1] * 1.08],
                    [claim.baselines[kind]],
                    yerr=[claim.baselines_sd.get(kind) or 0.0],
                    marker=marker,
                    color=colour,
                    capsize=3,
                    linestyle="",
                )
        ax.set_title(f"{stat}\n{claim.verdict}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, which="both")
    for ax in axes[len(stats) :]:
        ax.set_visible(False)
    handles = [
        Line2D([], [], color="tab:blue", marker="o", label="stage 2 (mean ± sd over replicates)"),
        Line2D([], [], color="0.35", linestyle="--", label="untrained"),
        Line2D([], [], color="tab:purple", linestyle="-.", label="general (stage 1)"),
        Line2D([], [], color="tab:green", linestyle=":", label="null"),
        Line2D([], [], color="tab:red", marker="X", linestyle="", label="flat labels"),
        Line2D([], [], color="tab:orange", marker="s", linestyle="", label="no replay"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle(
        f"SynthToL claims against training images ({study.recipe or '?'} recipe, "
        f"same {study.budget} per run)",
        fontsize=11,
    )
    return save_figure(fig, path)
