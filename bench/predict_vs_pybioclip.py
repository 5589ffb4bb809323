"""``taxoclip predict`` against pybioclip, side by side on the same model, index and images.

An open_clip model (default ViT-B-16, BioCLIP's architecture, random weights: speed does
not depend on them) and a tree-of-life index are staged in a local Hugging Face cache as
``hf-hub:imageomics/bioclip-2`` and its TreeOfLife-200M embeddings (pybioclip's
tree-of-life mode accepts no other model); the same weights are exported with
``taxoclip export onnx --int8``. Every tool runs offline on the same SynthToL images:

(a) CLI wall time of the whole command (start-up, model load, every image, CSV written),
    each tool's default settings (pybioclip: batch 10 and torch.compile with its compile
    cache warm — ``--cold`` adds a cold-cache run; taxoclip: batch 32) — for pybioclip,
    taxoclip on torch, and taxoclip on ONNX Runtime fp32 and int8 (the exported folder);
(b) API images/s of ``TreeOfLifeClassifier.predict`` (``runtime=`` the ONNX one for the
    ONNX runtimes) after construction and a warm-up call, batch 10 for all;
(c) CLI start-up: the whole command on one image;
(d) agreement: top-1 species identical and the largest score difference, taxoclip torch
    against pybioclip and each ONNX runtime against taxoclip torch;
(e) taxoclip with no flags at all, as a pybioclip user would call it (``--runtime auto`` on
    the staged plain model folder, never exported): its first run, with a fresh export
    cache (``TAXOCLIP_CACHE``: the export and its agreement check are in the time), and
    its second run on that cache (no torch). CLI rows only: the API takes a runtime.

Runs alternate between the tools; each figure is the best of ``--repeats``. Bounded: 200
images and one repeat by default (``make bench``).

    python bench/predict_vs_pybioclip.py [--images 200] [--repeats 1] [--arch ViT-B-16]
        [--tools pybioclip,taxoclip,onnx,onnx-int8,auto-first,auto-second]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_name  # bench/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent
TOOLS = ("pybioclip", "taxoclip", "onnx", "onnx-int8", "auto-first", "auto-second")
OUT = HERE / "out" / "predict"

API = r"""
import json, sys, time

images, mode, index = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
if mode == "pybioclip":
    from bioclip import Rank, TreeOfLifeClassifier
    classifier = TreeOfLifeClassifier(device="cpu")
elif mode == "taxoclip":
    from taxoclip.predict import Rank, TreeOfLifeClassifier
    classifier = TreeOfLifeClassifier(model_str="hf-hub:imageomics/bioclip-2", workers=0)
else:  # onnx / onnx-int8 on the exported folder (sys.argv[4])
    from taxoclip.predict import Rank, TreeOfLifeClassifier
    classifier = TreeOfLifeClassifier(model_str=sys.argv[4], index=index, runtime=mode)
