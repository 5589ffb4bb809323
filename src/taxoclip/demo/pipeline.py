"""The demo's plan and flow: every stage called through its own ``run(config)``.

synth (with its GBIF-like raw source) → curate (names, checks, dedup, leaks → shards) →
train a tiny CLIP with BioCLIP 2's recipe on the curated shards → index the tree of life
and name a few test images → eval (SynthToL suite, beside the untrained twin) → analyze
the embedding space (docs/analyze.md) → one HTML report, whose path is printed last.
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taxoclip.errors import UsageError

from .config import DemoConfig, DemoResult


@dataclass(frozen=True)
class DemoPlan:
    synth: dict[str, Any]  # SynthConfig fields
    epochs: int
    batch_size: int
    warmup: int
    samples_per_shard: int


# Sized so `make demo` stays within 10 minutes on 2 cores, set-up included (measured in
# docs/benchmarks.md); the scaling study trains longer.
FULL = DemoPlan(
    dict(species=240, images_per_species=32, image_size=32, seed=0, preview=True, raw_source=True),
    epochs=15,
    batch_size=128,
    warmup=60,
    samples_per_shard=1000,
)
QUICK = DemoPlan(
    dict(species=40, images_per_species=10, image_size=32, seed=0, preview=True, raw_source=True),
    epochs=3,
    batch_size=64,
    warmup=5,
    samples_per_shard=150,
)
STAGES = 7


def run_demo(config: DemoConfig) -> DemoResult:
    """Run the demo into ``config.out`` (a new or empty directory); stages print as they go."""
    from taxoclip import analyze, curate, evaluate, report, synth, train

    out = Path(config.out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"demo output {out} is not empty; remove it or pass --out NEW_DIR")
    plan, progress = (QUICK if config.quick else FULL), config.progress
    started = time.perf_counter()

    def stage(n: int, text: str) -> None:
        print(f"[{n}/{STAGES}] {text} ({time.perf_counter() - started:.0f} s in)", flush=True)

    s = plan.synth
    stage(1, f"synth: {s['species']} species × {s['images_per_species']} images at "
             f"{s['image_size']} px, seed {s['seed']}, with its raw GBIF-like source")  # fmt: skip
    made = synth.run(synth.SynthConfig(out=str(out / "synth"), progress=progress, **s))

    stage(2, "curate the raw source: names, image checks, duplicates, test-set leaks → shards")
    raw = made.out / "raw"
    curated = curate.run(
        curate.CurateConfig(
            sources=[str(made.out)], backbone=str(raw / "backbone"), out=str(out / "curated"),
            exclude_eval=[str(made.out / "test")], image_size=s["image_size"],
            samples_per_shard=plan.samples_per_shard, workers=min(4, os.cpu_count() or 1),
            seed=s["seed"], progress=progress,
        )
    )  # fmt: skip
    stats = curated.stats
    print(f"      {stats['records_in']} records: {stats['kept']} kept, {stats['rejected']} "
          f"rejected (" + ", ".join(f"{k} {v}" for k, v in stats["rejected_by_stage"].items() if v)
          + ")")  # fmt: skip

    stage(3, f"train: taxoclip-vit-t32 on the curated shards, {plan.epochs} epochs, "
             f"batch {plan.batch_size}")  # fmt: skip
    trained = train.run(
        train.TrainConfig(data=curated.shard_pattern, out=str(out / "run"), epochs=plan.epochs,
                          batch_size=plan.batch_size, warmup=plan.warmup, workers=1,
                          seed=s["seed"], progress=progress)
    )  # fmt: skip
    model = str(trained.model_dir)

    stage(4, "index the tree of life with the trained model; predict a few test images")
    index_dir = out / "index"
    from taxoclip import predict

    predict.run_index(predict.IndexConfig(model=model, taxa=str(made.out / "species.csv"),
                                          out=str(index_dir), progress=False))  # fmt: skip
    print(_name_examples(model, index_dir, made.out / "test", made.n_test), end="")

    stage(5, "eval: the SynthToL suite, beside the untrained twin")
    evaluated = evaluate.run(
        evaluate.EvalConfig(model=model, data=str(made.out), suite="synth", out=str(out / "eval"),
                            cache_dir=str(out / "eval" / ".features"), progress=progress)
    )  # fmt: skip
    print(evaluate.format_table(evaluated.rows), end="")

    stage(6, "analyze the embedding space (traits, habitat, taxonomy, sexes, life stages)")
    analysis = analyze.run(
        analyze.AnalyzeConfig(model=model, data=str(made.out), out=str(out / "analysis"),
                              split="test", seed=s["seed"], progress=progress)
    )  # fmt: skip
    print(analyze.format_summary(analysis))

    stage(7, "report")
    written = report.run(
        report.ReportConfig(dirs=[str(out / d) for d in ("analysis", "run", "eval", "curated")],
                            out=str(out / "report.html"))
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    summary = _summary(out, made, curated, trained, index_dir, evaluated, elapsed)
    return DemoResult(out=out, report=written.out, seconds=elapsed, summary=summary)


def _name_examples(model: str, index_dir: Path, test: Path, n_test: int) -> str:
    """A table of four test images: true species beside the predicted one."""
    from taxoclip import predict
    from taxoclip.predict.output import write_rows

    examples = sorted((test / "images").rglob("*.jpg"))[:: max(1, n_test // 4)][:4]
    result = predict.run_predict(
        predict.PredictConfig(images=[str(p) for p in examples], model=model,
                              index=str(index_dir), k=1, output=os.devnull, progress=False)
    )  # fmt: skip
    with (test / "metadata.csv").open(newline="", encoding="utf-8") as handle:
        truth = {row["filepath"]: row["class"] for row in csv.DictReader(handle)}
    table = io.StringIO()
    rows = []
    for r in result.rows:
        image = Path(r["file_name"]).relative_to(test).as_posix()
        rows.append({"image": image, "true species": truth[image], "predicted": r["species"],
                     "common name": r["common_name"], "score": round(r["score"], 3)})  # fmt: skip
    write_rows(rows, "table", table)
    return table.getvalue()


def _zero_shot(evaluated, task: str, metric: str = "zero-shot top-1") -> float | None:
    for row in evaluated.rows:
        if (row.task, row.metric, row.model) == (task, metric, "trained"):
            return row.value
    return None


def _summary(out, made, curated, trained, index_dir, evaluated, elapsed) -> list[str]:
    lines = [
        "",
        f"demo finished in {elapsed:.0f} s; results in {out}/",
        f"  SynthToL          {made.out}/  ({made.n_species} species, {made.n_unseen_species} "
        f"unseen; {made.n_train} train / {made.n_test} test images)",
        f"  raw source        {made.out / 'raw'}/  (DwC-A, GBIF-format backbone, truth.csv)",
        f"  curated shards    {curated.shard_pattern}  (+ manifest, rejected, stats)",
        f"  training run      {trained.run}/  (metrics.jsonl, tensorboard/, checkpoints/)",
        f"  trained model     {trained.model_dir}/  (open_clip local-dir: layout)",
        f"  text index        {index_dir}/  (pybioclip's txt_emb_species files)",
    ]
    chance = 1 / made.n_species
    seen, unseen = _zero_shot(evaluated, "seen species"), _zero_shot(evaluated, "unseen species")
    if seen is not None:
        lines.append(f"  zero-shot top-1   held-out images of seen species: {seen:.3f} "
                     f"(80 templates, among all {made.n_species} species; chance {chance:.3f})")  # fmt: skip
    if unseen is not None:
        lines.append(f"                    species never seen in training:  {unseen:.3f}")
    lines += [
        f"  evaluation        {out / 'eval'}/results.json",
        f"  analysis          {out / 'analysis'}/metrics.json and plots/",
        f"  try               taxoclip predict {made.out}/test/images --model {trained.model_dir} "
        f"--index {index_dir} --rank genus --format table",
    ]
    return lines
