"""Text classifiers from label text, whatever runs the text tower, and their cache.

:func:`class_text_matrix` is the one way a list of labels becomes a (D, C) classifier
(the tree-of-life index, custom labels, eval's classes, the model filter's prompts,
validation's captions): each label through the templates (the 80 OpenAI ones unless
told otherwise), normalised, averaged, renormalised — CLIP's and pybioclip's recipe. Fast
(:func:`encode_captions`): captions are tokenised once per chunk of labels and identical
token rows (repeated labels, labels that differ only in case or spacing, captions
truncated alike) are encoded once. Where the encoder runs on a key/value cache
(``kv_shape`` and ``encode_block``: torch's :class:`~.text_torch.TextStep`, an export's
``text_step.onnx``) each shared prefix — the template's words, then the lineage shared by
a clade's taxa — is encoded once and the rest of each caption on top of it
(:mod:`.prefix`); otherwise the distinct rows are sorted by length and run in passes
trimmed to the longest caption of the pass. Both are exact for the causal, end-token-pooled
towers (the same features to float rounding; taxon captions are 20-40 of 77 tokens, most
of them shared). Through the exported ONNX text tower where the model has one
(``open_text_encoder``'s runtime choice).

:func:`label_matrix` caches a label set's classifier under ``$XDG_CACHE_HOME/taxoclip/labels``
(``~/.cache/…``), keyed by the SHA-256 of the model's weights file, the text runtime, the
labels and the templates: a repeated ``--cls`` call on the same model reads it and runs no
text tower. Random-weight models (no weights file) are never cached.
``TAXOCLIP_LABEL_CACHE=0`` turns the cache off. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from taxoclip.files import cache_dir as files_cache_dir
from taxoclip.files import replacing, write_text_atomic

from .prefix import encode_prefixed
from .templates import OPENAI_IMAGENET_TEMPLATES

log = logging.getLogger(__name__)

#: Whole captions per forward pass (sorted by length, each pass trimmed to its longest),
#: unless the encoder prefers another (``pass_size``: the ONNX text tower runs smaller
#: passes faster, torch larger ones; bench/text_index.py). The prefix path sizes its
#: passes by positions instead (:data:`~.prefix.BLOCK_TOKENS`).
TEXT_PASS = 1024
#: Labels tokenised at a time (bounds the token matrix of a 100k-taxa index).
LABEL_CHUNK = 2048
#: One caption per label, the label itself (prompts and captions written out in full).
AS_GIVEN = ("{}",)


def class_text_matrix(
    encoder,
    labels: Sequence[str],
    templates: Sequence[str] = OPENAI_IMAGENET_TEMPLATES,
    progress: bool = False,
    batch_size: int | None = None,
) -> np.ndarray:
    """(D, C) float32, one L2-normalised column per label. ``encoder`` is a
    :class:`~.encode.TextEncoder`; a forward pass runs at most ``batch_size`` labels ×
    templates captions, and on the whole-caption path its ``pass_size`` (:data:`TEXT_PASS`
    if it names none)."""
    from tqdm import tqdm

    n_templates = len(templates)
    limit = batch_size * n_templates if batch_size else None
    per_pass = int(getattr(encoder, "pass_size", TEXT_PASS))
    if limit:
        per_pass = min(per_pass, limit)
    columns = []
    with tqdm(total=len(labels), unit="taxa", desc="index", disable=not progress) as bar:
        for start in range(0, len(labels), LABEL_CHUNK):
            chunk = list(labels[start : start + LABEL_CHUNK])
            texts = [t.format(label) for label in chunk for t in templates]
            features = encode_captions(encoder, encoder.tokenize(texts), per_pass, limit)
            mean = features.reshape(len(chunk), n_templates, -1).mean(axis=1)
            norms = np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
            columns.append((mean / norms).astype(np.float32))
            bar.update(len(chunk))
    return np.ascontiguousarray(np.concatenate(columns).T)


def token_lengths(tokens: np.ndarray) -> np.ndarray:
    """Positions each row uses: one past its last non-padding (non-zero) id. For open_clip's
    tokenizers that is the end token (padding is 0); a tokenizer that pads with something
    else is never trimmed (its rows use the whole context)."""
    width = tokens.shape[1]
    return width - np.argmax(tokens[:, ::-1] != 0, axis=1)


def encode_captions(
    encoder, tokens: np.ndarray, per_pass: int = TEXT_PASS, max_rows: int | None = None
) -> np.ndarray:
    """L2-normalised float32 (N, D) features of token rows (N, context) through ``encoder``:
    identical rows (captions that tokenise alike) are encoded once. With a key/value cache
    (the encoder's ``kv_shape`` is not None) shared prefixes are encoded once
    (:func:`~.prefix.encode_prefixed`, at most ``max_rows`` captions a pass); otherwise the
    distinct rows are sorted by length and run ``per_pass`` at a time, each pass trimmed to
    its longest row. Both exact for the causal, end-token-pooled towers (the padding after
    the end token is never read; tests hold them equal to the full context)."""
    tokens = np.ascontiguousarray(tokens, dtype=np.int64)
    if len(tokens) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    unique, inverse = np.unique(tokens, axis=0, return_inverse=True)  # sorted rows
    inverse = np.asarray(inverse).reshape(-1)
    if getattr(encoder, "kv_shape", None) is not None:
        return encode_prefixed(encoder, unique, max_rows)[inverse]
    lengths = token_lengths(unique)
    order = np.argsort(lengths, kind="stable")
    features = None
    for first in range(0, len(unique), max(1, per_pass)):
        rows = order[first : first + max(1, per_pass)]
        width = int(lengths[rows].max())
        out = encoder.encode_tokens(np.ascontiguousarray(unique[rows, :width]), True)
        if features is None:
            features = np.empty((len(unique), out.shape[1]), dtype=np.float32)
        features[rows] = out
    return features[inverse]


def label_matrix(image_encoder, labels: Sequence[str]) -> np.ndarray:
    """The (D, C) 80-template classifier of ``labels`` for ``image_encoder``'s model,
    through its own text tower (:meth:`~.encode.ImageEncoder.text_encoder`), cached."""
    return cached_label_matrix(
        image_encoder.weights,
        image_encoder.text_runtime,
        labels,
        lambda todo: class_text_matrix(image_encoder.text_encoder(), todo),
    )


# --------------------------------------------------------------------------- the cache


def cache_dir() -> Path:
    return files_cache_dir("labels")


HUB_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _hub_weights(spec: str) -> Path | None:
    """The cached weights file of an ``hf-hub:`` model, if it is in the local cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in HUB_WEIGHT_NAMES:
        found = try_to_load_from_cache(spec.removeprefix("hf-hub:"), name)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def weights_digest(path: str | os.PathLike | None) -> str | None:
    """SHA-256 of a weights file (a path, or an ``hf-hub:`` spec's cached file), remembered
    by (path, size, mtime) so a large model is hashed once; None when there is no such file
    (random weights, an open_clip tag)."""
    if path and os.fspath(path).startswith("hf-hub:"):
        path = _hub_weights(os.fspath(path))
        if path is not None:
            blob = path.resolve()
            if len(blob.name) == 64 and all(c in "0123456789abcdef" for c in blob.name):
                return blob.name  # the Hub's blob name is the SHA-256 of its content
    if not path or not Path(path).is_file():
        return None
    path = Path(path).resolve()
    stat = path.stat()
    memo_key = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    memo_file = cache_dir() / "weights.json"
    try:
        memo = json.loads(memo_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    if memo_key in memo:
        return memo[memo_key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    memo[memo_key] = digest.hexdigest()
    try:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(memo_file, json.dumps(memo, indent=0))
    except OSError as exc:  # a read-only home is no reason to fail a prediction
        log.debug("cannot remember the weights digest: %s", exc)
    return memo[memo_key]


def label_key(weights: str, text_runtime: str, labels: Sequence[str]) -> str:
    digest = hashlib.sha256()
    payload = {
        "weights": weights,
        "runtime": text_runtime,
        "labels": list(labels),
        "templates": list(OPENAI_IMAGENET_TEMPLATES),
    }
    digest.update(json.dumps(payload, ensure_ascii=False).encode())
    return digest.hexdigest()[:32]


def cached_label_matrix(
    weights_file: str | os.PathLike | None,
    text_runtime: str,
    labels: Sequence[str],
    compute: Callable[[list[str]], np.ndarray],
) -> np.ndarray:
    """``compute(labels)`` — the (D, C) classifier — read from or written to the cache."""
    enabled = os.environ.get("TAXOCLIP_LABEL_CACHE", "1") not in ("0", "off", "false")
    digest = weights_digest(weights_file) if enabled else None
    if digest is None:
        return compute(list(labels))
    path = cache_dir() / digest[:16] / f"{label_key(digest, text_runtime, labels)}.npy"
    if path.is_file():
        try:
            matrix = np.load(path)
            if matrix.ndim == 2 and matrix.shape[1] == len(labels):
                log.info("label embeddings from cache %s", path)
                return matrix
        except (OSError, ValueError):
            pass  # unreadable: recompute and overwrite
    matrix = np.ascontiguousarray(compute(list(labels)), dtype=np.float32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp, tmp.open("wb") as handle:
            np.save(handle, matrix)
    except OSError as exc:
        log.debug("cannot cache label embeddings: %s", exc)
    return matrix
