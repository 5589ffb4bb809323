"""The torch image encoder behind the same :class:`~taxoclip.runtime.onnx.ImageEncoder`
interface as the ONNX one (used by ``serve`` and the benchmarks to switch runtimes)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from taxoclip.models import LoadedModel, load_model

from .onnx import OPENAI_MEAN, OPENAI_STD


class TorchImageEncoder:
    """``model.encode_image`` under ``inference_mode``; preprocessing as predict's torch path
    (open_clip's validation transform, or pybioclip's squash with ``squash=True``)."""

    runtime = "torch"

    def __init__(self, spec: str | os.PathLike | LoadedModel, *, squash: bool = False,
                 device: str = "cpu", pretrained: str | None = None) -> None:  # fmt: skip
        self.loaded = spec if isinstance(spec, LoadedModel) else load_model(
            spec, pretrained=pretrained, device=device)  # fmt: skip
        self.model = self.loaded.model.eval()
        self.device = torch.device(device)
        self.squash = squash
        size = self.loaded.image_size
        self.image_size = size if isinstance(size, int) else size[0]
        self.embed_dim = self.loaded.embed_dim
        self.logit_scale = float(self.model.logit_scale.exp().item())
        cfg = self.loaded.preprocess_cfg
        self._mean = torch.tensor(cfg.get("mean") or OPENAI_MEAN).view(3, 1, 1)
        self._std = torch.tensor(cfg.get("std") or OPENAI_STD).view(3, 1, 1)

    def _tensor(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        if not self.squash:
            return self.loaded.preprocess_val(image)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        pixels = pixels.float().div_(255.0).unsqueeze(0)
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            pixels = F.interpolate(pixels, size=(self.image_size, self.image_size),
                                   mode="bilinear", align_corners=False, antialias=True)  # fmt: skip
        return (pixels[0] - self._mean) / self._std

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self._tensor(image).numpy().astype(np.float32, copy=False)

    @torch.inference_mode()
    def encode_pixels(self, pixels: np.ndarray, normalize: bool = True) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        features = self.model.encode_image(batch).float()
        if normalize:
            features = F.normalize(features, dim=-1)
        return features.cpu().numpy()

    @torch.inference_mode()
    def encode(self, images: Sequence[Image.Image], normalize: bool = True) -> np.ndarray:
        if not images:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        batch = torch.stack([self._tensor(image) for image in images]).to(self.device)
        features = self.model.encode_image(batch).float()
        if normalize:
            features = F.normalize(features, dim=-1)
        return features.cpu().numpy()
