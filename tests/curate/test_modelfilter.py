"""The zero-shot organism filter with a real (tiny, random) open_clip model, offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from taxoclip.curate.modelfilter import (
    NON_ORGANISM_PROMPTS,
    ORGANISM_PROMPTS,
    ModelFilter,
    ZeroShotOrganismFilter,
)
from taxoclip.errors import UsageError
from taxoclip.models import load_model
from tests.helpers import saved_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return saved_model(tmp_path_factory.mktemp("model") / "tiny", seed=3)


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_model(str(model_dir))


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    pictures = [Image.new("RGB", (48, 40), tuple(int(v) for v in rng.integers(0, 256, 3)))]
    pictures += [
        Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)) for i in range(9)
    ]
    pictures.append(Image.new("L", (64, 64), 255))  # grey input is converted by preprocess
    return pictures


def reference_probabilities(loaded, images) -> np.ndarray:
    """The same softmax written out by hand with open_clip's model API."""
    prompts = [*ORGANISM_PROMPTS, *NON_ORGANISM_PROMPTS]
    with torch.no_grad():
        text = loaded.model.encode_text(loaded.tokenizer(prompts))
        image = loaded.model.encode_image(torch.stack([loaded.preprocess_val(im) for im in images]))
        text = text / text.norm(dim=-1, keepdim=True)
        image = image / image.norm(dim=-1, keepdim=True)
        logits = loaded.model.logit_scale.exp() * image @ text.T
    logits64 = logits.double().numpy()
    exp = np.exp(logits64 - logits64.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_decisions_match_a_hand_computed_softmax(model_dir, loaded, images):
    reference = reference_probabilities(loaded, images)
    p_non = reference[:, len(ORGANISM_PROMPTS) :].sum(axis=1)
    ranked = np.sort(p_non)  # a threshold midway between two images, some on each side
    threshold = float(ranked[len(ranked) // 2 - 1] + ranked[len(ranked) // 2]) / 2
    model_filter = ZeroShotOrganismFilter.from_model(
        str(model_dir), threshold=threshold, batch_size=4
    )
    np.testing.assert_allclose(model_filter.probabilities(images), reference, atol=1e-5)
    reasons = model_filter(images)
    assert len(reasons) == len(images)
    for reason, p, row in zip(reasons, p_non, reference, strict=True):
        if p > threshold:
            top = NON_ORGANISM_PROMPTS[int(np.argmax(row[len(ORGANISM_PROMPTS) :]))]
            assert reason == f"model_filter: not an organism photo (p={p:.2f} {top!r})"
        else:
            assert reason == ""
    assert 0 < sum(bool(r) for r in reasons) < len(images)


def test_threshold_zero_drops_all_and_one_drops_none(loaded, images):
    drop_all = ZeroShotOrganismFilter(
        loaded.model, loaded.preprocess_val, loaded.tokenizer, threshold=0.0
    )
    keep_all = ZeroShotOrganismFilter(
        loaded.model, loaded.preprocess_val, loaded.tokenizer, threshold=1.0
    )
    assert all(
        reason.startswith("model_filter: not an organism photo") for reason in drop_all(images)
    )
    assert keep_all(images) == [""] * len(images)
    assert drop_all([]) == []


def test_filter_satisfies_the_protocol_and_rejects_bad_settings(loaded):
    model_filter = ZeroShotOrganismFilter(loaded.model, loaded.preprocess_val, loaded.tokenizer)
    assert isinstance(model_filter, ModelFilter)
    assert model_filter.name == "zero_shot_organism"
    for bad in ({"threshold": 1.5}, {"threshold": -0.1}, {"batch_size": 0}):
        with pytest.raises(UsageError):
            ZeroShotOrganismFilter(loaded.model, loaded.preprocess_val, loaded.tokenizer, **bad)


def test_from_model_refuses_a_model_without_weights():
    with pytest.raises(UsageError, match="no trained weights"):
        ZeroShotOrganismFilter.from_model("taxoclip-vit-t32")
