import open_clip
import pytest
import torch
import torch.nn.functional as F

from taxoclip.models import create_model
from taxoclip.train.loss import clip_loss
from taxoclip.train.model import ContrastiveModel


def features(n=12, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        F.normalize(torch.randn(n, d, generator=g), dim=-1),
        F.normalize(torch.randn(n, d, generator=g), dim=-1),
    )


def test_plain_loss_equals_open_clips():
    images, texts = features()
    scale = torch.tensor(14.3)
    reference = open_clip.ClipLoss()(images, texts, scale)
    assert torch.allclose(clip_loss(images, texts, scale), reference, atol=1e-6)


def test_caption_positives_reduce_to_plain_loss_when_captions_differ():
    images, texts = features()
    scale = torch.tensor(10.0)
    distinct = torch.arange(12)
    assert torch.allclose(
        clip_loss(images, texts, scale, distinct), clip_loss(images, texts, scale)
    )


def test_identical_captions_are_positives_not_negatives():
    images, texts = features(n=3)
    texts = torch.stack([texts[0], texts[0], texts[2]])  # pairs 0 and 1 share a caption
    ids = torch.tensor([7, 7, 9])
    scale = torch.tensor(5.0)
    logits = scale * images @ texts.T
    target = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    by_hand = (
        -(target * logits.log_softmax(1)).sum(1).mean()
        - (target * logits.T.log_softmax(1)).sum(1).mean()
    ) / 2
    assert torch.allclose(clip_loss(images, texts, scale, ids), by_hand, atol=1e-6)


@pytest.fixture
def tiny_model():
    return create_model("taxoclip-vit-t32", seed=0)


def test_replay_projection_starts_as_a_copy_and_bio_path_is_unchanged(tiny_model):
    clip = tiny_model.model.eval()
    module = ContrastiveModel(clip, replay=True).eval()
    g = torch.Generator().manual_seed(1)
    bio, replay = torch.randn(4, 3, 32, 32, generator=g), torch.randn(3, 3, 32, 32, generator=g)
    tokens = tiny_model.tokenizer(["a photo of a", "a photo of b", "c", "d"])
    replay_tokens = tiny_model.tokenizer(["x", "y", "z"])
    with torch.no_grad():
        out = module(bio, tokens, replay, replay_tokens)
        plain = ContrastiveModel(clip)(bio, tokens)
        assert torch.allclose(out["image"], plain["image"], atol=1e-5)
        assert torch.allclose(out["text"], plain["text"], atol=1e-5)
        # Same initial projection: replay features are what the bio head would give.
        reference = F.normalize(clip.encode_image(replay), dim=-1)
        assert torch.allclose(out["replay_image"], reference, atol=1e-5)
    assert module.replay_proj is not clip.visual.proj
    assert "replay_proj" not in clip.state_dict()  # never exported with the model


def test_bio_and_replay_are_never_negatives_of_each_other(tiny_model):
    module = ContrastiveModel(tiny_model.model, replay=True)
    g = torch.Generator().manual_seed(2)
    bio, replay = torch.randn(4, 3, 32, 32, generator=g), torch.randn(4, 3, 32, 32, generator=g)
    tokens = tiny_model.tokenizer(["a", "b", "c", "d"])
    out = module(bio, tokens, replay, tiny_model.tokenizer(["e", "f", "g", "h"]))
    bio_loss = clip_loss(out["image"], out["text"], out["logit_scale"])
    # The bio term does not see replay features at all: no gradient flows to them.
    grads = torch.autograd.grad(
        bio_loss, [out["replay_image"], out["replay_text"]], allow_unused=True, retain_graph=True
    )
    assert grads == (None, None)
    total = bio_loss + clip_loss(out["replay_image"], out["replay_text"], out["logit_scale"])
    total.backward()
    assert module.replay_proj.grad is not None and module.replay_proj.grad.abs().sum() > 0
