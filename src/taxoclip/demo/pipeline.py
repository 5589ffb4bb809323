"""``taxoclip demo``: the whole system on the embedded SynthToL default, end to end.

synth (with its GBIF-like raw source) → curate (names, checks, dedup, leaks → shards) →
train a tiny CLIP with BioCLIP 2's recipe on the curated shards → index the tree of life
and name a few test images → eval (SynthToL suite, beside the untrained twin) → analyze
the embedding space (DESIGN section 6) → one HTML report, whose path is printed last.
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from taxoclip.errors import EXIT_OK, UsageError
from taxoclip.synth import SynthConfig, SynthResult, generate

if TYPE_CHECKING:
    from taxoclip.models import LoadedModel


@dataclass(frozen=True)
class DemoPlan:
    synth: SynthConfig
    epochs: int
    batch_size: int
    warmup: int
    samples_per_shard: int


# Sized so `make demo` stays within 10 minutes on 2 cores, set-up included (measured in
# docs/benchmarks.md); the scaling study trains longer.
FULL = DemoPlan(
    SynthConfig(species=240, images_per_species=32, image_size=32, seed=0, preview=True,
                raw_source=True),
    epochs=15,
    batch_size=128,
    warmup=60,
    samples_per_shard=1000,
)  # fmt: skip
QUICK = DemoPlan(
    SynthConfig(species=40, images_per_species=10, image_size=32, seed=0, preview=True,
                raw_source=True),
    epochs=3,
    batch_size=64,
    warmup=5,
    samples_per_shard=150,
)  # fmt: skip
STAGES = 7


def run_demo(out: str | os.PathLike, quick: bool = False, progress: bool = True) -> int:
    """Run the demo into ``out`` (a new or empty directory) and print where results are."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"demo output {out} is not empty; remove it or pass --out NEW_DIR")
    plan = QUICK if quick else FULL
    started = time.perf_counter()

    def stage(n: int, text: str) -> None:
        print(f"[{n}/{STAGES}] {text} ({time.perf_counter() - started:.0f} s in)", flush=True)

    config = plan.synth
    stage(1, f"synth: {config.species} species × {config.images_per_species} images at "
             f"{config.image_size} px, seed {config.seed}, with its raw GBIF-like source")  # fmt: skip
    synth = generate(out / "synth", config, progress=progress)

    stage(2, "curate the raw source: names, image checks, duplicates, test-set leaks → shards")
    from taxoclip.curate import CurateConfig, curate

    raw = synth.out / "raw"
    curated = curate(
        CurateConfig(
            sources=[str(synth.out)],
            backbone=str(raw / "backbone"),
            out=str(out / "curated"),
            exclude_eval=[str(synth.out / "test")],
            image_size=config.image_size,
            samples_per_shard=plan.samples_per_shard,
            workers=min(4, os.cpu_count() or 1),
            seed=config.seed,
        ),
        progress=progress,
    )
    stats = curated.stats
    print(f"      {stats['records_in']} records: {stats['kept']} kept, {stats['rejected']} "
          f"rejected (" + ", ".join(f"{k} {v}" for k, v in stats["rejected_by_stage"].items() if v)
          + ")")  # fmt: skip

    stage(3, f"train: taxoclip-vit-t32 on the curated shards, {plan.epochs} epochs, "
             f"batch {plan.batch_size}")  # fmt: skip
    from taxoclip.models import load_model
    from taxoclip.train import TrainConfig, train
    from taxoclip.train.validate import zero_shot_top1

    result = train(
        TrainConfig(
            data=curated.shard_pattern,
            out=str(out / "run"),
            epochs=plan.epochs,
            batch_size=plan.batch_size,
            warmup=plan.warmup,
            workers=1,
            seed=config.seed,
            progress=progress,
        )
    )
    trained = load_model(result.model_dir)
    scores = {
        name: zero_shot_top1(
            trained.model,
            trained.preprocess_val,
            trained.tokenizer,
            synth.out / "test",
            trained.model.logit_scale.device,
            where={"seen": flag},
        )  # fmt: skip
        for name, flag in (("seen", "True"), ("unseen", "False"))
        if name == "seen" or synth.n_unseen_species
    }

    stage(4, "index the tree of life with the trained model; predict a few test images")
    index_dir = _index_and_predict(trained, result.model_dir, synth, out)

    stage(5, "eval: the SynthToL suite, beside the untrained twin")
    from taxoclip.evaluate.runner import format_table, run_eval

    rows, _ = run_eval(str(result.model_dir), data=str(synth.out), suite="synth",
                       out=str(out / "eval"), cache_dir=str(out / "eval" / ".features"),
                       progress=progress)  # fmt: skip
    print(format_table(rows), end="")

    stage(6, "analyze the embedding space (traits, habitat, taxonomy, sexes, life stages)")
    from taxoclip.analyze.run import format_summary, run_analysis

    analysis = run_analysis(str(result.model_dir), synth.out, out / "analysis",
                            split="test", seed=config.seed, progress=progress)  # fmt: skip
    print(format_summary(analysis))

    stage(7, "report")
    from taxoclip.report import write_report

    report = write_report(
        [out / "analysis", out / "run", out / "eval", out / "curated"], out / "report.html"
    )
    elapsed = time.perf_counter() - started
    print()
    print(f"demo finished in {elapsed:.0f} s; results in {out}/")
    print(
        f"  SynthToL          {synth.out}/  ({synth.n_species} species, "
        f"{synth.n_unseen_species} unseen; {synth.n_train} train / {synth.n_test} test images)"
    )
    print(f"  raw source        {raw}/  (DwC-A, GBIF-format backbone, truth.csv)")
    print(f"  curated shards    {curated.shard_pattern}  (+ manifest, rejected, stats)")
    print(f"  training run      {result.run}/  (metrics.jsonl, tensorboard/, checkpoints/)")
    print(f"  trained model     {result.model_dir}/  (open_clip local-dir: layout)")
    print(f"  text index        {index_dir}/  (pybioclip's txt_emb_species files)")
    seen_chance = 1 / (synth.n_species - synth.n_unseen_species)
    print(
        f"  zero-shot top-1   held-out images of seen species: {scores['seen']:.3f} "
        f"(chance {seen_chance:.3f})"
    )
    if "unseen" in scores:
        print(
            f"                    species never seen in training:  {scores['unseen']:.3f} "
            f"(among those {synth.n_unseen_species} only; chance {1 / synth.n_unseen_species:.3f}; "
            "the eval table ranks them against all species)"
        )
    print(f"  evaluation        {out / 'eval'}/results.json")
    print(f"  analysis          {out / 'analysis'}/metrics.json and plots/")
    print(f"  try               taxoclip predict {synth.out}/test/images --model {result.model_dir} "
          f"--index {index_dir} --rank genus --format table")  # fmt: skip
    print(f"report: {report}")
    return EXIT_OK


