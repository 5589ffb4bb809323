"""SynthToL on disk: images, ground-truth tables, train/test splits, optional shards.

Output layout (all paths relative to OUT)::

    synth.json                 parameters, counts, format version
    species.csv                ground truth per species (lineage, traits, habitat, seen)
    images.csv                 ground truth per image (species, split, sex, life stage, pose…)
    train/metadata.csv         evaluation-folder format: filepath,class + lineage columns
    train/images/s0000/….jpg
    test/metadata.csv          held-out images of seen species AND all images of unseen ones
    test/images/…
    shards/shard-000000.tar …  the training split as WebDataset shards (with --shards N)
    preview.png                contact sheet (with --preview)
    raw/                       GBIF-like DwC-A + backbone seeded with faults, and their
                               ground truth (with --raw-source; see raw/__init__.py)
    web/                       a general image–caption corpus of the same world (with
                               --web N; see web.py)

Everything is written to a temporary sibling folder and renamed into place at the end
(``taxoclip.files.replacing_dir``), so a failed run leaves nothing behind. Same parameters ⇒ byte-identical files.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from taxoclip import __version__
from taxoclip.errors import UsageError
from taxoclip.files import replacing_dir

from .config import SynthConfig, SynthResult
from .render import LIFE_STAGES, SEXES, render, sample_image_params
from .seeds import RENDER_STREAM, SHARD_ORDER_STREAM, TREE_STREAM, species_rng
from .tree import Species, build_tree

FORMAT_VERSION = 1

# Columns of the evaluation-folder metadata.csv. ``class`` is the label (docs/reference.md);
# the class *rank* is therefore written as ``class_`` so the two cannot collide.
METADATA_COLUMNS = (
    "filepath",
    "class",
    "kingdom",
    "phylum",
    "class_",
    "order",
    "family",
    "genus",
    "species_epithet",
    "species",
    "common_name",
    "species_id",
    "sex",
    "life_stage",
    "seen",
)


@dataclass
class _ImageRecord:
    image_id: int
    species_id: int
    split: str
    sex: str
    life_stage: str
    angle: float
    flip: int
    scale: float
    brightness: float
    noise_sigma: float
    scene: int
    clutter: int

    @property
    def relpath(self) -> str:
        return f"{self.split}/images/s{self.species_id:04d}/{self.image_id:07d}.jpg"


def check_output(out: Path) -> None:
    """Refuse an OUT that cannot become the dataset: a file, a non-empty folder, or a
    place where no folder can be made."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"output directory {out} is not empty; choose a new path")
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write output directory {out}: {exc.strerror or exc}") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write output directory {out}: {parent} is not writable")


def generate(out: str | os.PathLike, config: SynthConfig, progress: bool = True) -> SynthResult:
    """Build SynthToL into ``out`` (must not exist or be empty)."""
    out = Path(out)
    check_output(out)
    with replacing_dir(out.absolute()) as tmp:
        result = _generate_into(tmp, config, progress)
    result.out = out
    if result.preview is not None:
        result.preview = out / result.preview.name
    if result.raw_source is not None:
        result.raw_source = out / result.raw_source.name
    if result.web is not None:
        result.web = out / result.web.name
    if result.shard_pattern is not None:
        result.shard_pattern = result.shard_pattern.replace(str(tmp), str(out.absolute()))
    return result


