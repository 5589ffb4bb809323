"""Contrastive losses: CLIP InfoNCE, distributed as open_clip's local loss.

Pure functions of features; the only I/O is the optional all-gather. Under DDP each rank
scores its own images against every rank's texts (and its texts against every image),
with labels offset by the rank, and ``all_gather`` keeps the graph so gradients reach
the features' owners. Averaged over ranks this is exactly the single-process loss of
the global batch, which is what the torchrun test checks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gather_features(features: torch.Tensor) -> torch.Tensor:
    """Concatenate ``features`` from every rank, in rank order, keeping gradients."""
    import torch.distributed as dist
    import torch.distributed.nn.functional as dist_fn

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features
    return torch.cat(dist_fn.all_gather(features), dim=0)


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    caption_ids: torch.Tensor | None = None,
    distributed: bool = False,
) -> torch.Tensor:
    """Symmetric InfoNCE over L2-normalised features; ``logit_scale`` is the exp'd scale.

    ``caption_ids`` (one integer per pair, equal for identical captions) makes identical
    captions positives of each other rather than false negatives: the target becomes
    uniform over them. Without it this is the plain CLIP loss of the paper.
    """
    local = image_features.shape[0]
    if distributed:
        all_images = gather_features(image_features)
        all_texts = gather_features(text_features)
        offset = _rank() * local
    else:
        all_images, all_texts, offset = image_features, text_features, 0
    logits_per_image = logit_scale * image_features @ all_texts.T
    logits_per_text = logit_scale * text_features @ all_images.T
    if caption_ids is None:
        labels = torch.arange(offset, offset + local, device=image_features.device)
        return (
            F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)
        ) / 2
    all_ids = gather_features(caption_ids) if distributed else caption_ids
    same = (caption_ids[:, None] == all_ids[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    loss_image = -(targets * F.log_softmax(logits_per_image, dim=1)).sum(dim=1).mean()
    loss_text = -(targets * F.log_softmax(logits_per_text, dim=1)).sum(dim=1).mean()
    return (loss_image + loss_text) / 2
