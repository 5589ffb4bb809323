"""The runners of ``taxoclip index``, ``predict`` and ``embed``: a config in, a result out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from taxoclip.errors import InputError
from taxoclip.models import load_model, resolve_device

from .classifiers import (
    BaseClassifier,
    CustomLabelsBinningClassifier,
    CustomLabelsClassifier,
    TreeOfLifeClassifier,
)
from .config import (
    EmbedConfig,
    EmbedResult,
    IndexConfig,
    IndexResult,
    PredictConfig,
    PredictResult,
)
from .images import as_numpy, auto_workers, collect_images, encode_images
from .index import build_index, read_taxa
from .output import ProvenanceLog, emit_rows, write_embeddings


def run_index(config: IndexConfig) -> IndexResult:
    """Embed every taxon of ``config.taxa`` and save the index into ``config.out``."""
    taxa = read_taxa(config.taxa)
    device = resolve_device(config.device)
    loaded = load_model(config.model, pretrained=config.pretrained, device=device)
    index = build_index(loaded.model, loaded.tokenizer, taxa, device, config.batch_size,
                        progress=config.progress)  # fmt: skip
    out = index.save(config.out, dtype=config.dtype)
    return IndexResult(out=Path(out), model=config.model, n_taxa=len(index), dim=index.dim,
                       dtype=config.dtype)  # fmt: skip


def read_classes(value: str) -> list[str]:
    """``--cls``: a file with one label per line, or a comma-separated list."""
    path = Path(value)
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()]
    return [item.strip() for item in value.split(",") if item.strip()]


def read_bins(path: str) -> dict[str, str]:
    """``--bins``: a CSV of class,bin."""
    try:
        frame = pd.read_csv(path, index_col=0)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read --bins {path}: {exc}") from exc
    if len(frame.columns) == 0:
        raise InputError(f"--bins {path}: needs two columns (class, bin)")
    return frame[frame.columns[0]].to_dict()


def run_predict(config: PredictConfig) -> PredictResult:
    """Predict every image; rows go to ``config.output`` (or stdout) in ``config.format``."""
    images = collect_images(config.images)
    common = dict(model_str=config.model, pretrained_str=config.pretrained,
                  device=resolve_device(config.device), workers=auto_workers(config.workers))  # fmt: skip
    log_record = ProvenanceLog(config.log, model=config.model, pretrained=config.pretrained,
                               index=config.index, n_images=len(images))  # fmt: skip
    if config.cls or config.bins:
        if config.cls:
            classifier = CustomLabelsClassifier(read_classes(config.cls), **common)
            log_record.record.update(mode="custom labels", classes=classifier.classes)
        else:
            classifier = CustomLabelsBinningClassifier(read_bins(config.bins), **common)
            log_record.record.update(mode="bins", bins=config.bins)
        rows = classifier.predict(images, k=config.k, batch_size=config.batch_size)
    else:
        classifier = TreeOfLifeClassifier(index=config.index, **common)
        if config.subset:
            classifier.apply_filter(classifier.create_taxa_filter_from_csv(config.subset))
        if config.deepest_rank is not None:
            rows = classifier.predict_deepest(images, config.deepest_rank, config.batch_size,
                                              config.min_prob, progress=config.progress)  # fmt: skip
        else:
            rows = classifier.predict(images, config.rank or "species", config.min_prob,
                                      config.k or 5, config.batch_size, progress=config.progress)  # fmt: skip
        log_record.record.update(mode="tree of life", rank=config.rank or "species",
                                 subset=config.subset, n_taxa=len(classifier.index))  # fmt: skip
    emit_rows(rows, config.format, config.output)
    failed = classifier.last_errors  # each was logged as it happened
    log_record.finish(n_failed=len(failed), failed=failed, output=config.output or "stdout")
    return PredictResult(n_images=len(images), failed=sorted(failed), rows=rows)


def run_embed(config: EmbedConfig) -> EmbedResult:
    """Encode every image and write the embeddings to ``config.output``."""
    images = collect_images(config.images)
    workers = auto_workers(config.workers)
    device = resolve_device(config.device)
    classifier = BaseClassifier(model_str=config.model, pretrained_str=config.pretrained,
                                device=device, workers=workers)  # fmt: skip
    encoded = encode_images(classifier.model, classifier.preprocess, images, config.batch_size,
                            workers, device, normalize=config.normalize,
                            progress=config.progress)  # fmt: skip
    keys = [encoded.keys[i] for i in encoded.ok_indices]
    written = write_embeddings(config.output, config.model, keys, as_numpy(encoded.features))
    dim = encoded.features.shape[-1] if keys else 0
    return EmbedResult(n_images=len(images), n_ok=len(keys), dim=int(dim), written=list(written))
