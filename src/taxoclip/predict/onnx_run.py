"""``predict``, ``embed`` and ``index`` on ONNX Runtime: numpy + PIL + onnxruntime, no torch.

The same rows, files, error rows and exit statuses as the torch path (:mod:`.run`,
:mod:`.classifiers`): images are collected and decoded by :mod:`.imageio` (threads for
``--workers``), encoded by the exported image tower, scored against the index with
:mod:`.scoring`, and written by :mod:`.output`. Custom labels use the exported text tower
(``text_encoder.onnx`` + ``tokenizer.json``) when the folder has one — else torch is
imported for the text tower only — and are cached per model (:mod:`.labels`), so a
repeated ``--cls`` call runs no text tower at all. ``index --runtime onnx`` needs the
exported text tower.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from taxoclip.errors import InputError, UsageError
from taxoclip.runtime.onnx import SAFETENSORS_FILE, ExportedModel, OnnxImageEncoder, OnnxTextEncoder
from taxoclip.taxonomy import RANK_NAMES, Rank

from .config import EmbedConfig, EmbedResult, IndexConfig, IndexResult, PredictConfig, PredictResult
from .imageio import ImageInput, auto_workers, collect_images, image_key, iter_decoded
from .labels import cached_label_matrix, read_bins, read_classes
from .output import ProvenanceLog, emit_rows, write_embeddings
from .rows import (
    PRED_CLASSIFICATION_KEY,
    PRED_FILENAME_KEY,
    PRED_SCORE_KEY,
    SPECIES_COLUMNS,
    deepest_choices,
    deepest_row,
    error_row,
    rolled_up_names,
    tol_row,
)
from .scoring import NumpyIndex, rollup_topk_np, softmax, topk
from .textmatrix import class_text_matrix_np

log = logging.getLogger(__name__)


class OnnxClassifier:
    """An exported model's image tower; per batch, features scored against a matrix."""

    def __init__(self, model: str, runtime: str = "onnx", squash: bool = False,
                 workers: int = 0) -> None:  # fmt: skip
        self.model_str = model
        self.runtime = runtime
        self.exported = ExportedModel.open(model)
        self.encoder = OnnxImageEncoder(self.exported, int8=runtime == "onnx-int8", squash=squash)
        self.workers = workers
        self.last_errors: dict[str, str] = {}

    def iter_features(self, images: Sequence[ImageInput], batch_size: int, normalize: bool = True,
                      progress: bool = False) -> Iterator[tuple[list[int], np.ndarray | None,
                                                                dict[int, str]]]:  # fmt: skip
        from tqdm import tqdm  # here: its import is a tenth of the ONNX path's start-up

        keys = [image_key(image, i) for i, image in enumerate(images)]
        self.last_errors = {}
        with tqdm(total=len(images), unit="img", desc="encode", disable=not progress) as bar:
            for indices, pixels, errors in iter_decoded(images, self.encoder.preprocess,
                                                        batch_size, self.workers):  # fmt: skip
                for position, reason in errors.items():
                    log.warning("skipping %s: %s", keys[position], reason)
                    self.last_errors[keys[position]] = reason
                features = None
                if pixels:
                    features = self.encoder.encode_pixels(np.stack(pixels), normalize=normalize)
                yield indices, features, errors
                bar.update(len(indices) + len(errors))

    def scored(self, images, matrix: np.ndarray | NumpyIndex, batch_size: int,
               progress: bool = False):  # fmt: skip
        """Per batch: positions, softmax probabilities over the columns, failures."""
        scale = self.encoder.logit_scale
        for indices, features, errors in self.iter_features(images, batch_size, True, progress):
            if features is None:
                yield [], None, errors
                continue
            if isinstance(matrix, NumpyIndex):
                logits = matrix.logits(features, scale)
            else:
                logits = (features @ matrix) * np.float32(scale)
            yield indices, softmax(logits), errors


