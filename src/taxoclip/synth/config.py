"""Config and result of ``taxoclip synth`` (light: stdlib and taxoclip.config only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taxoclip.config import CommandConfig, CommandResult, command, option, shared

MAX_IMAGE_SIZE = 512
MIN_IMAGE_SIZE = 16

# The fields that shape the dataset (synth.json's "config"); where it goes and whether a
# progress bar shows do not, so the same parameters give byte-identical files anywhere.
_OUTPUT_ONLY = ("out", "progress")


@command(
    "synth",
    help="generate SynthToL, the embedded synthetic tree of life",
    description=(
        "Generate SynthToL: a procedural tree of life (7 ranks, pseudo-Latin names, "
        "traits evolving down the tree, habitats, sexes and life stages) as JPEG "
        "images, ground-truth CSVs, train/test splits and optional WebDataset shards. "
        "The same seed gives byte-identical output."
    ),
    run="taxoclip.synth:run",
)
@dataclass(kw_only=True)
class SynthConfig(CommandConfig):
    """Parameters of one SynthToL build. ``out`` may stay None for ``generate(out, config)``;
    ``run(config)`` needs it."""

    out: str | None = option(
        None, positional=True, metavar="OUT", help="output directory (new or empty)"
    )
    species: int = option(300, metavar="N", help="number of species")
    images_per_species: int = option(40, metavar="M", help="images per species")
    image_size: int = option(32, metavar="S", help="image side in pixels")
    seed: int = shared.seed(help="random seed (default 0)")
    shards: int = option(
        0, metavar="N", help="also write the training split as N WebDataset shards"
    )
    test_fraction: float = option(0.2, cli=False, help="held-out share of each seen species")
    unseen_fraction: float = option(0.1, cli=False, help="share of species never trained on")
    jpeg_quality: int = option(92, cli=False, help="JPEG quality of the images")
    preview: bool = option(False, help="write preview.png, a contact sheet to look at")
    raw_source: bool = option(
        False,
        help=(
            "also write OUT/raw/: the training images as a GBIF-like Darwin Core Archive plus "
            "a GBIF-format backbone, seeded with real data's faults (synonyms, misspellings, "
            "homonyms, duplicates, corrupt files, labels, test-split leaks …) and a "
            "truth.csv of each fault, to test curation against"
        ),
    )
    web: int = option(
        0,
        metavar="N",
        help=(
            "also write OUT/web/: a general image-caption corpus of N images of the same "
            "world (organisms in new poses and empty scenes) with alt-text-like captions of "
            "what is visible, never the taxonomy; the stand-in for LAION in the two-stage "
            "recipe (docs/reference.md), as shards plus a held-out test set"
        ),
    )
    progress: bool = option(True, flag="--quiet", short="-q", negate=True, help="no progress bar")

    def check(self) -> list[str]:
        """Parameters that cannot produce a dataset."""
        problems = []
        if self.species < 1:
            problems.append(f"--species must be at least 1 (got {self.species})")
        if self.images_per_species < 2:
            problems.append(
                "--images-per-species must be at least 2, one for training and one for "
                f"testing (got {self.images_per_species})"
            )
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            problems.append(
                f"--image-size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} "
                f"(got {self.image_size})"
            )
        if self.seed < 0:
            problems.append(f"--seed must be non-negative (got {self.seed})")
        if self.shards < 0:
            problems.append(f"--shards must be 0 (none) or more (got {self.shards})")
        if not 0.0 < self.test_fraction < 1.0:
            problems.append(f"test fraction must be in (0, 1) (got {self.test_fraction})")
        if not 0.0 <= self.unseen_fraction < 1.0:
            problems.append(f"unseen fraction must be in [0, 1) (got {self.unseen_fraction})")
        if self.web != 0 and self.web < 20:
            problems.append(f"--web must be 0 (none) or at least 20 images (got {self.web})")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"JPEG quality must be 1–100 (got {self.jpeg_quality})")
        return problems

    def parameters(self) -> dict[str, Any]:
        """The fields that shape the dataset, as synth.json and raw.json record them."""
        return {k: v for k, v in self.to_json().items() if k not in _OUTPUT_ONLY}

    def n_test(self) -> int:
        """Held-out images per seen species (at least one, leaving at least one to train)."""
        wanted = round(self.test_fraction * self.images_per_species)
        return min(max(1, wanted), self.images_per_species - 1)


@dataclass
class SynthResult(CommandResult):
    out: Path
    n_species: int
    n_unseen_species: int
    n_train: int
    n_test: int
    shard_pattern: str | None = None
    preview: Path | None = None
    raw_source: Path | None = None
    web: Path | None = None
    counts: dict[str, object] = field(default_factory=dict)

    def lines(self) -> list[str]:
        lines = [
            f"SynthToL written to {self.out}: {self.n_species} species "
            f"({self.n_unseen_species} unseen in training), "
            f"{self.n_train} train and {self.n_test} test images"
        ]
        if self.shard_pattern:
            lines.append(f"training shards: {self.shard_pattern}")
        if self.preview:
            lines.append(f"preview: {self.preview}")
        if self.web:
            web = self.counts["web"]
            lines.append(
                f"web corpus: {self.web} ({web['train']} training pairs in {web['shards']} "
                f"shards, {web['test']} held out; {web['scenes']} without an organism)"
            )
        if self.raw_source:
            raw = self.counts["raw_source"]
            lines.append(
                f"raw source: {self.raw_source} (Darwin Core Archive in dwca/, backbone in "
                f"backbone/, ground truth in truth.csv): {raw['media']} media records, "
                f"{raw['expected_reject']} of them faulty enough to reject"
            )
        return lines
