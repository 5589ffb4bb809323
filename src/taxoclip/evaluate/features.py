"""Image features for evaluation, cached on disk by model and data.

The key hashes the model's weights (so a retrained model never reads stale features),
its preprocessing, and every image's path, size and modification time; a re-run on the
same model and data loads the ``.npz`` instead of encoding again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taxoclip.files import cache_dir, replacing
from taxoclip.models import LoadedModel
from taxoclip.runtime.encode import ImageEncoder, encode_images
from taxoclip.runtime.text import class_text_matrix

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return cache_dir("features")


def model_fingerprint(loaded: LoadedModel) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(loaded.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(repr(sorted(loaded.preprocess_cfg.items())).encode())
    return digest.hexdigest()[:24]


def data_fingerprint(paths: list[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.encode())
        try:
            stat = os.stat(path)
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        except OSError:
            digest.update(b"missing")
    return digest.hexdigest()[:24]


@dataclass
class Features:
    """Features of the readable images (rows follow ``ok``) and why the others failed."""

    values: np.ndarray  # (n_ok, D) float32, L2-normalised
    ok: np.ndarray  # (n_ok,) positions into the input list
    errors: dict[int, str]

    def full(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(mask of readable inputs, features in input order for those)."""
        mask = np.zeros(n, dtype=bool)
        mask[self.ok] = True
        return mask, self.values


def image_features(
    loaded: LoadedModel,
    paths: list[str],
    cache_dir: Path | None = None,
    batch_size: int = 64,
    workers: int = 0,
    device: str = "cpu",
    progress: bool = False,
    fingerprint: str | None = None,
    encoder: ImageEncoder | None = None,
) -> Features:
    """Encode ``paths`` (L2-normalised) through the engine's one encoding loop, reading and
    writing the cache when one is given.

    The images go through ``encoder`` when given (the ONNX image tower, ``--runtime
    onnx``; its runtime is then part of the cache key), else through ``loaded``'s torch
    tower with open_clip's validation transform.
    """
    key = None
    if cache_dir is not None:
        key = f"{fingerprint or model_fingerprint(loaded)}-{data_fingerprint(paths)}"
        if encoder is not None and encoder.runtime != "torch":
            key += f"-{encoder.runtime}"
        cached = Path(cache_dir) / f"{key}.npz"
        if cached.is_file():
            with np.load(cached, allow_pickle=False) as data:
                errors = dict(
                    zip(data["error_index"].tolist(), data["error_reason"].tolist(), strict=True)
                )
                log.info("features from cache %s", cached)
                return Features(data["values"], data["ok"], errors)
    if encoder is None:
        from taxoclip.runtime.torch_encoder import TorchImageEncoder

        encoder = TorchImageEncoder.open(loaded, device=device)
    encoded = encode_images(encoder, paths, batch_size, workers, normalize=True, progress=progress)
    features = Features(encoded.features, np.asarray(encoded.ok, dtype=np.int64), encoded.errors)
    if cache_dir is not None and key is not None:
        # A file handle, not a path: np.savez would append ".npz" to the temporary's name.
        with replacing(Path(cache_dir) / f"{key}.npz") as tmp, tmp.open("wb") as handle:
            np.savez(
                handle,
                values=features.values,
                ok=features.ok,
                error_index=np.asarray(list(features.errors), dtype=np.int64),
                error_reason=np.asarray(list(features.errors.values()), dtype=str),
            )
    return features


def class_embeddings(loaded: LoadedModel, texts: list[str], device: str = "cpu") -> np.ndarray:
    """(D, C) zero-shot classifier: each text through the 80 templates (the engine's
    :func:`~taxoclip.runtime.text.class_text_matrix`, as predict's custom labels)."""
    from taxoclip.runtime.text_torch import TorchTextEncoder

    return class_text_matrix(TorchTextEncoder(loaded.model, loaded.tokenizer, device), texts)
