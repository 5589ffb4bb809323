"""The theory check of issue 7: where the CLIP loss can move an image embedding.

For the symmetric InfoNCE loss over a batch, with the embeddings L2-normalised inside the
loss, the gradient with respect to one RAW image embedding x_i is

    ∂L/∂x_i = (I − x̂_i x̂_iᵀ) / ‖x_i‖ · s Σ_j c_ij t̂_j,

a combination of the batch's text embeddings, minus its own component along x̂_i. So it
lies in span{t_1, …, t_B, x_i}: one step of training can only move an image inside the
span of the texts it is contrasted with and of itself. With D > B + 1 that span is a
proper subspace and the check below is not trivial; a random vector misses it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from taxoclip.train.loss import clip_loss

DTYPE = torch.float64
CASES = [(4, 16, 0), (8, 32, 1), (16, 40, 2), (5, 7, 3)]  # (batch B, dimension D, seed)


def plain_clip_loss(images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor):
    """The paper's loss, written out: normalise, score, cross-entropy both ways."""
    images = images / images.norm(dim=1, keepdim=True)
    texts = texts / texts.norm(dim=1, keepdim=True)
    logits = scale * images @ texts.T
    labels = torch.arange(len(images))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def taxoclip_loss(images, texts, scale, caption_ids=None):
    """taxoclip's own loss, fed the normalised features as the model does."""
    return clip_loss(F.normalize(images, dim=1), F.normalize(texts, dim=1), scale, caption_ids)


def residual_ratio(vector: torch.Tensor, spanning: torch.Tensor) -> float:
    """‖vector − its projection on span(rows of ``spanning``)‖ / ‖vector‖."""
    basis, _ = torch.linalg.qr(spanning.T)  # D × k, orthonormal columns
    residual = vector - basis @ (basis.T @ vector)
    return float(residual.norm() / vector.norm())


def batch(b: int, d: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(b, d, generator=generator, dtype=DTYPE) * 3.0
    texts = torch.randn(b, d, generator=generator, dtype=DTYPE) * 2.0
    scale = torch.tensor(1 / 0.07, dtype=DTYPE)
    return images.requires_grad_(True), texts, scale


def gradient_of_one_image(loss_fn, b, d, seed, index, **kwargs):
    images, texts, scale = batch(b, d, seed)
    loss = loss_fn(images, texts, scale, **kwargs)
    (grad,) = torch.autograd.grad(loss, images)
    return loss.detach(), grad[index], images.detach(), texts


@pytest.mark.parametrize(("b", "d", "seed"), CASES)
def test_taxoclip_loss_is_the_plain_clip_loss(b, d, seed):
    mine, grad_mine, _, _ = gradient_of_one_image(taxoclip_loss, b, d, seed, index=0)
    plain, grad_plain, _, _ = gradient_of_one_image(plain_clip_loss, b, d, seed, index=0)
    assert float(abs(mine - plain)) < 1e-12
    torch.testing.assert_close(grad_mine, grad_plain, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("loss_fn", [plain_clip_loss, taxoclip_loss])
@pytest.mark.parametrize(("b", "d", "seed"), CASES)
def test_image_gradient_lies_in_the_span_of_texts_and_itself(loss_fn, b, d, seed):
    assert d > b + 1  # a proper subspace: the check is not trivial
    for index in (0, b - 1):
        _, grad, images, texts = gradient_of_one_image(loss_fn, b, d, seed, index)
        assert float(grad.norm()) > 1e-6  # there is a gradient to check
        spanning = torch.cat([texts, images[index : index + 1]])
        assert residual_ratio(grad, spanning) < 1e-10
        # the image's own direction is needed: texts alone leave a residual
        assert residual_ratio(grad, texts) > 1e-4


def test_the_span_holds_with_identical_captions_counted_as_positives():
    b, d = 6, 24
    caption_ids = torch.tensor([0, 1, 0, 2, 1, 3])
    _, grad, images, texts = gradient_of_one_image(
        taxoclip_loss, b, d, seed=7, index=2, caption_ids=caption_ids
    )
    assert residual_ratio(grad, torch.cat([texts, images[2:3]])) < 1e-10


@pytest.mark.parametrize(("b", "d", "seed"), CASES)
def test_a_random_vector_does_not_lie_in_that_span(b, d, seed):
    """The control: expected residual ≈ sqrt(1 − (B + 1)/D), far from 1e-10."""
    images, texts, _ = batch(b, d, seed)
    generator = torch.Generator().manual_seed(1000 + seed)
    random = torch.randn(d, generator=generator, dtype=DTYPE)
    ratio = residual_ratio(random, torch.cat([texts, images[:1].detach()]))
    assert ratio > 0.1
    assert ratio == pytest.approx((1 - (b + 1) / d) ** 0.5, abs=0.4)
