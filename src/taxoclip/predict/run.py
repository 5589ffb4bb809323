"""The runners of ``taxoclip index``, ``predict`` and ``embed``: a config in, a result out."""

from __future__ import annotations

from pathlib import Path

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
from .labels import read_bins, read_classes
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


def run_predict(config: PredictConfig) -> PredictResult:
    """Predict every image; rows go to ``config.output`` (or stdout) in ``config.format``."""
    images = collect_images(config.images) if not config.detections else []
    common = dict(model_str=config.model, pretrained_str=config.pretrained,
                  device=resolve_device(config.device), workers=auto_workers(config.workers))  # fmt: skip
    log_record = ProvenanceLog(config.log, model=config.model, pretrained=config.pretrained,
                               index=config.index, n_images=len(images))  # fmt: skip
    notes: list[str] = []
    if config.cls or config.bins:
        if config.cls:
            classifier = CustomLabelsClassifier(read_classes(config.cls), **common)
            log_record.record.update(mode="custom labels", classes=classifier.classes)
        else:
            classifier = CustomLabelsBinningClassifier(read_bins(config.bins), **common)
            log_record.record.update(mode="bins", bins=config.bins)

        def predict_rows(inputs):
            return classifier.predict(inputs, k=config.k, batch_size=config.batch_size)
    else:
        regional = bool(config.region or config.deny)
        tol_class = TreeOfLifeClassifier
        if regional:
            from .region import RegionClassifier as tol_class
        classifier = tol_class(index=config.index, **common)
        if config.subset:
            classifier.apply_filter(classifier.create_taxa_filter_from_csv(config.subset))
        if regional:  # resolved against the index as --subset left it
            notes += classifier.set_region(config.region, config.deny)
            log_record.record.update(region=classifier.region.summary())

        def predict_rows(inputs):
            if config.deepest_rank is not None:
                return classifier.predict_deepest(inputs, config.deepest_rank, config.batch_size,
                                                  config.min_prob, progress=config.progress)  # fmt: skip
            return classifier.predict(inputs, config.rank or "species", config.min_prob,
                                      config.k or 5, config.batch_size, progress=config.progress)  # fmt: skip

        log_record.record.update(mode="tree of life", rank=config.rank or "species",
                                 subset=config.subset, n_taxa=len(classifier.index))  # fmt: skip
    if config.detections:
        from .megadetector import predict_detections

        return predict_detections(config, predict_rows, log_record, notes)
    rows = predict_rows(images)
    emit_rows(rows, config.format, config.output)
    failed = classifier.last_errors  # each was logged as it happened
    log_record.finish(n_failed=len(failed), failed=failed, output=config.output or "stdout")
    return PredictResult(n_images=len(images), failed=sorted(failed), rows=rows, notes=notes)


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
