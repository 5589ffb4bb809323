"""Zero-shot top-1 on an evaluation folder, to watch a run learn (not the eval suite).

Each class is described by its ``taxon`` caption when the folder has lineage columns,
else by ``a photo of <class>.``; one caption per class, no template ensemble. The
published protocol (80 templates, every benchmark) lives in ``taxoclip eval``. Images go
through the engine's encoding loop and scorer (:mod:`taxoclip.runtime`), as every
prediction does; one that cannot be read counts as a miss.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from taxoclip.errors import InputError
from taxoclip.runtime.encode import encode_images
from taxoclip.runtime.scoring import class_logits
from taxoclip.runtime.text import AS_GIVEN, class_text_matrix
from taxoclip.runtime.torch_encoder import TorchImageEncoder
from taxoclip.taxonomy import Lineage, render_text


def class_captions(rows: list[dict[str, str]]) -> dict[str, str]:
    captions: dict[str, str] = {}
    for row in rows:
        label = row["class"]
        if label in captions:
            continue
        lineage = Lineage.from_mapping({k: v for k, v in row.items() if k != "class"})
        text = render_text(lineage, "", "taxon") if not lineage.is_empty else f"a photo of {label}."
        captions[label] = text
    return captions


def zero_shot_top1(
    clip: torch.nn.Module,
    preprocess,
    tokenizer,
    folder: Path,
    device: torch.device,
    batch_size: int = 256,
    where: dict[str, str] | None = None,
) -> float:
    """Top-1 over the folder's images (or the rows whose columns match ``where``), with
    the classes those rows name as the candidates."""
    metadata = folder / "metadata.csv"
    if not metadata.is_file():
        raise InputError(f"validation folder {folder} has no metadata.csv")
    with metadata.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if where:
        rows = [r for r in rows if all(r.get(k) == v for k, v in where.items())]
    if not rows:
        raise InputError(f"{metadata} lists no images" + (f" with {where}" if where else ""))
    was_training = clip.training
    encoder = TorchImageEncoder(clip.eval(), preprocess, tokenizer=tokenizer, device=device)
    captions = class_captions(rows)
    text = class_text_matrix(encoder.text_encoder(), list(captions.values()), AS_GIVEN)
    encoded = encode_images(encoder, [str(folder / row["filepath"]) for row in rows], batch_size)
    predicted = class_logits(encoded.features, text, 1.0).argmax(axis=1)
    position = {label: i for i, label in enumerate(captions)}
    truth = np.array([position[rows[i]["class"]] for i in encoded.ok], dtype=np.int64)
    clip.train(was_training)
    return int((predicted == truth).sum()) / len(rows)
