"""The torch image tower behind the one encoder interface (:class:`.encode.ImageEncoder`).

The same calls as the ONNX encoder: ``preprocess`` one decoded image to a float32
(3, S, S) array (in the decoding threads), ``encode_pixels`` a stacked batch. Preprocessing
is open_clip's validation transform, or pybioclip's tree-of-life squash with ``squash``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from taxoclip.models import LoadedModel, load_model

from .preprocess import OPENAI_MEAN, OPENAI_STD


class SquashTransform:
    """pybioclip's tree-of-life preprocessing in torch: ``ToTensor`` → ``Resize((S, S),
    antialias=True)`` → ``Normalize`` (the reference :class:`.preprocess.Preprocess`'s
    squash reproduces in numpy)."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy())
        pixels = pixels.permute(2, 0, 1).float().div_(255.0).unsqueeze(0)
        if pixels.shape[-2:] != (self.size, self.size):
            pixels = F.interpolate(
                pixels,
                size=(self.size, self.size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return (pixels[0] - self.mean) / self.std


class TorchImageEncoder:
    """``model.encode_image`` under ``inference_mode`` on ``device``; numpy in and out."""

    runtime = text_runtime = "torch"

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        *,
        tokenizer=None,
        device: str | torch.device = "cpu",
        squash: bool = False,
        embed_dim: int = 0,
        image_size: int = 0,
        weights: str | os.PathLike | None = None,
    ) -> None:
        self.model = model
        self.transform = preprocess
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.squash = squash
        self.embed_dim = embed_dim
        self.image_size = image_size
        self.weights = weights  # a file or an hf-hub: spec: keys the label cache
        self.logit_scale = float(model.logit_scale.exp().item())

    @classmethod
    def open(
        cls,
        spec: str | os.PathLike | LoadedModel,
        *,
        squash: bool = False,
        device: str = "cpu",
        pretrained: str | None = None,
    ) -> TorchImageEncoder:
        """From any model spec (or a model already loaded)."""
        loaded = (
            spec
            if isinstance(spec, LoadedModel)
            else load_model(spec, pretrained=pretrained, device=device)
        )
        size = loaded.image_size
        size = size if isinstance(size, int) else size[0]
        transform = loaded.preprocess_val
        if squash:
            cfg = loaded.preprocess_cfg
            transform = SquashTransform(
                size, cfg.get("mean") or OPENAI_MEAN, cfg.get("std") or OPENAI_STD
            )
        encoder = cls(
            loaded.model.eval(),
            transform,
            tokenizer=loaded.tokenizer,
            device=device,
            squash=squash,
            embed_dim=loaded.embed_dim,
            image_size=size,
            weights=loaded.weights,
        )
        encoder.loaded = loaded
        return encoder

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.transform(image.convert("RGB")).numpy().astype(np.float32, copy=False)

    @torch.inference_mode()
    def encode_pixels(self, pixels: np.ndarray, normalize: bool = True) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        features = self.model.encode_image(batch).float()
        if normalize:
            features = F.normalize(features, dim=-1)
        return features.cpu().numpy()

    def encode(self, images: Sequence[Image.Image], normalize: bool = True) -> np.ndarray:
        if not images:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self.encode_pixels(np.stack([self.preprocess(im) for im in images]), normalize)

    def text_encoder(self):
        """This model's text tower, sharing the weights already in memory."""
        from .text_torch import TorchTextEncoder

        return TorchTextEncoder(self.model, self.tokenizer, self.device)
