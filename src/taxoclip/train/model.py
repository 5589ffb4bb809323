"""The trained module: an open_clip CLIP plus, for experience replay, a second visual
projection initialised from the first.

Bio and replay images go through the vision trunk in one pass; bio features leave
through the original projection, replay features through the copy (BioCLIP 2, section
on experience replay). Only the original projection is part of the exported model.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from taxoclip.errors import UsageError


@contextmanager
def _trunk_only(visual: nn.Module):
    """Run open_clip's VisionTransformer without its final ``pooled @ proj``."""
    proj = visual._parameters["proj"]
    visual._parameters["proj"] = None
    try:
        yield proj
    finally:
        visual._parameters["proj"] = proj


class ContrastiveModel(nn.Module):
    """What DDP wraps: forward returns normalised features and the exp'd logit scale."""

    def __init__(self, clip: nn.Module, replay: bool = False) -> None:
        super().__init__()
        self.clip = clip
        self.replay_proj: nn.Parameter | None = None
        if replay:
            proj = getattr(clip.visual, "proj", None)
            if not isinstance(proj, torch.Tensor):
                raise UsageError(
                    "experience replay needs a vision tower with a linear output projection "
                    f"(open_clip's VisionTransformer); {type(clip.visual).__name__} has none"
                )
            self.replay_proj = nn.Parameter(proj.detach().clone())

    def forward(
        self,
        images: torch.Tensor,
        tokens: torch.Tensor,
        replay_images: torch.Tensor | None = None,
        replay_tokens: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        clip = self.clip
        scale = clip.logit_scale.exp()
        if replay_images is None:
            return {
                "image": F.normalize(clip.encode_image(images), dim=-1),
                "text": F.normalize(clip.encode_text(tokens), dim=-1),
                "logit_scale": scale,
            }
        n_bio, n_bio_text = images.shape[0], tokens.shape[0]
        with _trunk_only(clip.visual) as proj:
            pooled = clip.visual(torch.cat([images, replay_images]))
        texts = F.normalize(clip.encode_text(torch.cat([tokens, replay_tokens])), dim=-1)
        return {
            "image": F.normalize(pooled[:n_bio] @ proj, dim=-1),
            "text": texts[:n_bio_text],
            "replay_image": F.normalize(pooled[n_bio:] @ self.replay_proj, dim=-1),
            "replay_text": texts[n_bio_text:],
            "logit_scale": scale,
        }
