"""``taxoclip demo``: every stage that exists so far, on the embedded SynthToL default.

Today: SynthToL (images, ground truth, splits, contact sheet, shards), then a tiny CLIP
trained on its shards with BioCLIP 2's recipe, checked by zero-shot top-1 on held-out
images of seen species and on species never seen in training, then a tree-of-life index
built with the trained model and a few test images named with it; it points to
``taxoclip eval`` for the full evaluation. Analyze and the report join as they land.
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

from taxoclip.errors import EXIT_OK, UsageError
from taxoclip.synth import SynthConfig, generate


@dataclass(frozen=True)
class DemoPlan:
    synth: SynthConfig
    epochs: int
    batch_size: int
    warmup: int


FULL = DemoPlan(
    SynthConfig(species=300, images_per_species=40, image_size=32, seed=0, shards=8, preview=True),
    epochs=15,
    batch_size=128,
    warmup=100,
)
QUICK = DemoPlan(
    SynthConfig(species=60, images_per_species=12, image_size=32, seed=0, shards=2, preview=True),
    epochs=3,
    batch_size=64,
    warmup=5,
)


def run_demo(out: str | os.PathLike, quick: bool = False, progress: bool = True) -> int:
    """Run the demo into ``out`` (a new or empty directory) and print where results are."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"demo output {out} is not empty; remove it or pass --out NEW_DIR")
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    config = plan.synth
    print(
        f"[1/3] synth: {config.species} species × {config.images_per_species} images at "
        f"{config.image_size} px, seed {config.seed}"
    )
    synth = generate(out / "synth", config, progress=progress)

    print(f"[2/3] train: taxoclip-vit-t32, {plan.epochs} epochs, batch {plan.batch_size}")
    from taxoclip.models import load_model
    from taxoclip.train import TrainConfig, train
    from taxoclip.train.validate import zero_shot_top1

    result = train(
        TrainConfig(
            data=synth.shard_pattern,
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
    print("[3/3] index the tree of life with the trained model; predict a few test images")
    from taxoclip.predict import TreeOfLifeClassifier, build_index, read_taxa
    from taxoclip.predict.output import write_rows

    index_dir = build_index(
        trained.model, trained.tokenizer, read_taxa(synth.out / "species.csv")
    ).save(out / "index")
    classifier = TreeOfLifeClassifier(model_str=str(result.model_dir), index=index_dir)
    examples = sorted((synth.out / "test" / "images").rglob("*.jpg"))[:: max(1, synth.n_test // 4)][
        :4
    ]
    rows = classifier.predict([str(p) for p in examples], "species", k=1)
    table = io.StringIO()
    with (synth.out / "test" / "metadata.csv").open(newline="", encoding="utf-8") as handle:
        truth = {row["filepath"]: row["class"] for row in csv.DictReader(handle)}
    write_rows(
        [{"image": Path(r["file_name"]).relative_to(synth.out / "test").as_posix(),
          "true species": truth[Path(r["file_name"]).relative_to(synth.out / "test").as_posix()],
          "predicted": r["species"], "common name": r["common_name"],
          "score": round(r["score"], 3)} for r in rows],
        "table", table,
    )  # fmt: skip
    print(table.getvalue(), end="")
    elapsed = time.perf_counter() - started
    print()
    print(f"demo finished in {elapsed:.0f} s; results in {out}/")
    print(
        f"  SynthToL          {synth.out}/  ({synth.n_species} species, "
        f"{synth.n_unseen_species} unseen; {synth.n_train} train / {synth.n_test} test images)"
    )
    print(f"  ground truth      {synth.out}/species.csv, {synth.out}/images.csv")
    print(f"  contact sheet     {synth.preview}")
    print(f"  training shards   {synth.shard_pattern}")
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
            f"(chance {1 / synth.n_unseen_species:.3f})"
        )
    print(f"  try               taxoclip predict {synth.out}/test/images --model {result.model_dir} "
          f"--index {index_dir} --rank genus --format table")  # fmt: skip
    print(
        f"  evaluate          taxoclip eval --model {result.model_dir} --suite synth --data {synth.out}"
    )
    print("  next stages (analyze, report) are planned; see README")
    return EXIT_OK