classifier.predict(images[:20], Rank.SPECIES, k=5, batch_size=10)  # warm-up (pybioclip compiles)
start = time.perf_counter()
classifier.predict(images, Rank.SPECIES, k=5, batch_size=10)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def prepare(n_images: int, arch: str, n_taxa: int) -> tuple[list[str], dict[str, str], Path, Path]:
    from taxoclip.models import create_model, save_model
    from taxoclip.models.hubcache import place_index, place_model_folder
    from taxoclip.predict.config import IndexConfig
    from taxoclip.predict.run import run_index
    from taxoclip.runtime.config import ExportOnnxConfig
    from taxoclip.runtime.export import export_onnx
    from taxoclip.synth import SynthConfig, generate

    data = OUT / f"synth-{n_taxa}"
    if not (data / "synth.json").exists():
        shutil.rmtree(data, ignore_errors=True)
        per_species = max(2, -(-n_images // n_taxa) + 1)
        generate(
            data,
            SynthConfig(species=n_taxa, images_per_species=per_species, image_size=64, seed=1),
            progress=False,
        )
    images = sorted(str(p) for p in data.rglob("*.jpg"))[:n_images]
    model_dir, exported = OUT / arch, OUT / f"{arch}-onnx"
    index_dir, hf_home = OUT / f"index-{arch}-{n_taxa}", OUT / f"hf-{arch}"
    if not model_dir.exists():
        loaded = create_model(arch, seed=0)
        save_model(loaded.model, model_dir, loaded.model_cfg, loaded.preprocess_cfg)
    if not (exported / "image_encoder.int8.onnx").exists():
        export_onnx(ExportOnnxConfig(model=str(model_dir), out=str(exported), int8=True))
    if not index_dir.exists():  # through the exported text tower: the fast way to build it
        run_index(
            IndexConfig(
                model=str(exported),
                taxa=str(data / "species.csv"),
                out=str(index_dir),
                runtime="onnx",
                progress=False,
            )
        )
    place_model_folder(hf_home, "imageomics/bioclip-2", model_dir)
    place_index(hf_home, "imageomics/TreeOfLife-200M", index_dir)
    env = {
        **os.environ,
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "TORCHINDUCTOR_CACHE_DIR": str(OUT / "inductor"),
    }
    return images, env, exported, index_dir


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed:\n{done.stderr[-3000:]}")
    return elapsed


def read_predictions(path: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            rows.setdefault(row["file_name"], []).append(row)
    return rows


def agreement(reference: dict[str, list[dict]], other: dict[str, list[dict]]) -> tuple[int, float]:
    same = sum(reference[k][0]["species"] == other[k][0]["species"] for k in reference)
    diff = max(
        abs(float(a["score"]) - float(b["score"]))
        for k in reference
        for a, b in zip(reference[k], other[k], strict=True)
    )
    return same, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--arch", default="ViT-B-16", help="open_clip model name (random weights)")
    parser.add_argument("--taxa", type=int, default=30, help="taxa in the index")
    parser.add_argument(
        "--cold", action="store_true", help="also time pybioclip's cold torch.compile cache"
    )
    parser.add_argument(
        "--tools",
        default=",".join(TOOLS),
        help="which rows to run, in this order (auto-second needs auto-first before it)",
    )
    args = parser.parse_args()
    tools = tuple(t for t in args.tools.split(",") if t)
    if not set(tools) <= set(TOOLS) or ("auto-second" in tools and "auto-first" not in tools):
        parser.error(f"--tools: a list of {', '.join(TOOLS)} (auto-second after auto-first)")
    OUT.mkdir(parents=True, exist_ok=True)
    images, env, exported, index_dir = prepare(args.images, args.arch, args.taxa)
    bin_dir = Path(sys.executable).parent
    csvs = {tool: OUT / f"{tool}.csv" for tool in tools}

    def command(tool: str, inputs: list[str], out: Path) -> list[str]:
        if tool == "pybioclip":
            return [str(bin_dir / "bioclip"), "predict", *inputs, "--output", str(out)]
        model = ["--model", str(exported), "--index", str(index_dir), "--runtime", tool]
        if tool == "taxoclip":  # the staged hf-hub:imageomics/bioclip-2 and its index, on torch
            model = ["--runtime", "torch"]
        elif tool.startswith("auto-"):  # no flags: the staged model on the default runtime
            model = []
        return [
            str(bin_dir / "taxoclip"),
            "predict",
            *inputs,
            *model,
            "--output",
            str(out),
            "--offline",
            "-q",
        ]

    cli = {tool: [] for tool in tools}
    startup = {tool: [] for tool in tools}
    api = {tool: [] for tool in tools}
    cold = []
    for repeat in range(args.repeats):
        export_cache = OUT / f"export-cache-{repeat}"  # auto-first starts from nothing
        shutil.rmtree(export_cache, ignore_errors=True)
        if args.cold:  # a first run, or any run in a fresh container: compile from nothing
            cold_env = {**env, "TORCHINDUCTOR_CACHE_DIR": str(OUT / f"cold-{time.time_ns()}")}
            cold.append(timed(command("pybioclip", images, csvs["pybioclip"]), cold_env))
            shutil.rmtree(cold_env["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
        for tool in tools:
            tool_env = {**env, "TAXOCLIP_CACHE": str(export_cache)}
            cli[tool].append(timed(command(tool, images, csvs[tool]), tool_env))
            if tool == "auto-first":
                continue  # a first run happens once: no start-up run, no API
            startup[tool].append(timed(command(tool, images[:1], OUT / "one.csv"), tool_env))
            if tool == "auto-second":
                continue
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    API,
                    json.dumps(images),
                    tool,
                    str(index_dir),
                    str(exported),
                ],
                capture_output=True,
                text=True,
                env=env,
            )
            if done.returncode != 0:
                raise SystemExit(f"API run of {tool} failed:\n{done.stderr[-3000:]}")
            api[tool].append(
                len(images) / json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
            )

    rows = {tool: read_predictions(path) for tool, path in csvs.items()}
    import torch

    best_cli = {tool: min(times) for tool, times in cli.items()}
    best_start = {tool: min(times) for tool, times in startup.items() if times}
    best_api = {tool: max(rates) for tool, rates in api.items() if rates}
    print(
        f"command: python bench/predict_vs_pybioclip.py --images {len(images)} "
        f"--repeats {args.repeats} --arch {args.arch} --taxa {args.taxa} --tools {args.tools}"
    )
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}; model "
        f"{args.arch} (random weights) staged as hf-hub:imageomics/bioclip-2; index of "
        f"{args.taxa} taxa"
    )
    print()
    names = {
        "pybioclip": "pybioclip",
        "taxoclip": "taxoclip torch",
        "onnx": "taxoclip ONNX fp32",
        "onnx-int8": "taxoclip ONNX int8",
        "auto-first": "taxoclip, no flags: first run",
        "auto-second": "taxoclip, no flags: second run",
    }
    base_cli, base_api = best_cli.get("pybioclip"), best_api.get("pybioclip")

    def figure(value: float | None, base: float | None = None, ratio: bool = False) -> str:
        if value is None or (ratio and base is None):
            return "–"
        return f"{value / base:.2f}×" if ratio else f"{value:.1f}"

    print(
        f"| runtime | CLI wall, {len(images)} images (s) | CLI × pybioclip | CLI on 1 image (s) "
        "| API img/s | API × pybioclip | top-1 same | largest score diff |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for tool in tools:
        if tool == "pybioclip":
            same, diff = len(rows[tool]), 0.0
            versus = "(reference)"
        else:
            against = "pybioclip" if tool == "taxoclip" else "taxoclip"
            if against in rows:
                reference = rows[against]
                same, diff = agreement(reference, rows[tool])
                name = "pybioclip" if tool == "taxoclip" else "torch"
                versus = f"{same}/{len(reference)} vs {name}"
            else:
                versus, diff = f"({against} not run)", float("nan")
        cli_x = figure(base_cli, best_cli[tool], ratio=True)  # × faster than pybioclip
        api = best_api.get(tool)
        print(
            f"| {names[tool]} | {best_cli[tool]:.1f} | {cli_x} | "
            f"{figure(best_start.get(tool))} | {figure(api)} | {figure(api, base_api, True)} | "
            f"{versus} | {diff:.1e} |"
        )
    if cold:
        print(f"\npybioclip with a cold torch.compile cache: {min(cold):.1f} s")
    record = {
        "cli_s": best_cli,
        "startup_s": best_start,
        "api_img_s": best_api,
        "cold_pybioclip_s": min(cold) if cold else None,
        "images": len(images),
        "arch": args.arch,
    }
    (OUT / "results.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