def _generate_into(root: Path, config: SynthConfig, progress: bool) -> SynthResult:
    species = build_tree(
        config.species, species_rng(config.seed, TREE_STREAM), config.unseen_fraction
    )
    n_train_total = sum(config.images_per_species - config.n_test() for s in species if s.seen)
    if config.shards > n_train_total:
        raise UsageError(
            f"--shards {config.shards} is more than the {n_train_total} training images"
        )

    rows = [s.as_row() for s in species]
    _write_csv(root / "species.csv", rows)

    records: list[_ImageRecord] = []
    total = config.species * config.images_per_species
    with tqdm(total=total, unit="img", desc="render", disable=not progress) as bar:
        for sp, row in zip(species, rows, strict=True):
            records.extend(_render_species(root, sp, row, len(records), config))
            bar.update(config.images_per_species)

    _write_csv(root / "images.csv", [_image_row(r) for r in records])
    by_id = {s.species_id: s for s in species}
    for split in ("train", "test"):
        split_rows = [_metadata_row(r, by_id[r.species_id]) for r in records if r.split == split]
        _write_csv(root / split / "metadata.csv", split_rows, METADATA_COLUMNS)

    n_train = sum(r.split == "train" for r in records)
    result = SynthResult(
        out=root,
        n_species=len(species),
        n_unseen_species=sum(not s.seen for s in species),
        n_train=n_train,
        n_test=len(records) - n_train,
    )
    if config.shards:
        result.shard_pattern = _write_train_shards(root, records, by_id, config)
    if config.preview:
        from .preview import contact_sheet

        result.preview = contact_sheet(species, config, root / "preview.png")
    result.counts = {
        "species": result.n_species,
        "unseen_species": result.n_unseen_species,
        "finch_species": sum(s.is_finch for s in species),
        "train_images": result.n_train,
        "test_images": result.n_test,
        "shards": config.shards,
    }
    if config.raw_source:
        from . import raw  # pyarrow-free but rapidfuzz-heavy: only for --raw-source

        result.raw_source = root / "raw"
        result.counts["raw_source"] = raw.write_raw_source(root, species, config, progress)
    if config.web:
        from .web import write_web_corpus

        result.web = root / "web"
        result.counts["web"] = write_web_corpus(
            root,
            species,
            config.web,
            config.seed,
            config.image_size,
            config.jpeg_quality,
            progress,
        )
    manifest = {
        "generator": "taxoclip.synth",
        "taxoclip_version": __version__,
        "format_version": FORMAT_VERSION,
        "config": config.parameters(),
        "counts": result.counts,
    }
    (root / "synth.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return result


def _render_species(
    root: Path, sp: Species, row: dict[str, object], first_id: int, config: SynthConfig
) -> list[_ImageRecord]:
    n = config.images_per_species
    rng = species_rng(config.seed, RENDER_STREAM, sp.species_id)
    params = sample_image_params(row, n, rng)
    pixels = render(params, config.image_size, rng)
    if sp.seen:
        test = set(rng.permutation(n)[: config.n_test()].tolist())
    else:
        test = set(range(n))
    splits = {"test"} | ({"train"} if len(test) < n else set())
    for split in splits:
        (root / split / "images" / f"s{sp.species_id:04d}").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        record = _ImageRecord(
            image_id=first_id + i,
            species_id=sp.species_id,
            split="test" if i in test else "train",
            sex=SEXES[int(params.male[i])],
            life_stage=LIFE_STAGES[int(params.juvenile[i])],
            angle=round(float(params.angle[i]), 4),
            flip=int(params.flip[i]),
            scale=round(float(params.scale[i]), 4),
            brightness=round(float(params.brightness[i]), 4),
            noise_sigma=round(float(params.noise_sigma[i]), 3),
            scene=int(params.scene[i]),
            clutter=int(params.clutter_on[i].sum()),
        )
        (root / record.relpath).write_bytes(encode_jpeg(pixels[i], config.jpeg_quality))
        records.append(record)
    return records


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _image_row(record: _ImageRecord) -> dict[str, object]:
    row = dict(vars(record))  # flat fields: no need for asdict's deep copy
    row["filepath"] = record.relpath
    return row


def _metadata_row(record: _ImageRecord, sp: Species) -> dict[str, object]:
    lineage = sp.lineage
    return {
        "filepath": record.relpath.split("/", 1)[1],
        "class": lineage.species_binomial,
        **lineage.to_dict(class_key="class_"),
        "species": lineage.species_binomial,
        "common_name": sp.common_name,
        "species_id": sp.species_id,
        "sex": record.sex,
        "life_stage": record.life_stage,
        "seen": sp.seen,
    }


def _write_csv(
    path: Path, rows: list[dict[str, object]], columns: tuple[str, ...] | None = None
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fieldnames = list(columns) if columns else list(rows[0].keys()) if rows else []
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _write_train_shards(
    root: Path, records: list[_ImageRecord], by_id: dict[int, Species], config: SynthConfig
) -> str:
    from taxoclip.data import write_shards

    train = [r for r in records if r.split == "train"]
    order = species_rng(config.seed, SHARD_ORDER_STREAM).permutation(len(train))
    samples = _TrainSamples(root, [train[int(i)] for i in order], by_id)
    return write_shards(samples, root / "shards", n_shards=config.shards).pattern


class _TrainSamples(Sequence):
    """Shuffled training samples, each read from disk only when the shard writer asks."""

    def __init__(self, root: Path, records: list[_ImageRecord], by_id: dict[int, Species]):
        self._root, self._records, self._by_id = root, records, by_id

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index):
        from taxoclip.data import ShardSample

        record = self._records[index]
        sp = self._by_id[record.species_id]
        return ShardSample(
            key=f"{record.image_id:07d}",
            jpg=(self._root / record.relpath).read_bytes(),
            lineage=sp.lineage,
            common_name=sp.common_name,
            meta={
                "image_id": record.image_id,
                "species_id": record.species_id,
                "sex": record.sex,
                "life_stage": record.life_stage,
            },
        )
