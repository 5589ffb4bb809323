"""The demo's plan and flow: every stage called through its own ``run(config)``.

synth (with its GBIF-like raw source and its web corpus) → curate (names, checks, dedup,
leaks → shards) → stage 1: a general CLIP on the web captions → stage 2: BioCLIP 2's
recipe from it on the curated shards, replaying the web corpus → index the tree of life
and name a few test images → eval (SynthToL suite, beside the untrained twin) → analyze
the embedding space → the paper's claims beside the untrained and the general model (one
seed: the study runs the seeds) → one HTML report, whose path is printed last.
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
    stage1_epochs: int  # over the web corpus
    epochs: int  # stage 2, over the curated shards
    replay_ratio: float  # stage 2's share of each step's images replayed from the web corpus
    batch_size: int
    warmup: int
    samples_per_shard: int


# Sized so `make demo` stays within 10 minutes on 2 cores, set-up included (measured in
# docs/benchmarks.md); the scaling study trains longer and over seeds.
FULL = DemoPlan(
    dict(
        species=240,
        images_per_species=32,
        image_size=32,
        seed=0,
        preview=True,
        raw_source=True,
        web=12000,
    ),
    stage1_epochs=6,
    epochs=9,
    # the study's recipe before its sweep: the sweep chose for the study's world and steps
    # (docs/training.md), not the demo's; the demo keeps what its timing was measured with
    replay_ratio=0.2,
    batch_size=128,
    warmup=40,
    samples_per_shard=1000,
)
QUICK = DemoPlan(
    dict(
        species=40,
        images_per_species=10,
        image_size=32,
        seed=0,
        preview=True,
        raw_source=True,
        web=400,
    ),
    stage1_epochs=2,
    epochs=3,
    replay_ratio=0.2,
    batch_size=64,
    warmup=5,
    samples_per_shard=150,
)
STEPS = 9  # the demo's steps, printed as [n/9]


def run_demo(config: DemoConfig) -> DemoResult:
    """Run the demo into ``config.out`` (a new or empty directory); its steps print as they go."""
    from taxoclip import analyze, evaluate, report, synth
    from taxoclip.study.summary import format_table

    out = Path(config.out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"demo output {out} is not empty; remove it or pass --out NEW_DIR")
    plan, progress = (QUICK if config.quick else FULL), config.progress
    started = time.perf_counter()

    def step(n: int, text: str) -> None:
        print(f"[{n}/{STEPS}] {text} ({time.perf_counter() - started:.0f} s in)", flush=True)

    s = plan.synth
    step(
        1,
        f"synth: {s['species']} species × {s['images_per_species']} images at "
        f"{s['image_size']} px, seed {s['seed']}, with its raw GBIF-like source",
    )
    made = synth.run(synth.SynthConfig(out=str(out / "synth"), progress=progress, **s))

    step(2, "curate the raw source: names, image checks, duplicates, test-set leaks → shards")
    curated = _curate(made, out, plan, progress)
    stats = curated.stats
    print(
        f"      {stats['records_in']} records: {stats['kept']} kept, {stats['rejected']} "
        f"rejected ("
        + ", ".join(f"{k} {v}" for k, v in stats["rejected_by_stage"].items() if v)
        + ")"
    )

    step(
        3,
        f"stage 1: a general CLIP (taxoclip-vit-t32) on the web corpus' captions, "
        f"{plan.stage1_epochs} epochs",
    )
    general, trained = _two_stages(made, curated, out, plan, progress, step)
    model = str(trained.model_dir)

    step(5, "index the tree of life with the trained model; predict a few test images")
    index_dir = out / "index"
    from taxoclip import predict

    predict.run_index(
        predict.IndexConfig(
            model=model, taxa=str(made.out / "species.csv"), out=str(index_dir), progress=False
        )
    )
    print(_name_examples(model, index_dir, made.out / "test", made.n_test), end="")

    step(6, "eval: the SynthToL suite, beside the untrained twin")
    evaluated = evaluate.run(
        evaluate.EvalConfig(
            model=model,
            data=str(made.out),
            suite="synth",
            out=str(out / "eval"),
            cache_dir=str(out / "eval" / ".features"),
            progress=progress,
        )
    )
    print(evaluate.format_table(evaluated.rows), end="")

    step(7, "analyze the embedding space (traits, habitat, taxonomy, sexes, life stages)")
    analysis = analyze.run(
        analyze.AnalyzeConfig(
            model=model,
            data=str(made.out),
            out=str(out / "analysis"),
            seed=s["seed"],
            progress=progress,
            # The ceiling costs about 40 CPU-seconds on this world (docs/analyze.md), more
            # than the 10-minute budget leaves: `taxoclip analyze` on the demo's output
            # measures it.
            ceiling=False,
        )
    )
    print(analyze.format_summary(analysis))

    step(
        8,
        "the paper's claims: the stage-2 model beside the untrained twin and the general "
        "model (one seed)",
    )
    claims = demo_claims(
        out,
        made,
        curated,
        general.model_dir,
        trained.model_dir,
        evaluated,
        analysis,
        s["seed"],
        progress,
    )
    print(format_table(claims), end="")

    step(9, "report")
    written = report.run(
        report.ReportConfig(
            dirs=[str(out / d) for d in ("claims", "analysis", "run", "eval", "curated")],
            out=str(out / "report.html"),
        )
    )
    elapsed = time.perf_counter() - started
    summary = _summary(out, made, curated, general, trained, index_dir, evaluated, claims, elapsed)
    return DemoResult(out=out, report=written.out, seconds=elapsed, summary=summary)


def _curate(made, out: Path, plan: DemoPlan, progress: bool):
    """Step 2: the raw source through ``taxoclip curate`` (names, checks, dedup, leaks)."""
    from taxoclip import curate

    s = plan.synth
    return curate.run(
        curate.CurateConfig(
            sources=[str(made.out)],
            backbone=str(made.out / "raw" / "backbone"),
            out=str(out / "curated"),
            exclude_eval=[str(made.out / "test")],
            image_size=s["image_size"],
            samples_per_shard=plan.samples_per_shard,
            workers=min(4, os.cpu_count() or 1),
            seed=s["seed"],
            progress=progress,
        )
    )


def _two_stages(made, curated, out: Path, plan: DemoPlan, progress: bool, step):
    """Steps 3 and 4: the paper's two training stages, a general CLIP on the web corpus,
    then BioCLIP 2's recipe from it on the curated shards with replay."""
    from taxoclip import train
    from taxoclip.data import ShardSet

    s = plan.synth
    web_shards = ShardSet.load(made.web / "shards", prefix="web").pattern
    general = train.run(
        train.TrainConfig(
            data=web_shards,
            out=str(out / "stage1"),
            text_type="caption",
            caption_positives=True,
            epochs=plan.stage1_epochs,
            batch_size=plan.batch_size,
            warmup=plan.warmup,
            workers=1,
            seed=s["seed"],
            progress=progress,
        )
    )

    step(
        4,
        f"stage 2: BioCLIP 2's recipe from the general model on the curated shards, "
        f"replaying the web corpus, {plan.epochs} epochs, batch {plan.batch_size}",
    )
    trained = train.run(
        train.TrainConfig(
            data=curated.shard_pattern,
            out=str(out / "run"),
            model=str(general.model_dir),
            replay=web_shards,
            replay_ratio=plan.replay_ratio,
            epochs=plan.epochs,
            batch_size=plan.batch_size,
            warmup=plan.warmup,
            workers=1,
            seed=s["seed"],
            progress=progress,
        )
    )
    return general, trained


