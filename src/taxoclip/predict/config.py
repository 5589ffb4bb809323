"""Configs and results of ``taxoclip index``, ``predict`` and ``embed`` (light: no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taxoclip.config import CommandConfig, CommandResult, command, option, shared
from taxoclip.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
#: ``--rank`` of a tree-of-life prediction when none is given (as pybioclip).
DEFAULT_RANK = "species"
#: ``--k`` of a tree-of-life prediction when none is given (as pybioclip); with ``--cls`` or
#: ``--bins`` every label is listed unless ``--k`` is given.
TOP_K = 5


#: ``--runtime``: auto = ONNX Runtime fp32, on an exported folder or on any model exported
#: once into the cache (``taxoclip.runtime.cache``; eval and analyze: exported folders only),
#: torch where that cannot be (docs/reference.md#onnx-runtime); ``taxoclip.runtime.encode.
#: RUNTIMES``, kept here as text: this module is read for ``--help`` and imports no numpy.
RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")


def runtime_option():
    return option(
        "auto",
        choices=RUNTIMES,
        help="auto (ONNX Runtime fp32: the first run "
        "exports the model into the cache, $TAXOCLIP_CACHE or ~/.cache/taxoclip, and "
        "later runs load no torch; torch, with one line why, where it cannot be "
        "exported; eval/analyze: ONNX only for a folder made by `taxoclip export "
        "onnx`), torch, onnx (fp32) or onnx-int8",
    )


#: ``--workers`` of predict and embed: the engine decodes in threads (PIL and numpy let go
#: of the GIL while they work), the next batch while the model runs this one.
DECODING_THREADS = "image-decoding threads (default: 0 on ≤ 2 cores, else up to 4)"


class long_run:  # noqa: N801 - a namespace of option definitions, as ``shared``
    """Options of long runs (``predict``, ``embed``): checkpoints, resume, a Ray cluster."""

    @staticmethod
    def checkpoint_every():
        return option(
            None,
            metavar="N",
            help="write a checkpoint every N images (in OUTPUT.partial/ beside --output) so "
            "that --resume can continue after a crash",
        )

    @staticmethod
    def resume():
        return option(
            False,
            help="continue the run checkpointed beside --output (refused, naming the "
            "difference, when the inputs, the model or an output flag differ)",
        )

    @staticmethod
    def ray_address():
        return option(
            None,
            metavar="ADDR",
            help="run on a Ray cluster (auto, HOST:PORT, or local: a Ray of this machine's "
            "own): a pool of actors, each loading the model once; rows written here, in "
            "input order",
        )

    @staticmethod
    def ray_actors():
        return option(
            None, metavar="N", help="with --ray-address: actors in the pool (default: one per node)"
        )


def long_run_problems(config) -> list[str]:
    """The checks of :class:`long_run`'s options."""
    problems = []
    if config.checkpoint_every is not None and config.checkpoint_every < 1:
        problems.append(f"--checkpoint-every must be at least 1 (got {config.checkpoint_every})")
    to_stdout = config.output in (None, "", "-", "stdout")
    if (config.checkpoint_every is not None or config.resume) and to_stdout:
        problems.append("--checkpoint-every and --resume need --output FILE")
    if config.ray_actors is not None and (config.ray_actors < 1 or not config.ray_address):
        problems.append("--ray-actors needs --ray-address and is at least 1")
    return problems