class OnnxCustomLabels(OnnxClassifier):
    """Zero-shot among custom labels (``--cls``), optionally summed into bins (``--bins``)."""

    def __init__(self, classes: Sequence[str], model: str, runtime: str = "onnx",
                 workers: int = 0, bins: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(model, runtime, squash=False, workers=workers)
        self.classes = [str(c).strip() for c in classes]
        if not self.classes or any(not c for c in self.classes):
            raise UsageError("custom labels must be non-empty strings")
        self.txt = label_matrix(self.exported, runtime, self.classes)
        self.names, self.bin_of = self.classes, None
        if bins is not None:
            cls_to_bin = {str(k).strip(): str(v) for k, v in bins.items()}
            self.names = list(dict.fromkeys(cls_to_bin[c] for c in self.classes))
            position = {name: i for i, name in enumerate(self.names)}
            self.bin_of = np.array([position[cls_to_bin[c]] for c in self.classes])

    def predict(self, images, k: int | None = None, batch_size: int = 10) -> list[dict]:
        rows: dict[int, list[dict]] = {}
        for indices, probs, errors in self.scored(images, self.txt, batch_size):
            for index, reason in errors.items():
                rows[index] = [error_row(image_key(images[index], index), reason)]
            if probs is None:
                continue
            if self.bin_of is not None:
                summed = np.zeros((probs.shape[0], len(self.names)), dtype=probs.dtype)
                for column, group in enumerate(self.bin_of):
                    summed[:, group] += probs[:, column]
                probs = summed
            values, positions = topk(probs, min(k or len(self.names), len(self.names)))
            for row, index in enumerate(indices):
                key = image_key(images[index], index)
                rows[index] = [
                    {
                        PRED_FILENAME_KEY: key,
                        PRED_CLASSIFICATION_KEY: self.names[p],
                        PRED_SCORE_KEY: float(v),
                    }  # fmt: skip
                    for v, p in zip(values[row].tolist(), positions[row].tolist(), strict=True)
                ]
        return [r for index in sorted(rows) for r in rows[index]]


class OnnxTreeOfLife(OnnxClassifier):
    """Species against a tree-of-life index; higher ranks by summing species (numpy)."""

    def __init__(self, model: str, index: str | None, runtime: str = "onnx",
                 workers: int = 0) -> None:  # fmt: skip
        super().__init__(model, runtime, squash=True, workers=workers)
        if index is None:
            raise UsageError(
                f"model {model} has no published tree-of-life index; pass one with --index DIR "
                "(build it with `taxoclip index --model ... --taxa ...`)"
            )
        self.full_index = self.index = NumpyIndex.load(index, model=model)
        self.index.check_dim(self.encoder.embed_dim, model)

    def filter_from_csv(self, csv_path: str) -> None:
        """``--subset``: as ``TreeOfLifeClassifier.create_taxa_filter_from_csv`` + apply."""
        try:
            with open(csv_path, newline="", encoding="utf-8") as handle:
                reader = csv.reader(handle)
                header = next(reader)
                values = [row[0] for row in reader if row]
        except (OSError, StopIteration) as exc:
            raise InputError(f"cannot read --subset {csv_path}: {exc}") from exc
        column = str(header[0]).lower()
        if column not in RANK_NAMES:
            raise UsageError(
                f"The first column of {csv_path} is named '{column}' but must be one of "
                f"{','.join(RANK_NAMES)}."
            )
        column = Rank.parse(column).get_label()
        labels = [
            dict(zip(SPECIES_COLUMNS, [*ranks, f"{ranks[5]} {ranks[6]}", common], strict=True))
            [column] for ranks, common in self.full_index.names
        ]  # fmt: skip
        known = set(labels)
        unknown = [v for v in values if v not in known]
        if unknown:
            raise UsageError(
                f"Unknown {column} received: {', '.join(unknown)}. Only known {column} may be used."
            )
        wanted = set(values)
        self.index = self.full_index.subset([label in wanted for label in labels])

    def _top_at_rank(self, probs: np.ndarray, rank: Rank, k: int, min_prob: float):
        if rank is Rank.SPECIES:
            values, positions = topk(probs, k)
            names = self.index.names
            return values, [[(names[p][0], names[p][1]) for p in row] for row in positions.tolist()]
        group, labels = self.index.rollup(rank)
        values, positions = rollup_topk_np(probs, group, len(labels), k, min_prob)
        return values, rolled_up_names(values, positions, labels)

    def predict(self, images, rank: Rank | str, min_prob: float = 1e-9, k: int = 5,
                batch_size: int = 10, progress: bool = False) -> list[dict]:  # fmt: skip
        rank = Rank.parse(rank)
        rows: dict[int, list[dict]] = {}
        for indices, probs, errors in self.scored(images, self.index, batch_size, progress):
            for index, reason in errors.items():
                rows[index] = [error_row(image_key(images[index], index), reason)]
            if probs is None:
                continue
            values, named = self._top_at_rank(probs, rank, k, min_prob)
            for row, index in enumerate(indices):
                key = image_key(images[index], index)
                rows[index] = [tol_row(key, rank, names, common, float(values[row, j]))
                               for j, (names, common) in enumerate(named[row])]  # fmt: skip
        return [r for index in sorted(rows) for r in rows[index]]

    def predict_deepest(self, images, threshold: float, batch_size: int = 10,
                        min_prob: float = 1e-9, progress: bool = False) -> list[dict]:  # fmt: skip
        if not 0.0 < threshold <= 1.0:
            raise UsageError(f"--deepest-rank threshold must be in (0, 1] (got {threshold})")
        rows: dict[int, dict] = {}
        for indices, probs, errors in self.scored(images, self.index, batch_size, progress):
            for index, reason in errors.items():
                rows[index] = error_row(image_key(images[index], index), reason)
            if probs is None:
                continue
            best = deepest_choices(
                lambda rank, probs=probs: self._top_at_rank(probs, rank, 1, min_prob),
                len(indices), threshold,
            )  # fmt: skip
            for row, index in enumerate(indices):
                key = image_key(images[index], index)
                rows[index] = deepest_row(key, *(best[row] or (None, (), "", 0.0)))
        return [rows[index] for index in sorted(rows)]


def label_matrix(exported: ExportedModel, runtime: str, labels: list[str]) -> np.ndarray:
    """(D, C) classifier of ``labels``: the exported text tower (its int8 file with
    ``onnx-int8`` when there is one) or, for a folder exported without one (``--no-text``),
    torch's text tower; cached per model either way."""
    int8 = runtime == "onnx-int8"
    text_file = exported.text_file(int8)
    if text_file is not None:
        text_runtime = "onnx-int8" if ".int8." in text_file.name else "onnx"

        def compute(todo: list[str]) -> np.ndarray:
            return class_text_matrix_np(OnnxTextEncoder(exported, int8=int8), todo)
    else:
        text_runtime = "torch"

        def compute(todo: list[str]) -> np.ndarray:
            log.info("%s has no exported text tower: custom labels use torch", exported.folder)
            from taxoclip.models import load_model

            from .index import class_text_matrix

            loaded = load_model(str(exported.folder))
            return class_text_matrix(loaded.model, loaded.tokenizer, todo)

    return cached_label_matrix(exported.folder / SAFETENSORS_FILE, text_runtime, labels, compute)


# --------------------------------------------------------------------------- runners


def run_predict_onnx(config: PredictConfig) -> PredictResult:
    images = collect_images(config.images)
    workers = auto_workers(config.workers)
    runtime = "onnx" if config.runtime == "auto" else config.runtime
    log_record = ProvenanceLog(config.log, model=config.model, pretrained=config.pretrained,
                               index=config.index, n_images=len(images), runtime=runtime)  # fmt: skip
    if config.pretrained:
        raise UsageError(f"--pretrained does not apply to --runtime {runtime} (the exported "
                         "folder holds its weights)")  # fmt: skip
    if config.cls or config.bins:
        if config.cls:
            classifier = OnnxCustomLabels(read_classes(config.cls), config.model, runtime, workers)
            log_record.record.update(mode="custom labels", classes=classifier.classes)
        else:
            bins = read_bins(config.bins)
            if any(v is None or v != v or not str(v).strip() for v in bins.values()):
                raise UsageError("Empty, null, or nan are not allowed for bin values.")
            classifier = OnnxCustomLabels(list(bins), config.model, runtime, workers, bins=bins)
            log_record.record.update(mode="bins", bins=config.bins)
        rows = classifier.predict(images, k=config.k, batch_size=config.batch_size)
    else:
        classifier = OnnxTreeOfLife(config.model, config.index, runtime, workers)
        if config.subset:
            classifier.filter_from_csv(config.subset)
        if config.deepest_rank is not None:
            rows = classifier.predict_deepest(images, config.deepest_rank, config.batch_size,
                                              config.min_prob, progress=config.progress)  # fmt: skip
        else:
            rows = classifier.predict(images, config.rank or "species", config.min_prob,
                                      config.k or 5, config.batch_size, progress=config.progress)  # fmt: skip
        log_record.record.update(mode="tree of life", rank=config.rank or "species",
                                 subset=config.subset, n_taxa=len(classifier.index))  # fmt: skip
    emit_rows(rows, config.format, config.output)
    failed = classifier.last_errors
    log_record.finish(n_failed=len(failed), failed=failed, output=config.output or "stdout")
    return PredictResult(n_images=len(images), failed=sorted(failed), rows=rows)


def run_embed_onnx(config: EmbedConfig) -> EmbedResult:
    images = collect_images(config.images)
    runtime = "onnx" if config.runtime == "auto" else config.runtime
    classifier = OnnxClassifier(config.model, runtime, squash=False,
                                workers=auto_workers(config.workers))  # fmt: skip
    order, chunks = [], []
    for indices, features, _ in classifier.iter_features(images, config.batch_size,
                                                         config.normalize, config.progress):  # fmt: skip
        if features is not None:
            order.extend(indices)
            chunks.append(features)
    keys = [image_key(images[i], i) for i in order]
    dim = classifier.encoder.embed_dim
    features = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    written = write_embeddings(config.output, config.model, keys, features)
    return EmbedResult(n_images=len(images), n_ok=len(keys), dim=dim if keys else 0,
                       written=list(written))  # fmt: skip


def run_index_onnx(config: IndexConfig) -> IndexResult:
    """``taxoclip index`` through the exported text tower (needs text_encoder.onnx)."""
    exported = ExportedModel.open(config.model)
    int8 = config.runtime == "onnx-int8"
    if exported.text_file(int8) is None:
        raise InputError(f"model {config.model}: exported without a text tower; use --runtime "
                         "torch for `taxoclip index`")  # fmt: skip
    import torch

    from taxoclip.taxonomy import clean_name

    from .index import TextIndex, read_taxa, taxon_text

    taxa = read_taxa(config.taxa)
    names = [[lineage.to_list(), clean_name(common)] for lineage, common in taxa]
    labels = [taxon_text(ranks, common) for ranks, common in names]
    matrix = class_text_matrix_np(OnnxTextEncoder(exported, int8=int8), labels, config.progress)
    out = TextIndex(torch.from_numpy(matrix), names).save(config.out, dtype=config.dtype)
    return IndexResult(out=Path(out), model=config.model, n_taxa=len(names), dim=matrix.shape[0],
                       dtype=config.dtype)  # fmt: skip
