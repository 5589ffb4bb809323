"""The text side: captions de-duplicated, sorted by length and trimmed, equal to the full
context; the index the same through the torch and the ONNX text towers."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from taxoclip.models import load_model
from taxoclip.runtime.onnx import ExportedModel, OnnxTextEncoder
from taxoclip.runtime.templates import OPENAI_IMAGENET_TEMPLATES as T
from taxoclip.runtime.text import class_text_matrix, encode_captions, token_lengths
from taxoclip.runtime.text_torch import TorchTextEncoder

LABELS = [
    "Animalia Chordata Aves Passeriformes Corvidae Corvus corax common raven",
    "red fox",
    "Red   Fox",  # tokenises as "red fox": encoded once
    "red fox",
    "a very long label " * 20,  # truncated at the context
    "a very long label " * 21,  # ... to the same ids as the one above
    "x",
]


class Counting:
    """A text encoder that records the token arrays it is given."""

    def __init__(self, inner):
        self.inner, self.runtime, self.calls = inner, inner.runtime, []

    def tokenize(self, texts):
        return self.inner.tokenize(texts)

    def encode_tokens(self, tokens, normalize=True):
        self.calls.append(tokens)
        return self.inner.encode_tokens(tokens, normalize)


@pytest.fixture(scope="module")
def loaded(exported_t32):
    return load_model(exported_t32[0])


def full_context(loaded, texts):
    """Each caption through ``encode_text`` at the full context, normalised."""
    with torch.inference_mode():
        return F.normalize(loaded.model.encode_text(loaded.tokenizer(texts)).float(), dim=-1)


def test_token_lengths_end_at_the_end_token(loaded):
    tokens = loaded.tokenizer(["a bird", "a photo of the small red fox in the snow", ""]).numpy()
    assert token_lengths(tokens).tolist() == (tokens.argmax(1) + 1).tolist()
    padded_otherwise = np.full((2, 5), 7)  # a tokenizer whose padding is not 0: never trimmed
    assert token_lengths(padded_otherwise).tolist() == [5, 5]


@pytest.mark.parametrize("per_pass", [1, 3, 1024])
def test_captions_are_deduplicated_trimmed_and_equal_the_full_context(loaded, per_pass):
    texts = [t.format(label) for label in LABELS for t in T[:5]]
    encoder = Counting(TorchTextEncoder(loaded.model, loaded.tokenizer))
    tokens = encoder.tokenize(texts)
    got = encode_captions(encoder, tokens, per_pass)
    distinct = len(np.unique(tokens, axis=0))
    assert distinct == 4 * 5  # the repeated, re-cased and truncated labels count once
    assert sum(len(c) for c in encoder.calls) == distinct
    context = tokens.shape[1]
    for call in encoder.calls:  # each pass is trimmed to its longest caption
        assert call.shape[1] == int(token_lengths(call).max())
    if per_pass < distinct:  # several passes: the short captions run short
        assert min(c.shape[1] for c in encoder.calls) < context // 2
    assert max(c.shape[1] for c in encoder.calls) == context  # the truncated ones
    np.testing.assert_allclose(got, full_context(loaded, texts).numpy(), atol=2e-6)


def test_index_columns_equal_torch_within_1e_5_cosine_on_every_runtime(exported_t32, loaded):
    """The fast torch and ONNX paths against the plain full-context recipe."""
    texts = [t.format(label) for label in LABELS for t in T]
    old = full_context(loaded, texts).view(len(LABELS), len(T), -1).mean(1)
    old = F.normalize(old, dim=-1).T.numpy()
    exported = ExportedModel.open(exported_t32[0])
    torch_text = TorchTextEncoder(loaded.model, loaded.tokenizer)
    for encoder in (torch_text, OnnxTextEncoder(exported)):
        fast = class_text_matrix(encoder, LABELS)
        assert fast.shape == old.shape and fast.dtype == np.float32
        assert (old * fast).sum(0).min() > 1 - 1e-5, encoder.runtime
    # identical labels give identical columns
    np.testing.assert_array_equal(fast[:, 1], fast[:, 3])


def test_the_onnx_text_tower_reads_trimmed_tokens_exactly(exported_t32, loaded):
    """The exported tower at any length equals torch at the full context (causal: the
    padding after the end token is never read)."""
    texts = ["a bird", "a photo of the small red fox in the snow", "x"]
    onnx = OnnxTextEncoder(ExportedModel.open(exported_t32[0]))
    tokens = onnx.tokenize(texts)
    reference = full_context(loaded, texts).numpy()
    for width in (int(token_lengths(tokens).max()), 20, tokens.shape[1]):
        np.testing.assert_allclose(onnx.encode_tokens(tokens[:, :width]), reference, atol=2e-6)


def test_auto_indexes_with_the_fp32_text_tower_even_where_images_run_int8(
    exported_t32, monkeypatch
):
    """auto's int8 bars are the image tower's: an index stays within 1e-5 of torch's."""
    from taxoclip.runtime import cache, encode

    monkeypatch.setattr(cache, "auto_runtime", lambda record: "onnx-int8")
    folder = str(exported_t32[0])
    assert encode.open_text_encoder(folder, "auto").runtime == "onnx"
    assert encode.open_text_encoder(folder, "onnx-int8").runtime == "onnx-int8"
