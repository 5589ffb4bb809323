"""Model filters: drop images a model says are not organism photos (labels, documents, …).

A filter is anything with a ``name`` and a ``__call__`` from a batch of PIL images to one
string per image: "" to keep, or the reason to drop it (recorded at stage
``model_filter``). :class:`ZeroShotOrganismFilter` is the one shipped: zero-shot CLIP
against organism and non-organism prompts, with any open_clip model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from taxoclip.errors import UsageError
from taxoclip.runtime.encode import encode_images
from taxoclip.runtime.scoring import LabelScorer
from taxoclip.runtime.text import AS_GIVEN, class_text_matrix
from taxoclip.runtime.torch_encoder import TorchImageEncoder

ORGANISM_PROMPTS = (
    "a photo of an animal",
    "a photo of a plant",
    "a photo of a fungus",
    "a photo of an insect",
    "a photo of a bird",
    "a photo of a fish",
    "a photo of a mammal",
    "a photo of a reptile",
    "a photo of an amphibian",
    "a photo of a flower",
    "a photo of a tree",
    "a photo of a spider",
)
NON_ORGANISM_PROMPTS = (
    "a photo of a printed label",
    "a scanned document",
    "a microscope slide",
    "a page of handwritten text",
    "a ruler and a colour chart",
    "a blank image",
)


@runtime_checkable
class ModelFilter(Protocol):
    """Decides per image: "" keeps it, any other string is the reason it is dropped."""

    name: str

    def __call__(self, images: Sequence[Image.Image]) -> list[str]: ...


class ZeroShotOrganismFilter:
    """Drops images whose zero-shot probability of *not* showing an organism is too high.

    Each image is scored against every prompt (cosine similarity × the model's
    ``logit_scale``), a softmax runs over all prompts together, and p(non-organism) is the
    mass on the non-organism prompts; the image is dropped when it exceeds ``threshold``
    (so 0 drops everything, 1 nothing). The images go through the engine's encoding loop
    and its scorer (:mod:`taxoclip.runtime`), as every prediction does; the prompt
    embeddings are computed once, here.
    """

    name = "zero_shot_organism"

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[Sequence[str]], torch.Tensor],
        device: str = "cpu",
        threshold: float = 0.5,
        batch_size: int = 64,
        organism_prompts: Sequence[str] = ORGANISM_PROMPTS,
        non_organism_prompts: Sequence[str] = NON_ORGANISM_PROMPTS,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise UsageError(f"model filter threshold must be within 0..1, got {threshold}")
        if batch_size < 1:
            raise UsageError(f"model filter batch size must be at least 1, got {batch_size}")
        if not organism_prompts or not non_organism_prompts:
            raise UsageError("model filter needs organism and non-organism prompts")
        self.encoder = TorchImageEncoder(
            model.to(device).eval(), preprocess, tokenizer=tokenizer, device=device
        )
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        self.prompts = (*organism_prompts, *non_organism_prompts)
        self.first_non_organism = len(organism_prompts)
        text = class_text_matrix(self.encoder.text_encoder(), self.prompts, templates=AS_GIVEN)
        self.scorer = LabelScorer(text, self.prompts, self.encoder.logit_scale)

    @classmethod
    def from_model(cls, spec: str, device: str = "cpu", **options: Any) -> ZeroShotOrganismFilter:
        """Build from any model spec :func:`taxoclip.models.load_model` accepts.

        Refuses a spec that loads without weights (a bare architecture name): a randomly
        initialised model would drop records at random.
        """
        from taxoclip.models import load_model

        loaded = load_model(spec, device=device)
        if loaded.weights is None:
            raise UsageError(
                f"model filter {spec!r}: no trained weights (an architecture name alone is "
                "initialised at random); give a model folder, run dir, weights file or hf-hub:"
            )
        return cls(loaded.model, loaded.preprocess_val, loaded.tokenizer, device, **options)

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Softmax over all prompts, shape (n images, n prompts), float64."""
        if not images:
            return np.zeros((0, len(self.prompts)))
        encoded = encode_images(self.encoder, list(images), self.batch_size)
        if encoded.errors:  # decoded images: only a broken one gets here
            position, reason = next(iter(encoded.errors.items()))
            raise ValueError(f"model filter: image {position} cannot be encoded ({reason})")
        return self.scorer.probs(encoded.features).astype(np.float64)

    def __call__(self, images: Sequence[Image.Image]) -> list[str]:
        probabilities = self.probabilities(images)
        non_organism = probabilities[:, self.first_non_organism :]
        p_non = np.clip(non_organism.sum(axis=1), 0.0, 1.0)
        top = self.first_non_organism + non_organism.argmax(axis=1)
        return [
            f"model_filter: not an organism photo (p={p:.2f} {self.prompts[t]!r})"
            if p > self.threshold
            else ""
            for p, t in zip(p_non.tolist(), top.tolist(), strict=True)
        ]
