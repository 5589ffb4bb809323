"""The recipe's training augmentation, seeded per sample instead of by torch's global RNG.

RandomResizedCrop with scale (0.9, 1.0) and aspect ratio (3/4, 4/3), bicubic, then
OpenAI normalisation, on tensors: the same sampling as torchvision's ``RandomResizedCrop``, but
driven by a ``numpy`` generator the caller seeds from ``(seed, step, sample)``. That
makes augmentation independent of which DataLoader worker draws a sample (exact resume)
and avoids ``torch.manual_seed`` per sample, which costs ~1.7 ms here (it also seeds
every accelerator backend).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from taxoclip.runtime.preprocess import OPENAI_MEAN, OPENAI_STD  # defined once

_MODES = ("bicubic", "bilinear", "nearest")


class RandomResizedCropTransform:
    """``(PIL image, numpy Generator) → normalised (3, H, W) float tensor``."""

    def __init__(
        self,
        size: int | tuple[int, int],
        scale: tuple[float, float] = (0.9, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        interpolation: str | None = "bicubic",
        squash: bool = False,
    ) -> None:
        self.height, self.width = (size, size) if isinstance(size, int) else tuple(size)
        self.scale, self.log_ratio = scale, (math.log(ratio[0]), math.log(ratio[1]))
        self.mean = torch.tensor(mean or OPENAI_MEAN).view(3, 1, 1)
        self.std = torch.tensor(std or OPENAI_STD).view(3, 1, 1)
        self.mode = interpolation if interpolation in _MODES else "bicubic"
        self.squash = squash

    def crop_box(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, ...]:
        """torchvision's sampling: 10 tries at a random area and aspect, else centre crop."""
        area = width * height
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*self.log_ratio))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return left, top, left + w, top + h
        in_ratio = width / height
        if in_ratio < math.exp(self.log_ratio[0]):
            w, h = width, round(width / math.exp(self.log_ratio[0]))
        elif in_ratio > math.exp(self.log_ratio[1]):
            h, w = height, round(height * math.exp(self.log_ratio[1]))
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
        return left, top, left + w, top + h

    def __call__(self, image: Image.Image | torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """``image``: a PIL image or a decoded (3, H, W) uint8 tensor."""
        if isinstance(image, Image.Image):
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
            image = torch.from_numpy(pixels).permute(2, 0, 1)
        pixels = image.unsqueeze(0).float()
        if self.squash:
            pixels = self._resize(pixels, self.height, self.width)
        left, top, right, bottom = self.crop_box(pixels.shape[-1], pixels.shape[-2], rng)
        pixels = self._resize(pixels[..., top:bottom, left:right], self.height, self.width)
        tensor = pixels[0].clamp_(0.0, 255.0).div_(255.0)
        return tensor.sub_(self.mean).div_(self.std)

    def _resize(self, pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if pixels.shape[-2:] == (height, width):
            return pixels
        return F.interpolate(
            pixels,
            size=(height, width),
            mode=self.mode,
            antialias=self.mode != "nearest",
            align_corners=False if self.mode != "nearest" else None,
        )
