"""The prefix key/value cache: captions that share a prefix encode it once, and the index
equals full-context ``encode_text`` within 1e-5 cosine, in torch and in ONNX Runtime."""

import copy
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from taxoclip.models import load_model
from taxoclip.runtime import prefix
from taxoclip.runtime.onnx import TEXT_STEP_ONNX, ExportedModel, OnnxTextEncoder
from taxoclip.runtime.templates import OPENAI_IMAGENET_TEMPLATES as T
from taxoclip.runtime.text import class_text_matrix, encode_captions
from taxoclip.runtime.text_torch import TextStep, TorchTextEncoder, can_step

LINEAGE = "Animalia Chordata Aves Passeriformes Corvidae"
LABELS = [
    f"{LINEAGE} Corvus corax common raven",
    f"{LINEAGE} Corvus cornix hooded crow",  # shares the genus with the raven
    f"{LINEAGE} Pica pica magpie",  # the family
    "Plantae Tracheophyta Magnoliopsida Rosales Rosaceae Rosa canina dog rose",  # nothing
    "red fox",
    "red fox cub",  # "red fox" is a prefix of it
    "Red   Fox",  # tokenises as "red fox": encoded once
    "a very long label " * 20,  # truncated at the context
    "a very long label " * 21,  # ... to the same ids as the one above
    "x",
]


@pytest.fixture(scope="module")
def loaded(exported_t32):
    return load_model(exported_t32[0])


@pytest.fixture(scope="module")
def texts():
    return [t.format(label) for label in LABELS for t in T[:12]]


def full_context(loaded, texts):
    """Each caption through ``encode_text`` at the full context, normalised."""
    with torch.inference_mode():
        return F.normalize(loaded.model.encode_text(loaded.tokenizer(texts)).float(), dim=-1)


class Counting:
    """A text encoder that counts the caption positions its blocks compute."""

    def __init__(self, inner):
        self.inner, self.runtime, self.kv_shape = inner, inner.runtime, inner.kv_shape
        self.positions, self.calls = 0, 0

    def tokenize(self, texts):
        return self.inner.tokenize(texts)

    def encode_block(self, tokens, positions, past, mask, pool):
        self.calls += 1
        self.positions += int((tokens != 0).sum())  # block ids, padding excluded
        return self.inner.encode_block(tokens, positions, past, mask, pool)


def trie_nodes(rows: np.ndarray) -> int:
    """Distinct non-empty prefixes of the rows, each up to its end token."""
    prefixes = set()
    for row in rows:
        ids = tuple(row[: int(row.argmax()) + 1])
        prefixes.update(ids[:n] for n in range(1, len(ids) + 1))
    return len(prefixes)


def test_the_plan_computes_each_trie_node_once_and_reads_the_rest():
    rows = np.array(  # sorted, as np.unique gives them; 9 is the end token
        [[1, 2, 3, 9, 0], [1, 2, 4, 5, 9], [1, 2, 4, 9, 0], [1, 7, 9, 0, 0], [6, 9, 0, 0, 0]]
    )
    (window,) = prefix.plan_windows(rows, rows.argmax(1) + 1, keep_tokens=100)
    assert window.start.tolist() == [0, 2, 3, 1, 0]
    assert window.computed == trie_nodes(rows) == 12
    assert window.wave.tolist() == [0, 1, 2, 1, 0]
    # row 2 reads [0, 2) from row 0 and [2, 3) from row 1; row 0 keeps its first 2 positions
    assert window.pieces[2] == [(0, 0, 2), (1, 2, 3)]
    assert window.keep.tolist() == [2, 3, 3, 1, 0]
    for row, pieces in enumerate(window.pieces):  # the pieces cover [0, start) in order
        ends = [0] + [hi for _, _, hi in pieces]
        assert [lo for _, lo, _ in pieces] == ends[:-1] and ends[-1] == window.start[row]
    # a small budget closes windows early; each new window starts from scratch
    windows = prefix.plan_windows(rows, rows.argmax(1) + 1, keep_tokens=2)
    assert [len(w.start) for w in windows] == [2, 3] and windows[1].start[0] == 0
    assert all(int((w.keep - w.start).clip(0).sum()) <= 2 for w in windows)
    assert sum(w.computed for w in windows) == 12 + 3  # row 2 recomputes [0, 3)


