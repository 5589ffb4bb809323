"""From a study's measured runs to its claims table, trends, text table and plot.

``runs`` is study.json's map ``"w<world>/s<seed>/<run>"`` (or ``"w<world>/general"``) →
entry with ``kind`` (stage2, flat, no_replay, general, untrained), ``world``, ``seed``,
``n_train`` and ``values`` (statistic → value, null mean and sd). The verdicts follow
study/claims.py.
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

BASELINE_KINDS = ("untrained", "general", "flat", "no_replay")


def _value(entry: Mapping[str, Any] | None, statistic: str, field: str = "value") -> float | None:
    cell = ((entry or {}).get("values") or {}).get(statistic) or {}
    value = cell.get(field)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _largest(runs: Mapping[str, Mapping], world: int, seed: int) -> Mapping | None:
    """The replicate's stage-2 run on its largest size."""
    mine = [r for r in runs.values()
            if r.get("kind") == "stage2" and r.get("world") == world and r.get("seed") == seed]  # fmt: skip
    return max(mine, key=lambda r: r["n_train"]) if mine else None


def _of_kind(runs: Mapping[str, Mapping], kind: str, world: int, seed: int) -> Mapping | None:
    for entry in runs.values():
        if (
            entry.get("kind") == kind
            and entry.get("world") == world
            and (kind == "general" or entry.get("seed") == seed)
        ):
            return entry
    return None


def summarise(runs: Mapping[str, Mapping], worlds: Sequence[int], seeds: Sequence[int]) -> dict:
    """``{"claims": [...], "trends": [...]}`` for study.json (schema in docs/analyze.md)."""
    replicates = [(w, s) for w in worlds for s in seeds if _largest(runs, w, s) is not None]
    claims = [_claim_entry(claim, runs, replicates, worlds) for claim in CLAIMS]
    trends = [_trend_entry(claim, runs, replicates) for claim in CLAIMS if claim.trend]
    return {"claims": claims, "trends": trends, "statistics": statistics_table(runs)}


def statistics_table(runs: Mapping[str, Mapping]) -> list[dict[str, Any]]:
    """Every statistic any run measured, as mean ± sd over replicates per kind of model and
    data size (the general model and the untrained twin have no size): the claims pick
    some of these rows, the rest (hue, elongation, effective dimension, …) are here."""
    groups: dict[tuple[str, str, int | None], list[float | None]] = {}
    for entry in runs.values():
        for stat in entry.get("values") or {}:
            key = (stat, entry.get("kind", "?"), entry.get("n_train"))
            groups.setdefault(key, []).append(_value(entry, stat))
    rows = []
    for (stat, kind, size), values in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)
    ):
        mean, sd, n = mean_sd(values)
        rows.append({"statistic": stat, "kind": kind, "size": size, "mean": mean, "sd": sd, "n": n})
    return rows


def _first(entries, statistic: str, field: str) -> int | None:
    """A count the analysis reported (the same at every replicate of one design)."""
    found = next(
        (_value(e, statistic, field) for e in entries if _value(e, statistic, field)), None
    )
    return None if found is None else int(found)


def _claim_entry(claim: Claim, runs, replicates, worlds) -> dict[str, Any]:
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
    if n == 1:  # no seed spread: the null's permutation sd stands in (claims.py)
        stand_in = spreads["null"] or 0.0
        sd = stand_in
        spreads = {k: (stand_in if v is not None else None) for k, v in spreads.items()}
    comparators = {k: (baselines[k], spreads[k]) for k in claim.against}
    entry: dict[str, Any] = {
        "claim": claim.claim, "statistic": stat,
        "size": largest[0]["n_train"] if largest else None,
        "mean": mean, "sd": sd, "n_seeds": n, "higher_is_better": claim.higher,
        "baselines": baselines, "baselines_sd": spreads, "against": list(claim.against),
        "n_species": _first(largest, stat, "n_species"),
        "n_images": _first(largest, stat, "n_images"),
    }  # fmt: skip
    if claim.keep:
        general = {w: _value(_of_kind(runs, "general", w, 0), stat) for w in worlds}
        triples = [(_value(r, stat), _value(_of_kind(runs, "no_replay", w, s), stat), general[w])
                   for r, (w, s) in zip(largest, replicates, strict=True)]  # fmt: skip
        triples = [t for t in triples if None not in t]
        entry["verdict"], facts = (
            keep_verdict(*zip(*triples, strict=True)) if triples else (UNSURE, {})
        )
        entry.update(facts)
        entry["detectable"] = None
        return entry
    entry["verdict"], entry["detectable"] = verdict(mean, sd, comparators, claim.higher)
    if any(baselines[k] is None for k in claim.needs):  # e.g. "beats flat" without a flat run
        entry["verdict"] = UNSURE
    return entry


