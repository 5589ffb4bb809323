"""The runners of ``taxoclip index``, ``predict`` and ``embed``: a config in, a result out.

One path whatever the runtime (torch, ONNX fp32, ONNX int8): an encoder from
:func:`taxoclip.runtime.encode.open_encoder` (which picks the runtime before anything
imports torch, so the ONNX path never does), the one encoding loop, the one scorer
(:mod:`taxoclip.runtime.scoring`), the writers of :mod:`.output`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from taxoclip.errors import InputError, TaxoclipError
from taxoclip.runtime.encode import (
    iter_features,
    open_encoder,
    open_text_encoder,
    score_images,
    squashes,
)
from taxoclip.runtime.images import auto_workers, collect_images, image_key
from taxoclip.runtime.index import TextIndex, published_index_folder, read_subset
from taxoclip.runtime.rows import ERROR_KEY, PRED_FILENAME_KEY, error_row
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
from .output import ProvenanceLog, emit_rows, write_embedding_stream
from .stream import Progress, content_digest, fingerprint, read_lines

#: The body files of a run (:mod:`.stream`): predict's rows (one JSON list per image),
#: embed's features (float32, one row per readable image) and their keys (one per line).
ROWS_BODY = "rows.jsonl"
FEATURES_BODY = "features.f32"
KEYS_BODY = "keys.jsonl"


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
    """Predict every image; rows go to ``config.output`` (or stdout) in ``config.format``.

    Rows are appended to a body file batch by batch and the output is written from it at
    the end (:mod:`.stream`: memory flat, ``--checkpoint-every``, ``--resume``); with
    ``--ray-address`` the batches are scored on a Ray cluster (:mod:`.distributed`), the
    rows written here in input order as in a local run."""
    images = collect_images(config.images) if not config.detections else []
    log_record = ProvenanceLog(  # first: a --log that exists already costs no model load
        config.log,
        model=config.model,
        pretrained=config.pretrained,
        index=config.index,
        n_images=len(images),
    )
    encoder, score, notes, info = open_scoring(config)
    log_record.record["runtime"] = encoder.runtime
    log_record.record.update(info)
    workers = auto_workers(config.workers)
    if config.detections:
        from .megadetector import predict_detections

        def predict_rows(crops):
            return score_images(encoder, crops, score, config.batch_size, workers)[0]

        return predict_detections(config, predict_rows, log_record, notes)
    keys = [image_key(image, i) for i, image in enumerate(images)]
    print_ = None
    if config.checkpoint_every or config.resume:
        print_ = fingerprint(keys, encoder.weights, **_predict_settings(config, encoder))
    progress = Progress.open(
        config.output,
        (ROWS_BODY,),
        keys=keys,
        every=config.checkpoint_every,
        resume=config.resume,
        print_=print_,
        step=config.batch_size,
    )
    try:
        body = progress.handles[ROWS_BODY]
        if config.ray_address:
            from .distributed import ray_predict_batches

            batches = ray_predict_batches(config, images, progress.done)
        else:
            batches = scored_batches(encoder, images, score, config, progress.done, workers)
        for start, groups in batches:
            if start != progress.done:
                raise TaxoclipError(f"predict: batch at image {start}, expected {progress.done}")
            body.write(b"".join(json.dumps(group).encode() + b"\n" for group in groups))
            progress.advance(start + len(groups))
        if progress.done != len(images):
            raise TaxoclipError(f"predict: {progress.done} of {len(images)} images written")
        rows_body = progress.finish_bodies()[ROWS_BODY]

        def rows_of():
            for line in read_lines(rows_body):
                yield from json.loads(line)

        emit_rows(rows_of, config.format, config.output)
        failed = {r[PRED_FILENAME_KEY]: r[ERROR_KEY] for r in rows_of() if ERROR_KEY in r}
        rows = list(rows_of()) if config.keep_rows else []
    except BaseException:
        progress.close(keep=True)
        raise
    progress.close()
    log_record.finish(n_failed=len(failed), failed=failed, output=config.output or "stdout")
    return PredictResult(n_images=len(images), failed=sorted(failed), rows=rows, notes=notes)


def open_scoring(config: PredictConfig):
    """The encoder of a prediction config, its scoring function (features, keys → rows
    per image), notes for stderr and what the provenance log records of the mode. Each
    Ray actor of a ``--ray-address`` run calls this too."""
    tree = not (config.cls or config.bins)
    encoder = open_encoder(
        config.model,
        config.runtime,
        squash=squashes(config.model, tree),
        device=config.device,
        pretrained=config.pretrained,
    )
    if tree:
        score, notes, info = _tree_of_life(config, encoder)
        return encoder, score, notes, info
    bins = read_bins(config.bins) if config.bins else None
    labels = read_classes(config.cls) if config.cls else list(bins or {})
    scorer = LabelScorer.for_model(encoder, labels, bins)
    info = {
        "mode": "custom labels" if config.cls else "bins",
        **({"classes": scorer.labels} if config.cls else {"bins": config.bins}),
    }

    def score(features, keys):
        return scorer.rows(features, keys, config.top_k)

    return encoder, score, [], info


def scored_batches(
    encoder, images: list, score, config, start: int, workers: int
) -> Iterator[tuple[int, list[list[dict]]]]:
    """Per batch of ``--batch-size`` images from image ``start`` (a batch boundary): the
    position of its first image and each image's rows (score's, or one error row)."""
    keys = [image_key(image, i) for i, image in enumerate(images)]
    for indices, features, errors in iter_features(
        encoder, images[start:], config.batch_size, workers, True, config.progress
    ):
        groups = {p: [error_row(keys[start + p], reason)] for p, reason in errors.items()}
        if features is not None:
            scored = score(features, [keys[start + i] for i in indices])
            groups.update(zip(indices, scored, strict=True))
        positions = sorted(groups)
        yield start + positions[0], [groups[p] for p in positions]


def _predict_settings(config: PredictConfig, encoder) -> dict:
    """What a resumed prediction must share with the checkpointed one, besides the inputs
    and the weights: every flag that changes a row or the output's format, the files
    those flags name by their content."""
    return {
        "--model": config.model,
        "--pretrained": config.pretrained,
        "--runtime": encoder.runtime,
        "--device": config.device,
        "--batch-size": config.batch_size,
        "--format": config.format,
        "--rank": config.rank if not (config.cls or config.bins) else None,
        "--k": config.top_k,
        "--min-prob": config.min_prob,
        "--deepest-rank": config.deepest_rank,
        "--cls": config.cls if not config.cls or not Path(config.cls).is_file() else None,
        **{
            flag: content_digest(value)
            for flag, value in (
                ("--cls file", config.cls),
                ("--bins", config.bins),
                ("--subset", config.subset),
                ("--region", config.region),
                ("--deny", config.deny),
                ("--index", config.index),
            )
        },
    }


def _tree_of_life(config: PredictConfig, encoder):
    """The scoring function of a tree-of-life prediction (``--rank``/``--deepest-rank``,
    ``--subset``, ``--region``/``--deny``), the notes it has for stderr and what the log
    records of it."""
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
    info: dict = {}
    if config.region or config.deny:  # resolved against the index as --subset left it
        from .region import resolve_region

        region, notes = resolve_region(scorer.index, config.region, config.deny)
        scorer = scorer.with_landing(region.landing)
        info["region"] = region.summary()
    info.update(
        mode="tree of life", rank=config.rank, subset=config.subset, n_taxa=len(scorer.index)
    )
    if config.deepest_rank is not None:
        threshold = check_threshold(config.deepest_rank)

        def score(features, keys):
            return scorer.deepest_rows(features, keys, threshold, config.min_prob)
    else:

        def score(features, keys):
            return scorer.rows(features, keys, config.rank, config.top_k, config.min_prob)

    return score, notes, info


def run_embed(config: EmbedConfig) -> EmbedResult:
    """Encode every image and write the embeddings to ``config.output`` (features appended
    to a body batch by batch, the output written from it at the end: :mod:`.stream`)."""
    images = collect_images(config.images)
    encoder = open_encoder(
        config.model,
        config.runtime,
        squash=squashes(config.model, False),
        device=config.device,
        pretrained=config.pretrained,
    )
    keys = [image_key(image, i) for i, image in enumerate(images)]
    print_ = None
    if config.checkpoint_every or config.resume:
        settings = {
            "--model": config.model,
            "--pretrained": config.pretrained,
            "--runtime": encoder.runtime,
            "--device": config.device,
            "--batch-size": config.batch_size,
            "--normalize": config.normalize,
        }
        print_ = fingerprint(keys, encoder.weights, **settings)
    progress = Progress.open(
        config.output,
        (FEATURES_BODY, KEYS_BODY),
        keys=keys,
        every=config.checkpoint_every,
        resume=config.resume,
        print_=print_,
        step=config.batch_size,
    )
    try:
        if config.ray_address:
            from .distributed import ray_embed_batches

            batches = ray_embed_batches(config, images, progress.done)
        else:
            batches = encoded_batches(encoder, images, config, progress.done)
        for start, count, ok_keys, features in batches:
            if start != progress.done:
                raise TaxoclipError(f"embed: batch at image {start}, expected {progress.done}")
            if ok_keys:
                progress.handles[FEATURES_BODY].write(features.astype(np.float32).tobytes())
                progress.handles[KEYS_BODY].write(
                    b"".join(json.dumps(key).encode() + b"\n" for key in ok_keys)
                )
            progress.advance(start + count)
        if progress.done != len(images):
            raise TaxoclipError(f"embed: {progress.done} of {len(images)} images written")
        bodies = progress.finish_bodies()
        n_ok = sum(1 for _ in read_lines(bodies[KEYS_BODY]))
        size = bodies[FEATURES_BODY].stat().st_size
        dim = size // (4 * n_ok) if n_ok else int(encoder.embed_dim or 0)

        def blocks(rows: int = 4096):
            with bodies[FEATURES_BODY].open("rb") as handle:
                names = read_lines(bodies[KEYS_BODY])
                while True:
                    block = np.fromfile(handle, np.float32, rows * dim).reshape(-1, dim)
                    if not len(block):
                        return
                    yield [json.loads(next(names)) for _ in range(len(block))], block

        written = write_embedding_stream(config.output, config.model, blocks, n_ok, dim)
    except BaseException:
        progress.close(keep=True)
        raise
    progress.close()
    return EmbedResult(n_images=len(images), n_ok=n_ok, dim=int(dim), written=list(written))


def encoded_batches(
    encoder, images: list, config: EmbedConfig, start: int
) -> Iterator[tuple[int, int, list[str], np.ndarray | None]]:
    """Per batch from image ``start`` (a batch boundary): its first position, its size,
    the keys of the images that could be read and their features."""
    keys = [image_key(image, i) for i, image in enumerate(images)]
    for indices, features, errors in iter_features(
        encoder,
        images[start:],
        config.batch_size,
        auto_workers(config.workers),
        config.normalize,
        config.progress,
    ):
        positions = sorted([*indices, *errors])
        ok = [keys[start + i] for i in indices]
        yield start + positions[0], len(positions), ok, features


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
