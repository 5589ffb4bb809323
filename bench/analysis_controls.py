"""The control table of every emergent-property statistic (issue 21; docs/analyze.md).

    python bench/analysis_controls.py                     # 100 species x 32 images, 64-D
    python bench/analysis_controls.py --seeds 10 --negative-seeds 24 --baseline
    python bench/analysis_controls.py --seeds 0 --negative-seeds 100 --only finch,separation

Generates a small SynthToL world (labels only matter: its tree, habitats, traits, sexes
and life stages), plants every property at each strength of a grid into embeddings of its
images and runs every metric on them, and on negative controls (no property planted)
over many seeds (src/taxoclip/analyze/controls.py). Prints, per headline statistic, the
share of seeds that say "holds" at each planted strength, the smallest strength detected
in >= 80 % of the seeds, the false-positive rate on the negative controls, and the
multi-seed rule of src/taxoclip/study/claims.py applied to triples of negative-control
seeds; writes OUT/controls.json and OUT/controls.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402
from taxoclip.analyze.controls import (  # noqa: E402
    LEVELS,
    ControlTable,
    labels_from,
    run_controls,
)
from taxoclip.analyze.data import read_analysis_data  # noqa: E402
from taxoclip.study.claims import HOLDS, verdict  # noqa: E402
from taxoclip.synth import SynthConfig, generate  # noqa: E402

REPLICATES = 3  # the multi-seed rule is checked with this many replicates per claim
MAX_SETS = 20_000  # sets of negative-control seeds checked per statistic, at most


def multi_seed_fpr(table: ControlTable, replicates: int = REPLICATES) -> dict[str, dict]:
    """Per statistic: the share of ``replicates``-sized sets of negative-control seeds
    (every combination) that the study's rule calls "holds" against the null, with the
    null's sd its permutation spread (root mean square), as study/summary.py does; at
    most :data:`MAX_SETS` combinations, a fixed random sample of them beyond that."""
    negative = table.runs["negative"]
    out = {}
    for statistic in sorted({s for run in negative for s in run}):
        cells = [run[statistic] for run in negative if statistic in run]
        combos = list(itertools.combinations(range(len(cells)), replicates))
        if len(combos) > MAX_SETS:  # 100 seeds give 161,700 triples: a fixed sample will do
            picked = np.random.default_rng(0).choice(len(combos), MAX_SETS, replace=False)
            combos = [combos[i] for i in sorted(picked)]
        said = 0
        for combo in combos:
            chosen = [cells[i] for i in combo]
            values = [c["value"] for c in chosen]
            nulls = [c["null"] for c in chosen]
            sds = [c["null_sd"] or 0.0 for c in chosen]
            mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
            null_sd = float(np.sqrt(np.mean(np.square(sds))))
            higher = chosen[0].get("higher_is_better", True) is not False
            said += (
                verdict(mean, sd, {"null": (float(np.mean(nulls)), null_sd)}, higher)[0] == HOLDS
            )
        out[statistic] = {"false_positive_rate": said / len(combos), "n_sets": len(combos)}
    return out


def _num(value, digits=2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(table: ControlTable, multi: dict[str, dict]) -> str:
    levels = " | ".join(f"{lv:g}" for lv in table.levels)
    lines = [
        f"| statistic | reads | holds at strength {levels} | detectable | "
        "FPR one seed | FPR 3 seeds | inside | negative: value / null |",
        "|---|---|" + "---|" * len(table.levels) + "---|---|---|---|---|",
    ]
    for row in table.rows:
        cells = " | ".join(_num(row.holds.get(lv)) for lv in table.levels)
        lines.append(
            f"| `{row.statistic}` | {row.reads or 'nothing'} | {cells} | "
            f"{_num(row.detectable, 3) if row.detectable else '–'} | "
            f"{row.false_positive_rate:.2f} ({row.n_negative}) | "
            f"{_num(multi.get(row.statistic, {}).get('false_positive_rate'))} | "
            f"{_num(row.inside)} | {_num(row.negative_value, 3)} / {_num(row.negative_null, 3)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--species", type=int, default=100)
    parser.add_argument("--images-per-species", type=int, default=32)
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--levels", default=",".join(f"{lv:g}" for lv in LEVELS))
    parser.add_argument("--seeds", type=int, default=10, help="seeds per planted strength")
    parser.add_argument("--negative-seeds", type=int, default=24)
    parser.add_argument("--baseline", action="store_true", help="a negative control as baseline")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated metric families (finch, traits, ecology, taxonomy, separation, "
        "orthogonality, dimension); default all. With --seeds 0: many negative seeds on a few",
    )
    parser.add_argument("--out", default="bench/out/controls")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        config = SynthConfig(
            species=args.species,
            images_per_species=args.images_per_species,
            image_size=16,
            seed=args.world_seed,
        )
        generate(Path(tmp) / "synth", config, progress=False)
        labels = labels_from(read_analysis_data(Path(tmp) / "synth"))
    table = run_controls(
        labels,
        levels=tuple(float(v) for v in args.levels.split(",")),
        seeds=tuple(range(args.seeds)),
        negative_seeds=tuple(range(args.negative_seeds)),
        dim=args.dim,
        baseline=args.baseline,
        only=tuple(filter(None, args.only.split(","))),
        inside_level=4.0 if args.seeds else None,
        progress=lambda text: print(
            f"  {time.perf_counter() - started:6.0f} s  {text}", flush=True
        ),
    )
    multi = multi_seed_fpr(table)
    seconds = time.perf_counter() - started
    text = markdown(table, multi)
    header = (
        f"{describe()}\n\nSynthToL {args.species} species x {args.images_per_species} images "
        f"(world seed {args.world_seed}), {args.dim}-D, {args.seeds} seeds per strength, "
        f"{args.negative_seeds} negative-control seeds, baseline: "
        f"{'negative control' if args.baseline else 'none'}; {seconds:.0f} s\n\n"
    )
    print(header + text)
    (out / "controls.md").write_text(header + text)
    payload = {
        "design": {**vars(args), "levels": list(table.levels), "seconds": round(seconds, 1)},
        "rows": [row.__dict__ for row in table.rows],
        "multi_seed": multi,
        "runs": table.runs,
    }
    (out / "controls.json").write_text(json.dumps(payload, indent=1, default=str))


if __name__ == "__main__":
    main()