@pytest.mark.parametrize("budgets", [None, (64, 6 * 2048, 1 << 16)])
def test_torch_prefix_path_equals_the_full_context(loaded, texts, budgets, monkeypatch):
    """Shared and unshared prefixes, duplicates, a caption that is a prefix of another,
    different lengths, truncation at the context; with tiny budgets too (many windows,
    one-row passes)."""
    if budgets:
        names = ("BLOCK_TOKENS", "KV_CACHE_BYTES", "PAST_BYTES")  # t32: 2048 bytes a position
        for name, value in zip(names, budgets, strict=True):
            monkeypatch.setattr(prefix, name, value)
    encoder = Counting(TorchTextEncoder(loaded.model, loaded.tokenizer))
    tokens = encoder.tokenize(texts)
    got = encode_captions(encoder, tokens)
    np.testing.assert_allclose(got, full_context(loaded, texts).numpy(), atol=3e-6)
    distinct = np.unique(tokens, axis=0)
    whole = int(sum(row.argmax() + 1 for row in distinct))
    if budgets is None:  # one window: each trie node once
        assert encoder.positions == trie_nodes(distinct) < 0.7 * whole
    else:
        assert trie_nodes(distinct) < encoder.positions < whole
        assert encoder.calls > 2 * len(distinct) // 3


def test_index_columns_equal_full_context_torch_within_1e_5_cosine(exported_t32, loaded):
    every = [t.format(label) for label in LABELS for t in T]
    old = full_context(loaded, every).view(len(LABELS), len(T), -1).mean(1)
    old = F.normalize(old, dim=-1).T.numpy()
    exported = ExportedModel.open(exported_t32[0])
    torch_text = TorchTextEncoder(loaded.model, loaded.tokenizer)
    onnx_text = OnnxTextEncoder(exported)
    assert torch_text.kv_shape == onnx_text.kv_shape == prefix.KVShape(2, 2, 64)
    for encoder in (torch_text, onnx_text):
        fast = class_text_matrix(encoder, LABELS)
        assert fast.shape == old.shape and fast.dtype == np.float32
        assert (old * fast).sum(0).min() > 1 - 1e-5, encoder.runtime
        np.testing.assert_allclose(fast, old, atol=2e-6)


def test_the_onnx_step_graph_equals_torch_on_the_same_block(exported_t32, loaded):
    """``text_step.onnx`` against :class:`TextStep`: a block on top of a past, ragged."""
    onnx = OnnxTextEncoder(ExportedModel.open(exported_t32[0]))
    rows = np.unique(
        onnx.tokenize(["a photo of a red fox.", "a photo of a red fox cub.", "x"]), axis=0
    )
    (window,) = prefix.plan_windows(rows, rows.argmax(1) + 1, 1000)
    batch = np.arange(3)
    tokens, positions, mask, pool = prefix.block_inputs(rows, window, batch, rows.argmax(1))
    shape, depth = onnx.kv_shape, mask.shape[2] - tokens.shape[1]
    size = (shape.layers, 2, 3, shape.heads, depth, shape.head_dim)
    past = np.random.default_rng(0).normal(size=size).astype(np.float32)
    inputs = (tokens, positions, past, mask, pool)
    ours = onnx.encode_block(*inputs)
    with torch.inference_mode():
        theirs = TextStep(loaded.model)(*map(torch.from_numpy, inputs))
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b.numpy(), atol=2e-5)


def test_the_export_records_the_step_graph_and_its_agreement(exported_t32):
    record = json.loads((exported_t32[0] / "export.json").read_text())
    assert TEXT_STEP_ONNX in record["files"]
    assert record["text_step"]["kv_shape"] == {"layers": 2, "heads": 2, "head_dim": 64}
    assert record["agreement"]["text_step_fp32_min_cosine"] > 0.99999
    # int8 text has no step graph: it runs whole captions
    assert OnnxTextEncoder(ExportedModel.open(exported_t32[0]), int8=True).kv_shape is None


def test_an_old_export_without_the_step_graph_indexes_as_before(exported_t32, loaded, tmp_path):
    old = tmp_path / "old-export"
    shutil.copytree(exported_t32[0], old, ignore=shutil.ignore_patterns(TEXT_STEP_ONNX, "*.int8.*"))
    encoder = OnnxTextEncoder(ExportedModel.open(old))
    assert encoder.kv_shape is None
    new = OnnxTextEncoder(ExportedModel.open(exported_t32[0]))
    np.testing.assert_allclose(
        class_text_matrix(encoder, LABELS), class_text_matrix(new, LABELS), atol=2e-6
    )


class Wrapped(torch.nn.Module):
    """An attention module TextStep does not know (the same numbers, another interface)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)


def test_a_tower_that_cannot_take_a_cache_keeps_whole_captions(loaded, texts):
    """A block whose attention TextStep cannot run on past keys/values: no ``kv_shape``,
    whole captions (today's path), equal to the model's own full context."""
    model = copy.deepcopy(loaded.model)
    block = model.transformer.resblocks[0]
    block.attn = Wrapped(block.attn)
    assert not can_step(model)
    encoder = TorchTextEncoder(model, loaded.tokenizer)
    assert encoder.kv_shape is None
    got = encode_captions(encoder, encoder.tokenize(texts))
    np.testing.assert_allclose(got, full_context(loaded, texts).numpy(), atol=3e-6)