def demo_claims(out, made, curated, general_dir, model_dir, evaluated, analysis, seed, progress):
    """The claims table of one seed: the stage-2 model and its untrained twin as the
    analysis and eval measured them, the general model measured by the study's own
    :func:`~taxoclip.study.scaling.measure`; written as ``OUT/claims/study.json``."""
    import json

    from taxoclip.analyze import write_json
    from taxoclip.models import load_model, untrained_twin
    from taxoclip.study.scaling import measure, plain_values, values_from_analysis, web_values
    from taxoclip.study.summary import summarise

    metrics = json.loads((analysis.out / "metrics.json").read_text())
    loaded = load_model(str(model_dir))
    twin = untrained_twin(loaded, seed=seed)
    runs = {}
    for name, kind, part, model_name, model in (
        ("w0/s0/stage2", "stage2", "model", "trained", loaded),
        ("w0/s0/untrained", "untrained", "baseline", "untrained", twin),
    ):
        values = values_from_analysis(metrics, part)
        values.update(
            plain_values({**_eval_zero_shot(evaluated, model_name), **web_values(model, made.web)})
        )
        runs[name] = {
            "kind": kind,
            "world": 0,
            "seed": 0,
            "values": values,
            "n_train": curated.stats["kept"] if kind == "stage2" else None,
            # the report names the analysed model and what it was initialised from
            **({"model": str(model_dir)} if kind == "stage2" else {}),
        }
    general = measure(
        general_dir, made.out, made.web, out / "claims" / "general", seed, "cpu", progress
    )
    runs["w0/general"] = {
        "kind": "general",
        "world": 0,
        "seed": None,
        "n_train": None,
        "model": str(general_dir),
        **general,
    }
    summary = summarise(runs, worlds=[0], seeds=[0])
    claims = {
        "kind": "claims",
        "recipe": "two-stage",
        "budget": "one run",
        "note": "one seed and one data size: each verdict's margin comes from the value's "
        "own sampling sd (a bootstrap over species) where its metric gives one, else from "
        "the null's permutation sd, not from a spread over seeds, and there are no trends, "
        "no flat and no no-replay baseline; taxoclip study scaling runs those",
        "claims": summary["claims"],
        "trends": [],
        "runs": runs,
    }
    write_json(out / "claims" / "study.json", claims)
    return claims


