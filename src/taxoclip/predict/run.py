"""The runners of ``taxoclip index``, ``predict`` and ``embed``: a config in, a result out.

One path whatever the runtime (torch, ONNX fp32, ONNX int8): an encoder from
:func:`taxoclip.runtime.encode.open_encoder` (which picks the runtime before anything
imports torch, so the ONNX path never does), the one encoding loop, the one scorer
(:mod:`taxoclip.runtime.scoring`), the writers of :mod:`.output`.
"""

from __future__ import annotations

from pathlib import Path

from taxoclip.errors import InputError
from taxoclip.runtime.encode import (
    encode_images,
    open_encoder,
    open_text_encoder,
    score_images,
    squashes,
)
from taxoclip.runtime.images import auto_workers, collect_images
from taxoclip.runtime.index import TextIndex, published_index_folder, read_subset
from taxoclip.runtime.scoring import LabelScorer, TreeScorer, check_threshold

from .config import (
    EmbedConfig,
    EmbedResult,
    IndexConfig,
    IndexResult,
    PredictConfig,
    PredictResult,
)
from .index import build_index, read_taxa
from .output import ProvenanceLog, emit_rows, write_embeddings


def run_index(config: IndexConfig) -> IndexResult:
    """Embed every taxon of ``config.taxa`` and save the index into ``config.out``."""
    taxa = read_taxa(config.taxa)
    text = open_text_encoder(
        config.model, config.runtime, device=config.device, pretrained=config.pretrained
    )
    index = build_index(text, taxa, config.batch_size, progress=config.progress)
    out = index.save(config.out, dtype=config.dtype)
    return IndexResult(
        out=Path(out), model=config.model, n_taxa=len(index), dim=index.dim, dtype=config.dtype
    )


def run_predict(config: PredictConfig) -> PredictResult:
    """Predict every image; rows go to ``config.output`` (or stdout) in ``config.format``."""
    images = collect_images(config.images) if not config.detections else []
    tree = not (config.cls or config.bins)
    log_record = ProvenanceLog(  # first: a --log that exists already costs no model load
        config.log,
        model=config.model,
        pretrained=config.pretrained,
        index=config.index,
        n_images=len(images),
    )
    encoder = open_encoder(
        config.model,
        config.runtime,
        squash=squashes(config.model, tree),
        device=config.device,
        pretrained=config.pretrained,
    )
    log_record.record["runtime"] = encoder.runtime
    notes: list[str] = []
    if tree:
        score, notes = _tree_of_life(config, encoder, log_record)
    else:
        bins = read_bins(config.bins) if config.bins else None
        labels = read_classes(config.cls) if config.cls else list(bins or {})
        scorer = LabelScorer.for_model(encoder, labels, bins)
        log_record.record.update(
            mode="custom labels" if config.cls else "bins",
            **({"classes": scorer.labels} if config.cls else {"bins": config.bins}),
        )

        def score(features, keys):
            return scorer.rows(features, keys, config.k)

    workers = auto_workers(config.workers)
    if config.detections:
        from .megadetector import predict_detections

        def predict_rows(crops):
            return score_images(encoder, crops, score, config.batch_size, workers)[0]

        return predict_detections(config, predict_rows, log_record, notes)
    rows, failed = score_images(encoder, images, score, config.batch_size, workers, config.progress)
    emit_rows(rows, config.format, config.output)
    log_record.finish(n_failed=len(failed), failed=failed, output=config.output or "stdout")
    return PredictResult(n_images=len(images), failed=sorted(failed), rows=rows, notes=notes)


def _tree_of_life(config: PredictConfig, encoder, log_record: ProvenanceLog):
    """The scoring function of a tree-of-life prediction (``--rank``/``--deepest-rank``,
    ``--subset``, ``--region``/``--deny``) and the notes it has for stderr."""
    if config.index:  # a model's own txt_emb_<model> files first, as pybioclip
        index = TextIndex.load(config.index, model=config.model)
    else:
        index = TextIndex.load(published_index_folder(config.model))
    index.check_dim(encoder.embed_dim, config.model)
    scorer = TreeScorer(index, encoder.logit_scale)
    if config.subset:
        try:
            text = Path(config.subset).read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise InputError(f"cannot read --subset {config.subset}: {exc}") from exc
        scorer = scorer.subset(*read_subset(text, config.subset))
    notes: list[str] = []
    if config.region or config.deny:  # resolved against the index as --subset left it
        from .region import resolve_region

        region, notes = resolve_region(scorer.index, config.region, config.deny)
        scorer = scorer.with_landing(region.landing)
        log_record.record.update(region=region.summary())
    log_record.record.update(
        mode="tree of life",
        rank=config.rank or "species",
        subset=config.subset,
        n_taxa=len(scorer.index),
    )
    if config.deepest_rank is not None:
        threshold = check_threshold(config.deepest_rank)

        def score(features, keys):
            return scorer.deepest_rows(features, keys, threshold, config.min_prob)
    else:

        def score(features, keys):
            return scorer.rows(
                features, keys, config.rank or "species", config.k or 5, config.min_prob
            )

    return score, notes


def run_embed(config: EmbedConfig) -> EmbedResult:
    """Encode every image and write the embeddings to ``config.output``."""
    images = collect_images(config.images)
    encoder = open_encoder(
        config.model,
        config.runtime,
        squash=squashes(config.model, False),
        device=config.device,
        pretrained=config.pretrained,
    )
    encoded = encode_images(
        encoder,
        images,
        config.batch_size,
        auto_workers(config.workers),
        normalize=config.normalize,
        progress=config.progress,
    )
    keys = [encoded.keys[i] for i in encoded.ok]
    written = write_embeddings(config.output, config.model, keys, encoded.features)
    dim = encoded.features.shape[1] if keys else 0
    return EmbedResult(n_images=len(images), n_ok=len(keys), dim=int(dim), written=list(written))


# --------------------------------------------------------------------------- --cls, --bins


def read_classes(value: str) -> list[str]:
    """``--cls``: a file with one label per line, or a comma-separated list."""
    path = Path(value)
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()]
    return [item.strip() for item in value.split(",") if item.strip()]


def read_bins(path: str) -> dict[str, str]:
    """``--bins``: a CSV of class,bin."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, index_col=0)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read --bins {path}: {exc}") from exc
    if len(frame.columns) == 0:
        raise InputError(f"--bins {path}: needs two columns (class, bin)")
    return frame[frame.columns[0]].to_dict()