def names_list(text: str) -> list[str]:
    """``"animal, Cat"`` → ``["animal", "Cat"]`` (blanks dropped; matched without case later)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def exit_for(n_inputs: int, n_failed: int) -> int:
    """0 when every input worked, 3 when some failed (the rest written), 1 when all failed."""
    if n_failed == 0:
        return EXIT_OK
    return EXIT_FAILED if n_failed == n_inputs else EXIT_PARTIAL


@command(
    "index",
    help="build a tree-of-life text index (pybioclip's txt_emb_species files) for a model",
    description=(
        "Embed every taxon (7 ranks + common name through the 80 OpenAI templates, "
        "normalised, averaged, renormalised) and write txt_emb_species.npy (D×N) and "
        "txt_emb_species.json, the files pybioclip reads."
    ),
    run="taxoclip.predict.run:run_index",
)
@dataclass(kw_only=True)
class IndexConfig(CommandConfig):
    model: str = shared.model()
    pretrained: str | None = shared.pretrained()
    taxa: str = option(
        metavar="CSV|BACKBONE_DIR",
        help="taxa CSV (rank columns + common_name; SynthToL species.csv works) or a GBIF "
        "backbone folder",
    )
    out: str = option(metavar="DIR", help="output folder")
    dtype: str = option("float32", choices=("float32", "float16"), help="stored precision")
    batch_size: int = shared.batch_size(32, "taxa per forward pass (×80 templates)", "TAXA")
    device: str = shared.device()
    offline: bool = shared.offline()
    progress: bool = shared.progress()
    runtime: str = runtime_option()

    def check(self) -> list[str]:
        return [] if self.batch_size >= 1 else ["--batch-size must be at least 1"]


@dataclass
class IndexResult(CommandResult):
    out: Path
    model: str
    n_taxa: int
    dim: int
    dtype: str

    def lines(self) -> list[str]:
        return [
            f"indexed {self.n_taxa} taxa with {self.model} (D={self.dim}, {self.dtype}) "
            f"into {self.out}"
        ]


@command(
    "predict",
    help="name organisms in images (pybioclip-compatible flags and output)",
    description=(
        "Predict taxa for images: tree-of-life mode (--rank, default species) against a "
        "text index, or zero-shot among custom labels (--cls) or binned labels (--bins). "
        "Inputs may be files, directories (recursive) or globs. Unreadable images get a "
        "row with an error and exit status 3; the others are predicted."
    ),
    run="taxoclip.predict.run:run_predict",
)
@dataclass(kw_only=True)
class PredictConfig(CommandConfig):
    images: list[str] = option(
        positional=True,
        nargs="*",
        metavar="IMAGES_OR_DIRS",
        help="images, directories (recursive) or globs",
    )
    rank: str = option(
        DEFAULT_RANK, choices=RANKS, exclusive="mode", help="rank of the tree-of-life prediction"
    )
    cls: str | None = option(
        None,
        metavar="LIST|FILE",
        exclusive="mode",
        help="custom labels: comma-separated, or a file with one per line",
    )
    bins: str | None = option(
        None, metavar="CSV", exclusive="mode", help="CSV of class,bin: probabilities summed per bin"
    )
    subset: str | None = option(
        None,
        metavar="CSV",
        help="restrict the tree of life to taxa in this CSV (first column: a rank name)",
    )
    deepest_rank: float | None = option(
        None,
        metavar="THRESHOLD",
        help="per image, the deepest rank whose summed probability reaches THRESHOLD",
    )
    k: int | None = option(
        None, help=f"top-k predictions (default {TOP_K}; all labels with --cls or --bins)"
    )
    min_prob: float = option(1e-9, help="species below this are left out of higher-rank sums")
    format: str = option("csv", choices=("csv", "table", "json"), help="output format")
    output: str | None = option(None, metavar="FILE", help="write here instead of stdout")
    model: str = shared.model()
    pretrained: str | None = shared.pretrained()
    index: str | None = option(
        None, metavar="DIR", help="tree-of-life text index (default: the model's published one)"
    )
    batch_size: int = shared.batch_size(32)
    workers: int | None = shared.workers(help=DECODING_THREADS)
    device: str = shared.device()
    log: str | None = option(
        None, metavar="FILE", help="provenance record (.json) or appended text log"
    )
    offline: bool = shared.offline()
    progress: bool = shared.progress()
    runtime: str = runtime_option()
    checkpoint_every: int | None = long_run.checkpoint_every()
    resume: bool = long_run.resume()
    ray_address: str | None = long_run.ray_address()
    ray_actors: int | None = long_run.ray_actors()
    keep_rows: bool = option(
        False, cli=False, help="keep every row in the result (library callers; memory grows)"
    )
    # MegaDetector and regional lists (docs/ecologists.md)
    detections: str | None = option(
        None,
        metavar="MD.json",
        help="MegaDetector batch output "
        "(format 1.x): classify its animal boxes; IMAGES_OR_DIRS is "
        "then the one folder its file paths are relative to, and "
        "--output the .json to write (a flat .csv is written beside "
        "it)",
    )
    image_root: str | None = option(
        None,
        metavar="DIR",
        help="with --detections: the folder "
        "the MegaDetector file's paths are relative to (instead of "
        "giving it as IMAGES_OR_DIRS)",
    )
    detection_categories: list[str] | None = option(
        None,
        metavar="NAMES",
        parse=names_list,
        help="with --detections: the detection "
        "categories to crop and classify, comma-separated names (any case) or ids (default: "
        "every category but person, vehicle and empty, and other words for them)",
    )
    detection_threshold: float = option(
        0.2,
        metavar="CONF",
        help="with --detections: classify "
        "boxes with conf at or above this (0.2: MegaDetector "
        "v5's typical threshold)",
    )
    crop_padding: float = option(
        0.0,
        metavar="FRACTION",
        help="with --detections: widen each box by this fraction of its width/height on every side",
    )
    region: str | None = option(
        None,
        metavar="CSV",
        help="taxa known from the place (rank "
        "columns or scientificName): other species roll up to their "
        "nearest allowed ancestor (column rank_landed)",
    )
    deny: str | None = option(
        None,
        metavar="CSV",
        help="taxa that do not occur there (same format): they roll up past them",
    )

    def check(self) -> list[str]:
        problems = []
        custom = "--cls" if self.cls else "--bins" if self.bins else None
        if custom and (self.region or self.deny):
            problems.append(f"--region and --deny apply to tree-of-life predictions, not {custom}")
        if self.image_root and not self.detections:
            problems.append("--image-root applies to --detections only")
        if self.detection_categories is not None and not self.detections:
            problems.append("--detection-categories applies to --detections only")
        if self.detection_categories == []:
            problems.append("--detection-categories: give at least one category name")
        if self.detections:
            if self.image_root and self.images:
                problems.append(
                    "with --detections, give the image folder once: --image-root "
                    "or IMAGES_OR_DIRS, not both"
                )
            elif not self.image_root and len(self.images) != 1:
                problems.append(
                    "with --detections, give one folder: the one MegaDetector ran "
                    "on (its file paths are relative to it), as --image-root DIR "
                    "or IMAGES_OR_DIRS"
                )
            if not (self.output or "").lower().endswith(".json"):
                problems.append("with --detections, --output must name the .json to write")
        if not 0.0 <= self.detection_threshold <= 1.0:
            problems.append(
                f"--detection-threshold must be in [0, 1] (got {self.detection_threshold})"
            )
        if not 0.0 <= self.crop_padding <= 1.0:
            problems.append(f"--crop-padding must be in [0, 1] (got {self.crop_padding})")
        if custom and (self.subset or self.deepest_rank is not None):
            problems.append(
                f"--subset and --deepest-rank apply to tree-of-life predictions, not {custom}"
            )
        if self.k is not None and self.k < 1:
            problems.append(f"--k must be at least 1 (got {self.k})")
        if self.batch_size < 1:
            problems.append(f"--batch-size must be at least 1 (got {self.batch_size})")
        if not self.images and not (self.detections and self.image_root):
            problems.append("give at least one image, directory or glob")
        problems += long_run_problems(self)
        if self.detections and (self.checkpoint_every or self.resume or self.ray_address):
            problems.append(
                "--checkpoint-every, --resume and --ray-address do not apply to --detections"
            )
        return problems

    @property
    def top_k(self) -> int | None:
        """``--k``, or its default: the top :data:`TOP_K` taxa of a tree-of-life prediction,
        every label of ``--cls`` or ``--bins`` (None)."""
        if self.k is not None or self.cls or self.bins:
            return self.k
        return TOP_K


@dataclass
class PredictResult(CommandResult):
    n_images: int
    failed: list[Any] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list, repr=False)
    summary: list[str] = field(default_factory=list)  # stdout lines (--detections)
    notes: list[str] = field(default_factory=list)  # stderr lines (--region, --detections)

    def lines(self) -> list[str]:
        return list(self.summary)

    def warnings(self) -> list[str]:
        if not self.failed:
            return list(self.notes)
        return [
            *self.notes,
            f"taxoclip predict: {len(self.failed)} of {self.n_images} images failed "
            "(see the error column)",
        ]

    @property
    def exit_code(self) -> int:
        return exit_for(self.n_images, len(self.failed))


@command(
    "embed",
    help="image embeddings to .npy, .parquet or pybioclip's JSON",
    description="Encode images with a model. Unreadable images are reported (exit status 3).",
    run="taxoclip.predict.run:run_embed",
)
@dataclass(kw_only=True)
class EmbedConfig(CommandConfig):
    images: list[str] = option(
        positional=True, metavar="IMAGES_OR_DIRS", help="images, directories (recursive) or globs"
    )
    output: str = option(metavar="F.npy|F.parquet|F.json", help="where the embeddings go")
    normalize: bool = option(False, help="L2-normalise (pybioclip writes raw features)")
    model: str = shared.model()
    pretrained: str | None = shared.pretrained()
    batch_size: int = shared.batch_size(32)
    workers: int | None = shared.workers(help=DECODING_THREADS)
    device: str = shared.device()
    offline: bool = shared.offline()
    progress: bool = shared.progress()
    runtime: str = runtime_option()
    checkpoint_every: int | None = long_run.checkpoint_every()
    resume: bool = long_run.resume()
    ray_address: str | None = long_run.ray_address()
    ray_actors: int | None = long_run.ray_actors()

    def check(self) -> list[str]:
        problems = [] if self.batch_size >= 1 else ["--batch-size must be at least 1"]
        return problems + long_run_problems(self)


@dataclass
class EmbedResult(CommandResult):
    n_images: int
    n_ok: int
    dim: int
    written: list[Path]

    def lines(self) -> list[str]:
        where = ", ".join(map(str, self.written))
        return [f"embedded {self.n_ok} of {self.n_images} images (D={self.dim}) into {where}"]

    @property
    def exit_code(self) -> int:
        return exit_for(self.n_images, self.n_images - self.n_ok)


@command(
    "list-models",
    help="list models and pretrained tags (pybioclip's list-models)",
    description=(
        "As pybioclip: the models with a published tree-of-life index, then every model "
        "open_clip knows (taxoclip's configs among them), one per line; with --model, that "
        "model's pretrained tags. Any spec --model accepts elsewhere (run dirs, model "
        "folders, hf-hub:) works too."
    ),
    run="taxoclip.predict.listing:run_list_models",
)
@dataclass(kw_only=True)
class ListModelsConfig(CommandConfig):
    model: str | None = option(None, metavar="MODEL", help="list the pretrained tags of MODEL")


@command(
    "list-tol-taxa",
    help="CSV of the taxa of a tree-of-life index (pybioclip's list-tol-taxa)",
    description=(
        "Print the taxa a tree-of-life index holds as pybioclip's CSV (kingdom, phylum, "
        "class, order, family, genus, species_epithet, species, common_name): the model's "
        "published index, or --index DIR (a model's own txt_emb_<model> files first)."
    ),
    run="taxoclip.predict.listing:run_list_tol_taxa",
)
@dataclass(kw_only=True)
class ListTolTaxaConfig(CommandConfig):
    model: str = shared.model()
    index: str | None = option(
        None, metavar="DIR", help="tree-of-life text index (default: the model's published one)"
    )
    output: str | None = option(None, metavar="FILE", help="write here instead of stdout")
    offline: bool = shared.offline()


@dataclass
class ListingResult(CommandResult):
    text: str = field(default="", repr=False)

    def lines(self) -> list[str]:
        return self.text.splitlines()
