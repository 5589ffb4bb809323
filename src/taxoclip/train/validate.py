"""Zero-shot top-1 on an evaluation folder, to watch a run learn (not the eval suite).

Each class is described by its ``taxon`` caption when the folder has lineage columns,
else by ``a photo of <class>.``; one caption per class, no template ensemble. The
published protocol (80 templates, every benchmark) lives in ``taxoclip eval``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from taxoclip.errors import InputError
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


@torch.inference_mode()
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
    clip.eval()
    captions = class_captions(rows)
    labels = list(captions)
    text = F.normalize(clip.encode_text(tokenizer(list(captions.values())).to(device)), dim=-1)
    position = {label: i for i, label in enumerate(labels)}
    correct = 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        images = []
        for row in chunk:
            with Image.open(folder / row["filepath"]) as image:
                images.append(preprocess(image.convert("RGB")))
        features = F.normalize(clip.encode_image(torch.stack(images).to(device)), dim=-1)
        predicted = (features @ text.T).argmax(dim=1).cpu()
        truth = torch.tensor([position[row["class"]] for row in chunk])
        correct += int((predicted == truth).sum())
    clip.train(was_training)
    return correct / len(rows)