def _index_and_predict(
    trained: LoadedModel, model_dir: Path, synth: SynthResult, out: Path
) -> Path:
    from taxoclip.predict import TreeOfLifeClassifier, build_index, read_taxa
    from taxoclip.predict.output import write_rows

    index_dir = build_index(
        trained.model, trained.tokenizer, read_taxa(synth.out / "species.csv")
    ).save(out / "index")
    classifier = TreeOfLifeClassifier(model_str=str(model_dir), index=index_dir)
    test = synth.out / "test"
    examples = sorted((test / "images").rglob("*.jpg"))[:: max(1, synth.n_test // 4)][:4]
    rows = classifier.predict([str(p) for p in examples], "species", k=1)
    with (test / "metadata.csv").open(newline="", encoding="utf-8") as handle:
        truth = {row["filepath"]: row["class"] for row in csv.DictReader(handle)}
    table = io.StringIO()
    write_rows(
        [{"image": Path(r["file_name"]).relative_to(test).as_posix(),
          "true species": truth[Path(r["file_name"]).relative_to(test).as_posix()],
          "predicted": r["species"], "common name": r["common_name"],
          "score": round(r["score"], 3)} for r in rows],
        "table", table,
    )  # fmt: skip
    print(table.getvalue(), end="")
    return index_dir
