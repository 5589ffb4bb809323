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
import torch

from taxoclip.files import cache_dir, replacing
from taxoclip.models import LoadedModel
from taxoclip.predict.images import encode_images

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
    encoder=None,
) -> Features:
    """Encode ``paths`` (L2-normalised), reading and writing the cache when one is given.

    With ``encoder`` (an ONNX image encoder, ``--runtime onnx``) the images go through it
    instead of ``loaded.model``, decoded by the same torch-free code as predict's ONNX
    path; its runtime is part of the cache key.
    """
    key = None
    if cache_dir is not None:
        key = f"{fingerprint or model_fingerprint(loaded)}-{data_fingerprint(paths)}"
        if encoder is not None:
            key += f"-{encoder.runtime}"
        cached = Path(cache_dir) / f"{key}.npz"
        if cached.is_file():
            with np.load(cached, allow_pickle=False) as data:
                errors = dict(
                    zip(data["error_index"].tolist(), data["error_reason"].tolist(), strict=True)
                )
                log.info("features from cache %s", cached)
                return Features(data["values"], data["ok"], errors)
    if encoder is not None:
        features = _encoder_features(encoder, paths, batch_size, workers)
    else:
        encoded = encode_images(loaded.model, loaded.preprocess_val, paths, batch_size, workers,
                                device, normalize=True, progress=progress)  # fmt: skip
        values = (
            encoded.features.numpy().astype(np.float32)
            if encoded.ok_indices
            else np.zeros((0, 0), np.float32)
        )
        features = Features(
            values, np.asarray(encoded.ok_indices, dtype=np.int64), dict(encoded.errors)
        )
    if cache_dir is not None and key is not None:
        # A file handle, not a path: np.savez would append ".npz" to the temporary's name.
        with replacing(Path(cache_dir) / f"{key}.npz") as tmp, tmp.open("wb") as handle:
            np.savez(handle, values=features.values, ok=features.ok,
                     error_index=np.asarray(list(features.errors), dtype=np.int64),
                     error_reason=np.asarray(list(features.errors.values()), dtype=str))  # fmt: skip
    return features


def _encoder_features(encoder, paths: list[str], batch_size: int, workers: int) -> Features:
    from taxoclip.predict.imageio import iter_decoded

    chunks, ok, errors = [], [], {}
    for indices, pixels, failed in iter_decoded(paths, encoder.preprocess, batch_size, workers):
        errors.update(failed)
        if pixels:
            chunks.append(encoder.encode_pixels(np.stack(pixels), normalize=True))
            ok.extend(indices)
    values = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    return Features(values, np.asarray(ok, dtype=np.int64), errors)


@torch.inference_mode()
def class_embeddings(loaded: LoadedModel, texts: list[str], device: str = "cpu") -> np.ndarray:
    """(D, C) zero-shot classifier: each text through the 80 templates (see predict)."""
    from taxoclip.predict.index import encode_class_texts

    return encode_class_texts(loaded.model, loaded.tokenizer, texts, device).numpy()