def _eval_zero_shot(evaluated, model: str) -> dict[str, float | None]:
    """The study's zero-shot keys from the eval rows of one model."""
    wanted = {
        ("seen species", "zero-shot top-1"): "zero_shot.seen_top1",
        ("unseen species", "zero-shot top-1"): "zero_shot.unseen_top1",
        ("unseen species", "zero-shot top-1 genus"): "zero_shot.unseen_genus_top1",
    }
    found = dict.fromkeys(wanted.values())
    for row in evaluated.rows:
        if row.model == model and (row.task, row.metric) in wanted:
            found[wanted[(row.task, row.metric)]] = row.value
    return found


def _name_examples(model: str, index_dir: Path, test: Path, n_test: int) -> str:
    """A table of four test images: true species beside the predicted one."""
    from taxoclip import predict
    from taxoclip.predict.output import write_rows

    examples = sorted((test / "images").rglob("*.jpg"))[:: max(1, n_test // 4)][:4]
    result = predict.run_predict(
        predict.PredictConfig(
            images=[str(p) for p in examples],
            model=model,
            index=str(index_dir),
            k=1,
            output=os.devnull,
            progress=False,
            keep_rows=True,
        )
    )
    with (test / "metadata.csv").open(newline="", encoding="utf-8") as handle:
        truth = {row["filepath"]: row["class"] for row in csv.DictReader(handle)}
    table = io.StringIO()
    rows = []
    for r in result.rows:
        image = Path(r["file_name"]).relative_to(test).as_posix()
        rows.append(
            {
                "image": image,
                "true species": truth[image],
                "predicted": r["species"],
                "common name": r["common_name"],
                "score": round(r["score"], 3),
            }
        )
    write_rows(rows, "table", table)
    return table.getvalue()


def _zero_shot(evaluated, task: str, metric: str = "zero-shot top-1") -> float | None:
    for row in evaluated.rows:
        if (row.task, row.metric, row.model) == (task, metric, "trained"):
            return row.value
    return None


def _summary(out, made, curated, general, trained, index_dir, evaluated, claims, elapsed):
    lines = [
        "",
        f"demo finished in {elapsed:.0f} s; results in {out}/",
        f"  SynthToL          {made.out}/  ({made.n_species} species, {made.n_unseen_species} "
        f"unseen; {made.n_train} train / {made.n_test} test images)",
        f"  raw source        {made.out / 'raw'}/  (DwC-A, GBIF-format backbone, truth.csv)",
        f"  curated shards    {curated.shard_pattern}  (+ manifest, rejected, stats)",
        f"  web corpus        {made.web}/  (the general image-caption pairs of stage 1)",
        f"  general model     {general.model_dir}/  (stage 1, on the web captions)",
        f"  training run      {trained.run}/  (stage 2: metrics.jsonl, tensorboard/, checkpoints/)",
        f"  trained model     {trained.model_dir}/  (stage 2, initialised from the general "
        "model; the model analysed)",
        f"  text index        {index_dir}/  (pybioclip's txt_emb_species files)",
    ]
    chance = 1 / made.n_species
    seen, unseen = _zero_shot(evaluated, "seen species"), _zero_shot(evaluated, "unseen species")
    if seen is not None:
        lines.append(
            f"  zero-shot top-1   held-out images of seen species: {seen:.3f} "
            f"(80 templates, among all {made.n_species} species; chance {chance:.3f})"
        )
    if unseen is not None:
        lines.append(f"                    species never seen in training:  {unseen:.3f}")
    lines += [
        f"  evaluation        {out / 'eval'}/results.json",
        f"  analysis          {out / 'analysis'}/metrics.json and plots/",
        f"  claims            {out / 'claims'}/study.json  ("
        + ", ".join(
            f"{sum(c['verdict'] == v for c in claims['claims'])} {said}"
            for v, said in (
                ("holds", "hold"),
                ("inconclusive", "inconclusive"),
                ("does not hold", "do not hold"),
            )
        )
        + "; one seed)",
        f"  try               taxoclip predict {made.out}/test/images --model {trained.model_dir} "
        f"--index {index_dir} --rank genus --format table",
    ]
    return lines