def _trend_entry(claim: Claim, runs, replicates) -> dict[str, Any]:
    slopes = []
    for w, s in replicates:
        mine = sorted((r for r in runs.values() if r.get("kind") == "stage2"
                       and r.get("world") == w and r.get("seed") == s),
                      key=lambda r: r["n_train"])  # fmt: skip
        slopes.append(
            slope([r["n_train"] for r in mine], [_value(r, claim.statistic) for r in mine])
        )
    entry = {"claim": claim.grows or f"{claim.claim} grows with data", "statistic": claim.statistic}
    entry.update(trend(slopes, claim.higher))
    return entry


# --------------------------------------------------------------------------- text and plot


def _fmt(value: Any, sd: Any = None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    text = f"{value:.3f}" if abs(value) < 1000 else f"{value:.3g}"
    return f"{text}±{sd:.3f}" if sd is not None else text


def format_table(study: Mapping[str, Any]) -> str:
    """The claims (mean ± sd over replicates, each baseline, the null, the verdict), then
    the trends (slope per doubling of the data and its 95 % interval)."""
    lines = [f"{'claim':52} {'statistic':38} {'mean±sd':>13} {'untrained':>9} {'general':>9} "
             f"{'flat':>9} {'no_replay':>9} {'null':>9}  verdict"]  # fmt: skip
    for c in study["claims"]:
        b = c["baselines"]
        lines.append(f"{c['claim'][:52]:52} {c['statistic'][:38]:38} {_fmt(c['mean'], c['sd']):>13} "
                     + " ".join(f"{_fmt(b.get(k)):>9}" for k in (*BASELINE_KINDS, "null"))
                     + f"  {c['verdict']}")  # fmt: skip
    if study["trends"]:  # none with one data size (the demo)
        lines.append("")
        lines.append(f"{'trend':52} {'statistic':38} {'slope/doubling':>15} "
                     f"{'95% interval':>20}  verdict")  # fmt: skip
    for t in study["trends"]:
        interval = (f"[{_fmt(t['ci_low'])}, {_fmt(t['ci_high'])}]"
                    if t.get("ci_low") is not None else "-")  # fmt: skip
        lines.append(f"{t['claim'][:52]:52} {t['statistic'][:38]:38} {_fmt(t['slope']):>15} "
                     f"{interval:>20}  {t['verdict']}")  # fmt: skip
    n = max((c["n_seeds"] for c in study["claims"]), default=0)
    counts = {v: sum(c["verdict"] == v for c in study["claims"]) for v in (HOLDS, UNSURE, FAILS)}
    lines.append("")
    lines.append(f"{n} replicate(s); claims: {counts[HOLDS]} hold, {counts[UNSURE]} inconclusive, "
                 f"{counts[FAILS]} do not hold")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_study(study: Mapping[str, Any], path: str | Path) -> Path:
    """One panel per claim statistic: the stage-2 mean ± sd over replicates against
    training images (log x); baselines as lines (untrained dashed, general dash-dot, null
    dotted) and the flat / no-replay runs as markers with error bars at the largest size."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from taxoclip.analyze.plots import save_figure

    runs = study["runs"]
    claims = {c["statistic"]: c for c in study["claims"]}
    stats = list(claims)
    cols = min(4, len(stats))
    nrows = math.ceil(len(stats) / cols)
    fig = Figure(figsize=(3.8 * cols, 2.8 * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, stat in zip(axes, stats, strict=False):
        by_size: dict[int, list[float]] = {}
        for entry in runs.values():
            if entry.get("kind") == "stage2" and _value(entry, stat) is not None:
                by_size.setdefault(entry["n_train"], []).append(_value(entry, stat))
        xs = sorted(by_size)
        if xs:
            ms = [mean_sd(by_size[x]) for x in xs]
            ax.errorbar(xs, [m for m, _, _ in ms], yerr=[s for _, s, _ in ms], marker="o",
                        color="tab:blue", capsize=3, linewidth=1.6)  # fmt: skip
            ax.set_xscale("log")
        claim = claims[stat]
        styles = {"untrained": ("0.35", "--"), "general": ("tab:purple", "-."),
                  "null": ("tab:green", ":")}  # fmt: skip
        for kind, (colour, line) in styles.items():
            if claim["baselines"].get(kind) is not None:
                ax.axhline(claim["baselines"][kind], color=colour, linestyle=line, linewidth=1.2)
        for kind, (colour, marker) in {
            "flat": ("tab:red", "X"),
            "no_replay": ("tab:orange", "s"),
        }.items():
            if claim["baselines"].get(kind) is not None and xs:
                ax.errorbar([xs[-1] * 1.08], [claim["baselines"][kind]],
                            yerr=[claim["baselines_sd"].get(kind) or 0.0], marker=marker,
                            color=colour, capsize=3, linestyle="")  # fmt: skip
        ax.set_title(f"{stat}\n{claim['verdict']}", fontsize=8)
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
    fig.suptitle(f"SynthToL claims against training images ({study.get('recipe', '?')} recipe, "
                 f"same {study['budget']} per run)", fontsize=11)  # fmt: skip
    return save_figure(fig, path)
