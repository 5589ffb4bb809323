"""The default scaling study as a benchmark: the paper's claims over 2 worlds x 3 seeds.

    python bench/study_claims.py                 # runs `taxoclip study scaling` (~1.4 h)
    python bench/study_claims.py --from DIR      # re-summarises an existing study, renders it

Prints the machine, the wall time, and the claims and trends tables in Markdown (what
docs/analyze.md and docs/benchmarks.md quote), and writes them to OUT/claims.md. Issue
13's target was the default configuration within 60 minutes on 2 cores; the stage-2
recipe the sweep chose (issue 21) doubled stage 2's steps: 1 h 23 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402


def _num(value, sd=None) -> str:
    if value is None:
        return "–"
    text = f"{value:.3f}"
    return f"{text} ± {sd:.3f}" if sd is not None else text


def markdown(study: dict) -> str:
    kinds = ("untrained", "general", "flat", "no_replay", "null")
    lines = [
        "| claim | statistic | stage 2, mean ± sd | "
        + " | ".join(kinds)
        + " | verdict | detectable | species / images |",
        "|---|---|---|" + "---|" * len(kinds) + "---|---|---|",
    ]
    for c in study["claims"]:
        cells = [_num(c["baselines"].get(k), c["baselines_sd"].get(k)) for k in kinds]
        cells = [
            f"**{v}**" if k in c["against"] and v != "–" else v
            for k, v in zip(kinds, cells, strict=True)
        ]
        lines.append(
            f"| {c['claim']} | `{c['statistic']}` | {_num(c['mean'], c['sd'])} | "
            + " | ".join(cells)
            + f" | {c['verdict']} | {_num(c.get('detectable'))} | "
            f"{c.get('n_species') or '–'} / {c.get('n_images') or '–'} |"
        )
    lines += [
        "",
        "| trend | statistic | slope per doubling | 95 % interval | verdict |",
        "|---|---|---|---|---|",
    ]
    for t in study["trends"]:
        interval = (
            f"[{_num(t['ci_low'])}, {_num(t['ci_high'])}]" if t["ci_low"] is not None else "–"
        )
        lines.append(
            f"| {t['claim']} | `{t['statistic']}` | {_num(t['slope'])} | {interval} | "
            f"{t['verdict']} |"
        )
    n = max(c["n_seeds"] for c in study["claims"])
    lines += [
        "",
        f"{n} replicates: world seeds {[w['seed'] for w in study['worlds']]} × model "
        f"seeds {study['model_seeds']}; sizes {study['sizes']}; "
        f"{study['steps_per_run']} steps per stage-2 run.",
    ]
    return "\n".join(lines) + "\n"


def resummarise(study: dict) -> dict:
    """Claims and trends recomputed from the runs' own analyses with the current rule and
    counts (study/claims.py, study/summary.py), the zero-shot and web values kept."""
    from taxoclip.study.scaling import values_from_analysis
    from taxoclip.study.summary import summarise

    for run in study["runs"].values():
        metrics = Path(run["analysis"]) / "metrics.json"
        fresh = values_from_analysis(json.loads(metrics.read_text()))
        kept = {k: v for k, v in run["values"].items() if k not in fresh}
        run["values"] = {
            **fresh,
            **{
                k: {
                    "value": v["value"],
                    "null_mean": None,
                    "null_sd": None,
                    "n_species": None,
                    "n_images": None,
                }
                for k, v in kept.items()
            },
        }
    worlds = [w["seed"] for w in study["worlds"]]
    study.update(summarise(study["runs"], worlds=worlds, seeds=study["model_seeds"]))
    return study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/out/study", help="study output folder")
    parser.add_argument(
        "--from",
        dest="source",
        help="an existing study folder: recompute its claims with the current "
        "rule from its runs' analyses (rewrites its study.json), and render",
    )
    args = parser.parse_args()
    print(f"machine: {describe()}")
    folder = Path(args.source or args.out)
    if not args.source:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "taxoclip", "study", "scaling", "--out", str(folder), "-q"],
            check=True,
        )
        print(f"taxoclip study scaling (defaults): {time.perf_counter() - started:.0f} s wall")
    study = json.loads((folder / "study.json").read_text())
    print(f"study's own total: {study['seconds']['total']:.0f} s")
    if args.source:
        study = resummarise(study)
        (folder / "study.json").write_text(json.dumps(study, indent=2) + "\n")
    text = markdown(study)
    (folder / "claims.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
