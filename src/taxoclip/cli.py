"""Command line: parses arguments and calls the library. Nothing else lives here.

Heavy imports (torch, open_clip, webdataset) happen inside the command functions so
``taxoclip --help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from taxoclip import __version__
from taxoclip.errors import EXIT_OK, EXIT_USAGE, TaxoclipError, UsageError

log = logging.getLogger("taxoclip")


class _Parser(argparse.ArgumentParser):
    """argparse that exits with the contract's usage status (2) and one clear line."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _cmd_synth(args: argparse.Namespace) -> int:
    from taxoclip.synth import SynthConfig, generate

    config = SynthConfig(
        species=args.species,
        images_per_species=args.images_per_species,
        image_size=args.image_size,
        seed=args.seed,
        shards=args.shards,
        preview=args.preview,
        raw_source=args.raw_source,
    )
    result = generate(args.out, config, progress=not args.quiet)
    print(
        f"SynthToL written to {result.out}: {result.n_species} species "
        f"({result.n_unseen_species} unseen in training), "
        f"{result.n_train} train and {result.n_test} test images"
    )
    if result.shard_pattern:
        print(f"training shards: {result.shard_pattern}")
    if result.preview:
        print(f"preview: {result.preview}")
    if result.raw_source:
        raw = result.counts["raw_source"]
        print(
            f"raw source: {result.raw_source} (Darwin Core Archive in dwca/, backbone in "
            f"backbone/, ground truth in truth.csv): {raw['media']} media records, "
            f"{raw['expected_reject']} of them faulty enough to reject"
        )
    return EXIT_OK


def _cmd_curate(args: argparse.Namespace) -> int:
    from taxoclip.curate import CurateConfig, curate

    config = CurateConfig(
        sources=args.sources,
        backbone=args.backbone,
        out=args.out,
        exclude_eval=args.exclude_eval or [],
        columns=args.columns,
        ray_address=args.ray_address,
        workers=args.workers or _cores(),
        batch_size=args.batch_size,
        min_size=args.min_size,
        image_size=args.image_size,
        radius=args.radius,
        samples_per_shard=args.samples_per_shard,
        seed=args.seed,
        keep_higher_rank=not args.species_only,
        categories=args.categories.split(",") if args.categories else None,
        model_filter=args.model_filter,
        filter_threshold=args.filter_threshold,
        per_host=args.per_host,
        retries=args.retries,
        timeout=args.timeout,
        keep_work=args.keep_work,
    )
    result = curate(config, progress=not args.quiet)
    stats = result.stats
    print(f"curated {stats['records_in']} records: {stats['kept']} kept, "
          f"{stats['rejected']} rejected ({stats['invariant']})")  # fmt: skip
    stages = ", ".join(f"{k} {v}" for k, v in stats["rejected_by_stage"].items() if v)
    if stages:
        print(f"rejected by stage: {stages}")
    print(f"shards: {result.shard_pattern}")
    print(f"ledgers: {result.out / 'manifest.parquet'}, {result.out / 'rejected.parquet'}, "
          f"{result.out / 'stats.json'}")  # fmt: skip
    return EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    from taxoclip.train import TrainConfig, train

    config = TrainConfig(
        data=args.data,
        out=args.out,
        model=args.model,
        pretrained=args.pretrained,
        replay=args.replay,
        replay_ratio=args.replay_ratio,
        replay_batch_size=args.replay_batch_size,
        text_type=args.text_type,
        epochs=args.epochs,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.wd,
        warmup=args.warmup,
        grad_clip=args.grad_clip or None,
        precision=args.precision,
        grad_checkpointing=args.grad_checkpointing,
        compile=args.compile,
        fsdp=args.fsdp,
        workers=args.workers,
        seed=args.seed,
        caption_positives=args.caption_positives,
        squash=args.squash,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        log_every=args.log_every,
        val=args.val,
        resume=args.resume,
        device=args.device,
        recipe=args.recipe,
        progress=not args.quiet,
    )
    result = train(config)
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        print(f"trained {result.steps} steps; final loss {result.final_loss:.4f}")
        if result.val_top1 is not None:
            print(f"zero-shot top-1 on {config.val}: {result.val_top1:.3f}")
        if result.n_substituted:
            print(f"{result.n_substituted} corrupt samples were skipped (see the log)")
        print(f"run: {result.run}  (metrics.jsonl, tensorboard/, checkpoints/)")
        print(f"model: {result.model_dir}  (open_clip local-dir: layout)")
    return EXIT_OK


