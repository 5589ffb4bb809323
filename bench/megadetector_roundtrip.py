"""MegaDetector round trip on SynthToL composites: species accuracy on crops vs single images.

Builds a camera-trap folder from a SynthToL folder's test images (several animals per
picture, scaled, at known boxes) and its MegaDetector batch output, runs
``taxoclip predict --detections`` on it, and the same test images one by one through
``taxoclip predict``; prints top-1 species accuracy of both, detections classified, and
the time each took. Needs a trained model (e.g. a ``taxoclip demo`` run) and its index::

    python bench/megadetector_roundtrip.py --synth demo_out/synth --model demo_out/run \
        --index demo_out/index [--pictures 100] [--per-picture 3] [--scale 3]

With ``--runtimes torch,onnx`` (issue #20: the camera-trap path on the engine) it then
times ``--detections`` with a regional list and a deny list once per runtime, side by side
in one run (each command whole: start-up, model load, every crop, JSON and CSV written;
the ONNX runtime on the model exported beforehand, export not timed), and checks that the
runtimes write the same rows: the same label and rank landed per detection, scores within
``--tolerance``. The region is every other genus of the index's species, the deny list
one species of a kept genus (``REGION_SEED``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.predict.composites: the builder the tests use

from tests.predict.composites import make_camera_trap  # noqa: E402

from taxoclip.cli import main  # noqa: E402


def run(argv: list[str]) -> float:
    start = time.perf_counter()
    code = main(argv)
    if code not in (0, 3):
        raise SystemExit(f"taxoclip {' '.join(argv)} exited {code}")
    return time.perf_counter() - start


def detections(out: Path, md_path: Path, result: Path, extra: list[str]) -> list[str]:
    """``taxoclip predict`` over the camera folder's MegaDetector boxes, into ``result``."""
    return [
        "predict",
        str(out / "camera"),
        "--detections",
        str(md_path),
        "--output",
        str(result),
        *extra,
    ]


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth", required=True, type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--pretrained")
    parser.add_argument("--index", required=True)
    parser.add_argument("--pictures", type=int, default=100)
    parser.add_argument("--per-picture", type=int, default=3)
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--runtimes",
        default="",
        help="e.g. torch,onnx: time --detections with a region and "
        "deny list on each and compare their rows",
    )
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="md-bench-"))
    # auto's export goes to the bench's own folder, not the user's ~/.cache (inherited by
    # every taxoclip command below)
    os.environ.setdefault("TAXOCLIP_CACHE", str(out / "cache"))
    md_path, truth_path = make_camera_trap(
        args.synth, out / "camera", args.pictures, args.per_picture, args.scale, seed=0
    )
    truth = list(csv.DictReader(truth_path.open()))
    model = ["--model", args.model, "--index", args.index, "-q"]
    if args.pretrained:
        model += ["--pretrained", args.pretrained]
    run(
        [
            "predict",
            str(args.synth / "test" / truth[0]["source"]),
            "--output",
            str(out / "warm.csv"),
            *model,
        ]
    )  # imports and first model load: not timed below
    result = out / "md_taxoclip.json"
    crops_s = run(detections(out, md_path, result, model))
    rows = {
        (r["file"], r["detection"]): r for r in csv.DictReader(result.with_suffix(".csv").open())
    }
    crop_hits = sum(rows[(t["file"], t["detection"])]["label"] == t["species"] for t in truth)
    singles = [str(args.synth / "test" / t["source"]) for t in truth]
    single_csv = out / "single.csv"
    single_s = run(["predict", *singles, "--k", "1", "--output", str(single_csv), *model])
    single = {r["file_name"]: r for r in csv.DictReader(single_csv.open())}
    with (args.synth / "test" / "metadata.csv").open(newline="") as handle:
        meta = {r["filepath"]: r for r in csv.DictReader(handle)}
    lines = []
    for rank in ("species", "genus", "family"):
        crop = sum(
            rows[(t["file"], t["detection"])][rank] == meta[t["source"]][rank] for t in truth
        )
        alone = sum(
            single[s][rank] == meta[t["source"]][rank] for s, t in zip(singles, truth, strict=True)
        )
        lines.append(
            f"{rank}: crops {crop / len(truth):.3f}, single images {alone / len(truth):.3f}"
        )
    doc = json.loads(result.read_text())
    n_classified = sum("classifications" in d for i in doc["images"] for d in i["detections"])
    n = len(truth)
    print(
        f"pictures {args.pictures} x {args.per_picture} animals (scale {args.scale}), "
        f"{sum(len(i['detections']) for i in doc['images'])} detections, "
        f"{n_classified} classified"
    )
    print(f"top-1 species accuracy: crops {crop_hits}/{n} = {crop_hits / n:.3f}")
    print("top-1 (the best species' taxon) accuracy by rank: " + "; ".join(lines))
    print(f"time: --detections {crops_s:.1f} s; single images {single_s:.1f} s; folder {out}")
    runtimes = [r for r in args.runtimes.split(",") if r]
    if runtimes:
        compare_runtimes(args, out, md_path, runtimes, n)


