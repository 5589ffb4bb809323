"""The default scaling study as a benchmark: the paper's claims over 2 worlds x 3 seeds.

    python bench/study_claims.py                 # runs `taxoclip study scaling` (~1 hour)
    python bench/study_claims.py --from DIR      # only renders an existing study's tables

Prints the machine, the wall time, and the claims and trends tables in Markdown (what
docs/analyze.md and docs/benchmarks.md quote), and writes them to OUT/claims.md. The
target (issue 13): the default configuration within 60 minutes on 2 cores.
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
        "| claim | statistic | stage 2, mean ± sd | " + " | ".join(kinds) + " | verdict |",
        "|---|---|---|" + "---|" * len(kinds) + "---|",
    ]
    for c in study["claims"]:
        cells = [_num(c["baselines"].get(k), c["baselines_sd"].get(k)) for k in kinds]
        cells = [f"**{v}**" if k in c["against"] and v != "–" else v
                 for k, v in zip(kinds, cells, strict=True)]  # fmt: skip
        lines.append(f"| {c['claim']} | `{c['statistic']}` | {_num(c['mean'], c['sd'])} | "
                     + " | ".join(cells) + f" | {c['verdict']} |")  # fmt: skip
    lines += ["", "| trend | statistic | slope per doubling | 95 % interval | verdict |",
              "|---|---|---|---|---|"]  # fmt: skip
    for t in study["trends"]:
        interval = (
            f"[{_num(t['ci_low'])}, {_num(t['ci_high'])}]" if t["ci_low"] is not None else "–"
        )
        lines.append(f"| {t['claim']} | `{t['statistic']}` | {_num(t['slope'])} | {interval} | "
                     f"{t['verdict']} |")  # fmt: skip
    n = max(c["n_seeds"] for c in study["claims"])
    lines += ["", f"{n} replicates: world seeds {[w['seed'] for w in study['worlds']]} × model "
              f"seeds {study['model_seeds']}; sizes {study['sizes']}; "
              f"{study['steps_per_run']} steps per stage-2 run."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/out/study", help="study output folder")
    parser.add_argument("--from", dest="source", help="an existing study folder: render only")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    folder = Path(args.source or args.out)
    if not args.source:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "taxoclip", "study", "scaling", "--out", str(folder),
                        "-q"], check=True)  # fmt: skip
        print(f"taxoclip study scaling (defaults): {time.perf_counter() - started:.0f} s wall")
    study = json.loads((folder / "study.json").read_text())
    print(f"study's own total: {study['seconds']['total']:.0f} s")
    text = markdown(study)
    (folder / "claims.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