def _offline(args: argparse.Namespace) -> None:
    import os

    if getattr(args, "offline", False):
        # Must precede the first import of huggingface_hub (it reads these at import).
        os.environ["HF_HUB_OFFLINE"] = "1"


def _cmd_index(args: argparse.Namespace) -> int:
    _offline(args)
    from taxoclip.models import load_model
    from taxoclip.predict import build_index, read_taxa

    taxa = read_taxa(args.taxa)
    loaded = load_model(args.model, pretrained=args.pretrained, device=args.device)
    index = build_index(loaded.model, loaded.tokenizer, taxa, args.device, args.batch_size,
                        progress=not args.quiet)  # fmt: skip
    out = index.save(args.out, dtype=args.dtype)
    print(f"indexed {len(index)} taxa with {args.model} (D={index.dim}, {args.dtype}) into {out}")
    return EXIT_OK


def _read_classes(value: str) -> list[str]:
    from pathlib import Path

    path = Path(value)
    if path.is_file():
        return [
            line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    return [item.strip() for item in value.split(",") if item.strip()]


def _read_bins(path: str) -> dict[str, str]:
    import pandas as pd

    from taxoclip.errors import InputError

    try:
        frame = pd.read_csv(path, index_col=0)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read --bins {path}: {exc}") from exc
    if len(frame.columns) == 0:
        raise InputError(f"--bins {path}: needs two columns (class, bin)")
    return frame[frame.columns[0]].to_dict()


def _cores() -> int:
    import os

    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _auto_workers(value: int | None) -> int:
    """Decoding processes: none on ≤ 2 cores (measured: they only compete with the model
    for the CPU there), else up to 4."""
    if value is not None:
        return value
    cores = _cores()
    return 0 if cores <= 2 else min(4, cores // 2)


def _exit_for(n_inputs: int, n_failed: int) -> int:
    from taxoclip.errors import EXIT_FAILED, EXIT_PARTIAL

    if n_failed == 0:
        return EXIT_OK
    return EXIT_FAILED if n_failed == n_inputs else EXIT_PARTIAL


def _cmd_predict(args: argparse.Namespace) -> int:
    _offline(args)
    from taxoclip.predict import (
        CustomLabelsBinningClassifier,
        CustomLabelsClassifier,
        TreeOfLifeClassifier,
        collect_images,
    )
    from taxoclip.predict.output import ProvenanceLog, emit_rows

    images = collect_images(args.images)
    common = dict(model_str=args.model, pretrained_str=args.pretrained, device=args.device,
                  workers=_auto_workers(args.workers))  # fmt: skip
    log_record = ProvenanceLog(args.log, model=args.model, pretrained=args.pretrained,
                               index=args.index, n_images=len(images))  # fmt: skip
    if args.cls:
        if args.subset or args.deepest_rank:
            raise UsageError(
                "--subset and --deepest-rank apply to tree-of-life predictions, not --cls"
            )
        classifier = CustomLabelsClassifier(_read_classes(args.cls), **common)
        rows = classifier.predict(images, k=args.k, batch_size=args.batch_size)
        log_record.record.update(mode="custom labels", classes=classifier.classes)
    elif args.bins:
        if args.subset or args.deepest_rank:
            raise UsageError(
                "--subset and --deepest-rank apply to tree-of-life predictions, not --bins"
            )
        classifier = CustomLabelsBinningClassifier(_read_bins(args.bins), **common)
        rows = classifier.predict(images, k=args.k, batch_size=args.batch_size)
        log_record.record.update(mode="bins", bins=args.bins)
    else:
        classifier = TreeOfLifeClassifier(index=args.index, **common)
        if args.subset:
            classifier.apply_filter(classifier.create_taxa_filter_from_csv(args.subset))
        if args.deepest_rank is not None:
            rows = classifier.predict_deepest(images, args.deepest_rank, args.batch_size,
                                              args.min_prob, progress=not args.quiet)  # fmt: skip
        else:
            rows = classifier.predict(images, args.rank or "species", args.min_prob, args.k or 5,
                                      args.batch_size, progress=not args.quiet)  # fmt: skip
        log_record.record.update(mode="tree of life", rank=args.rank or "species", subset=args.subset,
                                 n_taxa=len(classifier.index))  # fmt: skip
    emit_rows(rows, args.format, args.output)
    failed = classifier.last_errors  # each was logged as it happened
    log_record.finish(n_failed=len(failed), failed=failed, output=args.output or "stdout")
    if failed:
        print(f"taxoclip predict: {len(failed)} of {len(images)} images failed (see the error column)",
              file=sys.stderr)  # fmt: skip
    return _exit_for(len(images), len(failed))


def _cmd_embed(args: argparse.Namespace) -> int:
    _offline(args)
    from taxoclip.predict import collect_images, encode_images
    from taxoclip.predict.classifiers import BaseClassifier
    from taxoclip.predict.images import as_numpy
    from taxoclip.predict.output import write_embeddings

    images = collect_images(args.images)
    workers = _auto_workers(args.workers)
    classifier = BaseClassifier(model_str=args.model, pretrained_str=args.pretrained,
                                device=args.device, workers=workers)  # fmt: skip
    encoded = encode_images(classifier.model, classifier.preprocess, images, args.batch_size,
                            workers, args.device, normalize=args.normalize,
                            progress=not args.quiet)  # fmt: skip
    keys = [encoded.keys[i] for i in encoded.ok_indices]
    written = write_embeddings(args.output, args.model, keys, as_numpy(encoded.features))
    print(f"embedded {len(keys)} of {len(images)} images (D={encoded.features.shape[-1] if keys else 0}) "
          f"into {', '.join(map(str, written))}")  # fmt: skip
    return _exit_for(len(images), encoded.n_failed)


def _cmd_eval(args: argparse.Namespace) -> int:
    _offline(args)
    from taxoclip.evaluate.runner import format_table, run_eval

    rows, notes = run_eval(
        args.model, data=args.data, suite=args.suite, root=args.root, out=args.out,
        pretrained=args.pretrained, baseline=not args.no_baseline, label_text=args.label_text,
        batch_size=args.batch_size, cache_dir=args.cache_dir, device=args.device,
        progress=not args.quiet,
    )  # fmt: skip
    for note in notes:
        print(note)
    print(format_table(rows), end="")
    if args.out:
        print(f"results: {args.out}/results.json, {args.out}/results.csv")
    return EXIT_OK


def _cmd_analyze(args: argparse.Namespace) -> int:
    _offline(args)
    from taxoclip.analyze.run import format_summary, run_analysis

    result = run_analysis(
        args.model, args.data, args.out, split=args.split, baseline=args.baseline,
        pretrained=args.pretrained, seed=args.seed, device=args.device,
        batch_size=args.batch_size, progress=not args.quiet,
    )  # fmt: skip
    print(format_summary(result), end="")
    summary = result.summary
    print(f"analysed {summary['n_images']} images of {summary['n_species']} species in "
          f"{summary['seconds']['total']:.1f} s")  # fmt: skip
    print(f"results: {result.out}/metrics.json, {result.out}/embeddings.npz, "
          f"{result.out}/analysis.json")  # fmt: skip
    if result.plots:
        print(f"plots: {', '.join(str(p) for p in result.plots)}")
    for name, reason in summary["plots_skipped"].items():
        print(f"plot {name} skipped: {reason}")
    return EXIT_OK


def _cmd_study_scaling(args: argparse.Namespace) -> int:
    from taxoclip.study.scaling import ScalingConfig, parse_sizes, run_scaling

    config = ScalingConfig(
        out=args.out, data=args.data, species=args.species,
        images_per_species=args.images_per_species, image_size=args.image_size,
        sizes=parse_sizes(args.sizes), epochs=args.epochs, batch_size=args.batch_size,
        budget=args.budget, warmup=args.warmup, ablation=args.ablation, seed=args.seed,
        model=args.model, device=args.device, progress=not args.quiet,
    )  # fmt: skip
    result = run_scaling(config)
    print(result.table, end="")
    study = result.study
    print(f"study of {len(study['runs'])} runs ({', '.join(study['runs'])}) in "
          f"{study['seconds']['total']:.1f} s; same {study['budget']} per run")  # fmt: skip
    print(f"results: {result.out}/study.json, runs/, analysis/")
    if result.plot:
        print(f"plot: {result.plot}")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from taxoclip.report import write_report

    out = write_report(args.dirs, args.out)
    print(f"report: {out}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from taxoclip.demo import run_demo

    return run_demo(args.out, quick=args.quick, progress=not args.quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="taxoclip",
        description=(
            "BioCLIP 2 end to end: build a tree-of-life image-text dataset, train "
            "hierarchical contrastive models, predict, evaluate and analyse them."
        ),
        epilog="Exit status: 0 ok, 3 partial (some inputs failed), 1 failed, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"taxoclip {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    synth = commands.add_parser(
        "synth",
        help="generate SynthToL, the embedded synthetic tree of life",
        description=(
            "Generate SynthToL: a procedural tree of life (7 ranks, pseudo-Latin names, "
            "traits evolving down the tree, habitats, sexes and life stages) as JPEG "
            "images, ground-truth CSVs, train/test splits and optional WebDataset shards. "
            "The same seed gives byte-identical output."
        ),
    )
    synth.add_argument("out", metavar="OUT", help="output directory (new or empty)")
    synth.add_argument(
        "--species", type=int, default=300, metavar="N", help="number of species (default 300)"
    )
    synth.add_argument(
        "--images-per-species",
        type=int,
        default=40,
        metavar="M",
        help="images per species (default 40)",
    )
    synth.add_argument(
        "--image-size", type=int, default=32, metavar="S", help="image side in pixels (default 32)"
    )
    synth.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (default 0)")
    synth.add_argument(
        "--shards",
        type=int,
        default=0,
        metavar="N",
        help="also write the training split as N WebDataset shards",
    )
    synth.add_argument(
        "--preview", action="store_true", help="write preview.png, a contact sheet to look at"
    )
    synth.add_argument(
        "--raw-source",
        action="store_true",
        help=(
            "also write OUT/raw/: the training images as a GBIF-like Darwin Core Archive plus "
            "a GBIF-format backbone, seeded with real data's faults (synonyms, misspellings, "
            "homonyms, duplicates, corrupt files, labels, test-split leaks …) and a "
            "truth.csv of each fault, to test curation against"
        ),
    )
    synth.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_cmd_synth)

    curate = commands.add_parser(
        "curate",
        help="raw biodiversity records -> resolved, filtered, deduplicated shards (Ray Data)",
        description=(
            "Curate raw records into a TreeOfLife-style dataset: ingest (Darwin Core "
            "Archive, CSV/Parquet manifest, image folder with taxa.csv, SynthToL raw "
            "source), resolve names offline against a GBIF-format backbone, fetch, check "
            "and convert images, drop exact/near duplicates and evaluation leaks, and write "
            "WebDataset shards with manifest.parquet, rejected.parquet and stats.json. "
            "Every record leaves as kept or rejected with a reason. A run cut short resumes "
            "from OUT/.work. Runs on a local Ray by default, on a cluster with --ray-address."
        ),
    )
    curate.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="DwC-A folder or .zip, manifest .csv/.tsv/.parquet, image folder "
                             "with taxa.csv, or a SynthToL folder made with --raw-source")  # fmt: skip
    curate.add_argument("--backbone", required=True, metavar="DIR",
                        help="GBIF-format backbone folder (Taxon.tsv, VernacularName.tsv)")  # fmt: skip
    curate.add_argument("--out", required=True, metavar="DIR", help="output folder")
    curate.add_argument("--exclude-eval", action="append", metavar="DIR",
                        help="drop near-duplicates of every image under DIR (repeatable)")  # fmt: skip
    curate.add_argument("--columns", metavar="MAP",
                        help="manifest column map: a preset (eol, bioscan, fathomnet, taxoclip) "
                             "and/or field=column pairs, comma-separated")  # fmt: skip
    curate.add_argument("--ray-address", metavar="ADDR",
                        help="Ray cluster to run on (e.g. ray://head:10001 or auto)")  # fmt: skip
    curate.add_argument("--workers", type=int, metavar="N",
                        help="local Ray CPUs (default: all cores)")  # fmt: skip
    curate.add_argument("--batch-size", type=int, default=64, metavar="B",
                        help="records per Ray Data batch (default 64)")  # fmt: skip
    curate.add_argument("--min-size", type=int, default=224, metavar="PX",
                        help="reject images whose shorter side is below PX (default 224)")  # fmt: skip
    curate.add_argument("--image-size", type=int, default=224, metavar="PX",
                        help="side of the squash-resized shard images (default 224)")  # fmt: skip
    curate.add_argument("--radius", type=int, default=10, metavar="BITS",
                        help="PDQ Hamming radius for near-duplicates and leaks (default 10)")  # fmt: skip
    curate.add_argument("--samples-per-shard", type=int, default=1000, metavar="N")
    curate.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    curate.add_argument("--species-only", action="store_true",
                        help="reject records resolved only above species (kept by default)")  # fmt: skip
    curate.add_argument("--categories", metavar="LIST",
                        help="keep only these categories: museum_specimen, camera_trap, "
                             "citizen_science, other (comma-separated)")  # fmt: skip
    curate.add_argument("--model-filter", metavar="MODEL",
                        help="drop non-organism images (labels, documents, slides) by zero-shot "
                             "CLIP with this model (run dir, model folder, hf-hub: string)")  # fmt: skip
    curate.add_argument("--filter-threshold", type=float, default=0.5, metavar="P",
                        help="drop when p(non-organism) > P (default 0.5)")  # fmt: skip
    curate.add_argument("--per-host", type=int, default=8, metavar="N",
                        help="concurrent downloads per host (default 8)")  # fmt: skip
    curate.add_argument("--retries", type=int, default=3, metavar="N")
    curate.add_argument("--timeout", type=float, default=30.0, metavar="S",
                        help="seconds per HTTP request (default 30)")  # fmt: skip
    curate.add_argument("--keep-work", action="store_true",
                        help="keep OUT/.work (fetch cache, per-batch results) after success")  # fmt: skip
    curate.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    curate.set_defaults(func=_cmd_curate)

    train = commands.add_parser(
        "train",
        help="train or fine-tune a hierarchical contrastive model on shards",
        description=(
            "Train an open_clip model with BioCLIP 2's recipe: CLIP loss over tree-of-life "
            "captions, one caption type per step drawn from sci/com/taxon/sci_com/taxon_com, "
            "optional experience replay through a second visual projection. One process, "
            "or `torchrun --nproc_per_node N -m taxoclip train ...` for DDP. Exact resume "
            "from checkpoints with --resume latest."
        ),
    )
    train.add_argument(
        "--data",
        required=True,
        metavar="SHARDS",
        help="training shards: 'DIR/shard-{000000..000009}.tar' (brace patterns, :: lists)",
    )
    train.add_argument(
        "--out", required=True, metavar="RUN", help="run directory (checkpoints, metrics, model/)"
    )
    train.add_argument(
        "--model",
        default="taxoclip-vit-t32",
        metavar="NAME|CONFIG.json|DIR|hf-hub:…",
        help="architecture or model to start from (default taxoclip-vit-t32, the CPU preset)",
    )
    train.add_argument(
        "--pretrained", metavar="TAG|PATH", help="open_clip pretrained tag or weights file"
    )
    train.add_argument(
        "--recipe",
        choices=["bioclip2"],
        help="preset the paper's hyper-parameters (ViT-L/14, bf16, 30 epochs, …)",
    )
    train.add_argument(
        "--replay", metavar="SHARDS", help="general image-caption shards for experience replay"
    )
    train.add_argument(
        "--replay-ratio",
        type=float,
        default=0.1,
        metavar="R",
        help="fraction of images per step from replay (default 0.1)",
    )
    train.add_argument(
        "--replay-batch-size",
        type=int,
        metavar="B",
        help="replay images per process (overrides --replay-ratio)",
    )
    train.add_argument(
        "--text-type",
        default="random",
        choices=["random", "sci", "com", "taxon", "sci_com", "taxon_com"],
        help="caption type (default: drawn per step)",
    )
    train.add_argument("--epochs", type=int, default=10, help="epochs (default 10)")
    train.add_argument("--steps", type=int, help="total steps (overrides --epochs)")
    train.add_argument(
        "--batch-size",
        type=int,
        default=128,
        metavar="B",
        help="images per process per step (default 128)",
    )
    train.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default 5e-4)")
    train.add_argument(
        "--wd",
        type=float,
        default=0.2,
        help="weight decay (default 0.2; none on gains, biases, logit scale)",
    )
    train.add_argument(
        "--warmup",
        type=int,
        default=100,
        metavar="STEPS",
        help="linear warm-up steps before the cosine decay (default 100)",
    )
    train.add_argument(
        "--grad-clip",
        type=float,
        default=1.0,
        metavar="NORM",
        help="clip gradient norm (0 = off; default 1.0)",
    )
    train.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32", help="fp32 or bf16 autocast"
    )
    train.add_argument("--grad-checkpointing", action="store_true", help="trade compute for memory")
    train.add_argument("--compile", action="store_true", help="torch.compile the model")
    train.add_argument(
        "--fsdp", action="store_true", help="shard the model with FSDP (CUDA) instead of DDP"
    )
    train.add_argument(
        "--workers", type=int, default=2, help="DataLoader workers per process (default 2)"
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--caption-positives",
        action="store_true",
        help="count identical captions in a batch as positives (not in the paper)",
    )
    train.add_argument(
        "--squash", action="store_true", help="squash images to square before cropping"
    )
    train.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="STEPS",
        help="also checkpoint every N steps (default: epoch ends only)",
    )
    train.add_argument(
        "--keep-checkpoints",
        type=int,
        default=3,
        metavar="K",
        help="step checkpoints kept (default 3; epoch ones all kept)",
    )
    train.add_argument("--log-every", type=int, default=10, metavar="STEPS")
    train.add_argument(
        "--val",
        metavar="DIR",
        help="evaluation folder (metadata.csv) for zero-shot top-1 at each epoch end",
    )
    train.add_argument(
        "--resume",
        metavar="latest|CKPT",
        help="continue the run in --out from its latest (or this) checkpoint",
    )
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_cmd_train)

    model_help = "run dir, model folder, open_clip name or hf-hub: string (default hf-hub:imageomics/bioclip-2)"

    index = commands.add_parser(
        "index",
        help="build a tree-of-life text index (pybioclip's txt_emb_species files) for a model",
        description=(
            "Embed every taxon (7 ranks + common name through the 80 OpenAI templates, "
            "normalised, averaged, renormalised) and write txt_emb_species.npy (D×N) and "
            "txt_emb_species.json, the files pybioclip reads."
        ),
    )
    index.add_argument("--model", default="hf-hub:imageomics/bioclip-2", help=model_help)
    index.add_argument("--pretrained", metavar="TAG|PATH")
    index.add_argument(
        "--taxa",
        required=True,
        metavar="CSV|BACKBONE_DIR",
        help="taxa CSV (rank columns + common_name; SynthToL species.csv works) or a GBIF backbone folder",
    )
    index.add_argument("--out", required=True, metavar="DIR")
    index.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    index.add_argument(
        "--batch-size",
        type=int,
        default=32,
        metavar="TAXA",
        help="taxa per forward pass (×80 templates)",
    )
    index.add_argument("--device", default="cpu")
    index.add_argument(
        "--offline", action="store_true", help="never touch the network (HF_HUB_OFFLINE=1)"
    )
    index.add_argument("-q", "--quiet", action="store_true")
    index.set_defaults(func=_cmd_index)

    predict = commands.add_parser(
        "predict",
        help="name organisms in images (pybioclip-compatible flags and output)",
        description=(
            "Predict taxa for images: tree-of-life mode (--rank, default species) against a "
            "text index, or zero-shot among custom labels (--cls) or binned labels (--bins). "
            "Inputs may be files, directories (recursive) or globs. Unreadable images get a "
            "row with an error and exit status 3; the others are predicted."
        ),
    )
    predict.add_argument("images", nargs="+", metavar="IMAGES_OR_DIRS")
    mode = predict.add_mutually_exclusive_group()
    mode.add_argument(
        "--rank",
        choices=["kingdom", "phylum", "class", "order", "family", "genus", "species"],
        help="rank of the tree-of-life prediction (default species)",
    )
    mode.add_argument(
        "--cls",
        metavar="LIST|FILE",
        help="custom labels: comma-separated, or a file with one per line",
    )
    mode.add_argument(
        "--bins", metavar="CSV", help="CSV of class,bin: probabilities summed per bin"
    )
    predict.add_argument(
        "--subset",
        metavar="CSV",
        help="restrict the tree of life to taxa in this CSV (first column: a rank name)",
    )
    predict.add_argument(
        "--deepest-rank",
        type=float,
        metavar="THRESHOLD",
        help="per image, the deepest rank whose summed probability reaches THRESHOLD",
    )
    predict.add_argument(
        "--k", type=int, help="top-k predictions (default 5; all labels with --cls)"
    )
    predict.add_argument(
        "--min-prob",
        type=float,
        default=1e-9,
        help="species below this are left out of higher-rank sums (default 1e-9)",
    )
    predict.add_argument("--format", choices=["csv", "table", "json"], default="csv")
    predict.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    predict.add_argument("--model", default="hf-hub:imageomics/bioclip-2", help=model_help)
    predict.add_argument("--pretrained", metavar="TAG|PATH")
    predict.add_argument(
        "--index",
        metavar="DIR",
        help="tree-of-life text index (default: the model's published one)",
    )
    predict.add_argument(
        "--batch-size", type=int, default=32, help="images per forward pass (default 32)"
    )
    predict.add_argument(
        "--workers",
        type=int,
        help="image-decoding processes (default: 0 on ≤ 2 cores, else up to 4)",
    )
    predict.add_argument("--device", default="cpu")
    predict.add_argument(
        "--log", metavar="FILE", help="provenance record (.json) or appended text log"
    )
    predict.add_argument(
        "--offline", action="store_true", help="never touch the network (HF_HUB_OFFLINE=1)"
    )
    predict.add_argument("-q", "--quiet", action="store_true")
    predict.set_defaults(func=_cmd_predict)

    embed = commands.add_parser(
        "embed",
        help="image embeddings to .npy, .parquet or pybioclip's JSON",
        description="Encode images with a model. Unreadable images are reported (exit status 3).",
    )
    embed.add_argument("images", nargs="+", metavar="IMAGES_OR_DIRS")
    embed.add_argument("--output", required=True, metavar="F.npy|F.parquet|F.json")
    embed.add_argument(
        "--normalize", action="store_true", help="L2-normalise (pybioclip writes raw features)"
    )
    embed.add_argument("--model", default="hf-hub:imageomics/bioclip-2", help=model_help)
    embed.add_argument("--pretrained", metavar="TAG|PATH")
    embed.add_argument("--batch-size", type=int, default=32)
    embed.add_argument(
        "--workers",
        type=int,
        help="image-decoding processes (default: 0 on ≤ 2 cores, else up to 4)",
    )
    embed.add_argument("--device", default="cpu")
    embed.add_argument("--offline", action="store_true")
    embed.add_argument("-q", "--quiet", action="store_true")
    embed.set_defaults(func=_cmd_embed)

    evaluate = commands.add_parser(
        "eval",
        help="evaluate a model: zero-/few-shot, probes, hierarchical metrics, beside an untrained baseline",
        description=(
            "Evaluate with BioCLIP 2's protocols: an evaluation folder (metadata.csv with "
            "filepath,class and optional rank columns), the SynthToL suite (--suite synth), or "
            "the published benchmarks found under --root (--suite bioclip2). Every number is "
            "printed beside the same model architecture untrained."
        ),
    )
    evaluate.add_argument("--model", required=True, help=model_help)
    evaluate.add_argument("--pretrained", metavar="TAG|PATH")
    evaluate.add_argument(
        "--data", metavar="DIR", help="evaluation folder, or a SynthToL folder with --suite synth"
    )
    evaluate.add_argument("--suite", choices=["synth", "bioclip2"])
    evaluate.add_argument(
        "--root", metavar="DIR", help="folder holding the published benchmarks (--suite bioclip2)"
    )
    evaluate.add_argument("--out", metavar="DIR", help="write results.json and results.csv here")
    evaluate.add_argument(
        "--label-text",
        default="index",
        choices=["index", "as-given", "sci", "com", "taxon", "sci_com", "taxon_com"],
        help="how classes are described to the text tower (default: pybioclip's index text)",
    )
    evaluate.add_argument("--no-baseline", action="store_true", help="skip the untrained baseline")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument(
        "--cache-dir", metavar="DIR", help="feature cache (default ~/.cache/taxoclip/features)"
    )
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--offline", action="store_true")
    evaluate.add_argument("-q", "--quiet", action="store_true")
    evaluate.set_defaults(func=_cmd_eval)

    analyze = commands.add_parser(
        "analyze",
        help="emergent properties (traits, habitat, taxonomy, variants) beside a baseline",
        description=(
            "Measure the emergent properties of a model's image embeddings (BioCLIP 2's "
            "analyses): "
            "trait alignment (finch beak length, hue, elongation), ecological alignment "
            "(habitat, split by order), taxonomic alignment, within-species separation of "
            "sex and life stage, their orthogonality to species differences and the "
            "effective dimension, each beside its null and the untrained twin of the model. "
            "--data is a SynthToL root (every metric) or an evaluation folder (whatever its "
            "columns allow; the rest is listed as skipped). Writes metrics.json, "
            "embeddings.npz, analysis.json and plots/*.png into --out."
        ),
    )
    analyze.add_argument(
        "--model", required=True, help="run dir, model folder, open_clip name or hf-hub: string"
    )
    analyze.add_argument("--pretrained", metavar="TAG|PATH")
    analyze.add_argument(
        "--data", required=True, metavar="DIR", help="SynthToL root or evaluation folder"
    )
    analyze.add_argument("--out", required=True, metavar="DIR", help="output directory")
    analyze.add_argument(
        "--split",
        choices=["all", "train", "test"],
        default="all",
        help="SynthToL split(s) to analyse (default all: the within-species metrics want "
        "many images per species and variant)",
    )
    analyze.add_argument(
        "--baseline",
        choices=["untrained", "none"],
        default="untrained",
        help="measure the same architecture with random weights beside it (default untrained)",
    )
    analyze.add_argument(
        "--seed", type=int, default=0, help="seed of nulls, folds, t-SNE and the baseline weights"
    )
    analyze.add_argument("--batch-size", type=int, default=64, metavar="B")
    analyze.add_argument("--device", default="cpu")
    analyze.add_argument("--offline", action="store_true")
    analyze.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    analyze.set_defaults(func=_cmd_analyze)

    study = commands.add_parser(
        "study",
        help="studies across runs: scaling (metrics against training data size)",
        description="Studies that train and analyse several models: scaling.",
    )
    studies = study.add_subparsers(dest="study", metavar="STUDY", parser_class=_Parser)
    study.set_defaults(func=lambda _args: study.print_help() or EXIT_USAGE)
    scaling = studies.add_parser(
        "scaling",
        help="train on >= 3 data sizes of SynthToL; every metric and zero-shot against size",
        description=(
            "Train the same model on at least three data sizes of one SynthToL (nested "
            "subsets of its training images, same species and test split), measure "
            "zero-shot top-1 and every analysis metric for each beside the untrained "
            "baseline (analysed once) and the nulls, and plot them against size. "
            "--ablation adds a flat-label run (scientific name only) on the largest size. "
            "Writes study.json, scaling.png, runs/ and analysis/ into --out."
        ),
    )
    scaling.add_argument("--out", required=True, metavar="DIR", help="output directory")
    scaling.add_argument(
        "--data", metavar="SYNTH_ROOT", help="an existing SynthToL root (default: generate one)"
    )
    scaling.add_argument("--species", type=int, default=300, metavar="N",
                         help="species of the generated SynthToL (default 300)")  # fmt: skip
    scaling.add_argument("--images-per-species", type=int, default=40, metavar="M",
                         help="images per species of the generated SynthToL (default 40)")  # fmt: skip
    scaling.add_argument("--image-size", type=int, default=32, metavar="S",
                         help="image side of the generated SynthToL (default 32)")  # fmt: skip
    scaling.add_argument(
        "--sizes", default="0.25,0.5,1", metavar="F,F,F",
        help="fractions of the training images per species, at least 3 (default 0.25,0.5,1)",
    )  # fmt: skip
    scaling.add_argument("--epochs", type=int, default=15, metavar="E",
                         help="epochs over the largest size (default 15)")  # fmt: skip
    scaling.add_argument("--batch-size", type=int, default=128, metavar="B")
    scaling.add_argument(
        "--budget", choices=["steps", "epochs"], default="steps",
        help="steps: every run takes the steps of --epochs over the largest size (default; "
        "data at fixed compute); epochs: --epochs over each run's own data",
    )  # fmt: skip
    scaling.add_argument("--warmup", type=int, metavar="STEPS",
                         help="warm-up steps (default a tenth of the steps, at most 100)")  # fmt: skip
    scaling.add_argument("--ablation", action="store_true",
                         help="add a flat-label run (scientific name only) on the largest size")  # fmt: skip
    scaling.add_argument("--model", default="taxoclip-vit-t32", help="architecture to train")
    scaling.add_argument("--seed", type=int, default=0, help="seed of data, subsets, runs, nulls")
    scaling.add_argument("--device", default="auto")
    scaling.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    scaling.set_defaults(func=_cmd_study_scaling)

    report = commands.add_parser(
        "report",
        help="one self-contained HTML report from run, eval, curation and analysis dirs",
        description=(
            "Write one HTML file (inline CSS, images as data URIs, no scripts or links) from "
            "any of: a training run (params.json, metrics.jsonl), eval results (results.json), "
            "curation stats (stats.json) and an analysis dir (metrics.json, plots/). Each DIR "
            "is recognised by the files it holds; missing parts are listed as not available."
        ),
    )
    report.add_argument(
        "dirs", nargs="+", metavar="DIR", help="run, eval, curation or analysis dir"
    )
    report.add_argument(
        "--out", default="report.html", metavar="FILE", help="output file (default report.html)"
    )
    report.set_defaults(func=_cmd_report)

    demo = commands.add_parser(
        "demo",
        help="run every stage on SynthToL and say where the results are",
        description="Run the whole system on the embedded SynthToL default.",
    )
    demo.add_argument(
        "--out", default="demo_out", metavar="DIR", help="output directory (default demo_out)"
    )
    demo.add_argument("--quick", action="store_true", help="a small, fast run (used by the tests)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Our own messages at INFO; libraries (open_clip logs to the root logger) at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("taxoclip").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except TaxoclipError as exc:
        print(f"taxoclip {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("taxoclip: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
