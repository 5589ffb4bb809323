"""Zero-shot classifiers from label text, whatever runs the text tower (torch-free).

Each label through the 80 OpenAI templates, normalised, averaged, renormalised (CLIP's
and pybioclip's recipe). Fast: captions are tokenised once per chunk of labels, sorted by
length, and run in passes trimmed to the longest caption of the pass — the text tower is
causal and reads only the end token, so the padding after it is never needed (the same
features to float rounding, and far less work: taxon captions are 20-40 of 77 tokens).

``encoder`` is anything with ``tokenize(texts) -> int64 (N, context)`` and
``encode_tokens(tokens (N, L), normalize) -> float32 (N, D)``: the ONNX text tower
(:class:`taxoclip.runtime.onnx.OnnxTextEncoder`) or the torch one
(:class:`taxoclip.runtime.text_torch.TorchTextEncoder`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .templates import OPENAI_IMAGENET_TEMPLATES

#: Captions per forward pass (sorted by length, each pass trimmed to its longest).
TEXT_PASS = 1024
#: Labels tokenised at a time (bounds the token matrix of a 100k-taxa index).
LABEL_CHUNK = 2048


def class_text_matrix_np(encoder, labels: Sequence[str], progress: bool = False,
                         per_pass: int = TEXT_PASS) -> np.ndarray:  # fmt: skip
    """(D, N) float32, one L2-normalised column per label."""
    from tqdm import tqdm

    templates = OPENAI_IMAGENET_TEMPLATES
    n_templates = len(templates)
    columns = []
    with tqdm(total=len(labels), unit="taxa", desc="index", disable=not progress) as bar:
        for start in range(0, len(labels), LABEL_CHUNK):
            chunk = list(labels[start : start + LABEL_CHUNK])
            texts = [t.format(label) for label in chunk for t in templates]
            tokens = np.asarray(encoder.tokenize(texts), dtype=np.int64)
            lengths = tokens.argmax(axis=1) + 1  # the end token has the highest id
            order = np.argsort(lengths, kind="stable")
            features = None
            for first in range(0, len(texts), per_pass):
                rows = order[first : first + per_pass]
                out = encoder.encode_tokens(tokens[rows, : int(lengths[rows].max())], True)
                if features is None:
                    features = np.empty((len(texts), out.shape[1]), dtype=np.float32)
                features[rows] = out
            mean = features.reshape(len(chunk), n_templates, -1).mean(axis=1)
            norms = np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
            columns.append((mean / norms).astype(np.float32))
            bar.update(len(chunk))
    return np.ascontiguousarray(np.concatenate(columns).T)
