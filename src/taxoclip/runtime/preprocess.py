"""Image preprocessing in numpy + PIL, and the normalisation constants (defined here once).

Reproduces the torch paths exactly (to float rounding), so an ONNX tower reads the same
pixels a torch one does:

- ``crop`` — open_clip's validation transform: resize the shortest side to S (PIL,
  bicubic or bilinear as the config says), centre crop S×S, scale to [0, 1], normalise;
- ``squash`` — pybioclip's tree-of-life transform: ``ToTensor`` → ``Resize((S, S),
  antialias=True)`` → normalise. torch's antialiased bilinear resize is PIL's algorithm
  on float values, so it is done here per channel on PIL ``F`` (float32) images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from taxoclip.errors import UsageError

#: CLIP's (OpenAI's) pixel mean and std, open_clip's default for every model without its
#: own: the one definition (torch encoder, ONNX preprocessing, training transforms).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocess:
    """open_clip's validation transform (``crop``) or pybioclip's squash, in numpy + PIL."""

    size: int
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    squash: bool = False
    interpolation: str = "bicubic"

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any], squash: bool = False) -> Preprocess:
        """From an open_clip ``preprocess_cfg`` (``size``, ``mean``, ``std``, …)."""
        size = cfg.get("size", 224)
        if isinstance(size, (list, tuple)):
            if len(set(size)) != 1:
                raise UsageError(f"non-square input size {size} is not supported by ONNX export")
            size = size[0]
        mode = cfg.get("resize_mode") or "shortest"
        if mode == "longest" and not squash:
            raise UsageError("resize_mode 'longest' is not supported by the ONNX runtime")
        interpolation = cfg.get("interpolation") or "bicubic"
        return cls(
            size=int(size),
            mean=tuple(float(v) for v in (cfg.get("mean") or OPENAI_MEAN)),
            std=tuple(float(v) for v in (cfg.get("std") or OPENAI_STD)),
            squash=squash or mode == "squash",
            interpolation="bilinear" if interpolation == "bilinear" else "bicubic",
        )

    def __call__(self, image: Image.Image) -> np.ndarray:
        image = image.convert("RGB")
        size = self.size
        if self.squash:
            if image.size == (size, size):
                pixels = np.asarray(image, dtype=np.float32) / 255.0
            else:
                # torch's Resize(antialias=True) on the float tensor == PIL's bilinear on
                # float ("F") images, one channel at a time.
                channels = np.asarray(image, dtype=np.float32) / 255.0
                pixels = np.stack(
                    [
                        np.asarray(
                            Image.fromarray(
                                np.ascontiguousarray(channels[..., c]), mode="F"
                            ).resize((size, size), Image.Resampling.BILINEAR)
                        )
                        for c in range(3)
                    ],
                    axis=-1,
                )
        else:
            width, height = image.size
            if (width, height) != (size, size):
                resample = (
                    Image.Resampling.BILINEAR
                    if self.interpolation == "bilinear"
                    else Image.Resampling.BICUBIC
                )
                if width <= height:  # torchvision's Resize(int): shortest side to size
                    new_w, new_h = size, int(size * height / width)
                else:
                    new_w, new_h = int(size * width / height), size
                if (new_w, new_h) != (width, height):
                    image = image.resize((new_w, new_h), resample)
                width, height = image.size
                top = int(round((height - size) / 2.0))
                left = int(round((width - size) / 2.0))
                image = image.crop((left, top, left + size, top + size))
            pixels = np.asarray(image, dtype=np.float32) / 255.0
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1), dtype=np.float32)

    def batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = np.empty((len(images), 3, self.size, self.size), dtype=np.float32)
        for i, image in enumerate(images):
            out[i] = self(image)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "mean": list(self.mean),
            "std": list(self.std),
            "squash": self.squash,
            "interpolation": self.interpolation,
        }


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows to unit length, as ``torch.nn.functional.normalize`` (eps 1e-12)."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)