REGION_SEED = 0


def region_lists(index: Path, out: Path) -> tuple[Path, Path]:
    """A regional list (every other genus of the index's species) and a deny list (one
    species of a kept genus), as taxoclip's --region/--deny CSVs (rank columns)."""
    import random

    from taxoclip.runtime.index import TextIndex

    lineages = [tuple(name[0]) for name in TextIndex.load(index).names]  # [7 ranks], common
    genera = sorted({lineage[:6] for lineage in lineages})
    kept = set(genera[::2])
    region, deny = out / "region.csv", out / "deny.csv"
    header = "kingdom,phylum,class,order,family,genus"
    region.write_text(header + "\n" + "".join(",".join(g) + "\n" for g in sorted(kept)))
    chosen = random.Random(REGION_SEED).choice(sorted(x for x in lineages if x[:6] in kept))
    deny.write_text(f"{header},species_epithet\n" + ",".join(chosen[:7]) + "\n")
    return region, deny


def compare_runtimes(args, out: Path, md_path: Path, runtimes: list[str], n: int) -> None:
    region, deny = region_lists(Path(args.index), out)
    lists = ["--region", str(region), "--deny", str(deny)]
    model = ["--model", args.model, "--index", args.index, "-q"]
    seconds, rows = {}, {}
    for runtime in runtimes:  # a warm-up each (imports, an export into the cache), untimed
        warm = out / f"warm-{runtime}.json"
        run(detections(out, md_path, warm, [*model, *lists, "--runtime", runtime]))
    for runtime in runtimes:
        result = out / f"md_{runtime}.json"
        seconds[runtime] = run(
            detections(out, md_path, result, [*model, *lists, "--runtime", runtime])
        )
        with result.with_suffix(".csv").open(newline="") as handle:
            rows[runtime] = {(r["file"], r["detection"]): r for r in csv.DictReader(handle)}
    first = runtimes[0]
    print(f"\n--detections with --region ({region}) and --deny ({deny}), {n} crops:")
    print(
        "| runtime | wall (s) | crops/s | × " + first + " | same label, rank landed | "
        "largest score diff |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for runtime in runtimes:
        same = sum(
            rows[runtime][k]["label"] == r["label"]
            and rows[runtime][k].get("rank_landed") == r.get("rank_landed")
            for k, r in rows[first].items()
        )
        diff = max(
            abs(float(rows[runtime][k]["score"] or 0) - float(r["score"] or 0))
            for k, r in rows[first].items()
        )
        print(
            f"| {runtime} | {seconds[runtime]:.1f} | {n / seconds[runtime]:.1f} | "
            f"{seconds[first] / seconds[runtime]:.2f}× | {same}/{len(rows[first])} | "
            f"{diff:.2e} |"
        )
        if same != len(rows[first]) or diff > args.tolerance:
            raise SystemExit(f"{runtime} rows differ from {first}'s")


if __name__ == "__main__":
    main_bench()
