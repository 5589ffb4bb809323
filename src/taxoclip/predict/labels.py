"""Custom labels: reading ``--cls`` / ``--bins``, and their text embeddings cached per model.

Torch-free, shared by both runtimes. A label set's (D, C) classifier is cached under
``$XDG_CACHE_HOME/taxoclip/labels`` (``~/.cache/…``), keyed by the SHA-256 of the model's
weights file, the text runtime, the labels and the 80 templates: a repeated ``--cls`` call
on the same model reads it and runs no text tower. Random-weight models (no weights file)
are never cached. ``TAXOCLIP_LABEL_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from taxoclip.errors import InputError
from taxoclip.files import cache_dir as files_cache_dir
from taxoclip.files import replacing, write_text_atomic

from .templates import OPENAI_IMAGENET_TEMPLATES

log = logging.getLogger(__name__)


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
    payload = {"weights": weights, "runtime": text_runtime, "labels": list(labels),
               "templates": list(OPENAI_IMAGENET_TEMPLATES)}  # fmt: skip
    digest.update(json.dumps(payload, ensure_ascii=False).encode())
    return digest.hexdigest()[:32]


def cached_label_matrix(weights_file: str | os.PathLike | None, text_runtime: str,
                        labels: Sequence[str],
                        compute: Callable[[list[str]], np.ndarray]) -> np.ndarray:  # fmt: skip
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
