"""The general ability of a model: SynthToL's held-out web pairs (``synth --web``).

Four numbers, with chance beside them:

- ``web.retrieval_top1`` and ``web.retrieval_r5``: image → caption retrieval among the
  distinct held-out captions (a hit when the image's own text is the best, or among the
  best five). Recall@5 is what "replay keeps the general ability" is measured by (top-1
  over ~900 short, similar captions rests on ~100 hits): BioCLIP 2 replays LAION so that
  stage 2 does not forget what the general CLIP could do.
- ``web.crest_auc``: can the model tell a crest from no crest, zero-shot? For adult
  organisms, the score difference between "a photo of a <noun> with a white crest." and
  "a photo of a <noun>." (averaged over the corpus's nouns), as an area under the ROC
  curve of crested (visible crest) against uncrested adult females. AUC rather than an
  accuracy at 0, because a model may prefer one prompt for every image and still rank
  them right. Chance 0.5.
- ``web.young_auc``: the same for "a photo of a young <noun>." against all organisms'
  life stage.

Before judging what stage 2 keeps of a variant, these say whether the general model
learned it at all (docs/analyze.md).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from taxoclip.errors import InputError
from taxoclip.models import LoadedModel
from taxoclip.stats import roc_auc

from .features import image_features

WEB_KEYS = ("web.retrieval_top1", "web.retrieval_r5", "web.crest_auc", "web.young_auc")
_NOUNS = ("animal", "creature", "critter", "organism")


def read_web_test(web: Path) -> list[dict[str, str]]:
    path = Path(web) / "test.csv"
    if not path.is_file():
        raise InputError(f"{web}: no test.csv (a SynthToL web corpus: taxoclip synth --web N)")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "caption" not in rows[0]:
        raise InputError(f"{path}: no held-out pairs with a caption column")
    return rows


@torch.inference_mode()
def text_features(loaded: LoadedModel, texts: list[str], device: str = "cpu") -> np.ndarray:
    """(N, D) L2-normalised embeddings of the texts as they are (no templates)."""
    model = loaded.model.to(device).eval()
    chunks = []
    for start in range(0, len(texts), 256):
        tokens = loaded.tokenizer(texts[start : start + 256]).to(device)
        chunks.append(torch.nn.functional.normalize(model.encode_text(tokens), dim=-1).cpu())
    return torch.cat(chunks).numpy().astype(np.float32)


def web_scores(
    loaded: LoadedModel, web: Path, device: str = "cpu", batch_size: int = 64
) -> dict[str, float | None]:
    """The three numbers of the module doc, plus their chance levels and counts."""
    rows = read_web_test(web)
    paths = [str(Path(web) / "test" / r["filepath"]) for r in rows]
    mask, images = image_features(loaded, paths, None, batch_size, device=device).full(len(rows))
    rows = [r for r, ok in zip(rows, mask, strict=True) if ok]

    captions = sorted({r["caption"] for r in rows})
    texts = text_features(loaded, captions, device)
    position = {c: i for i, c in enumerate(captions)}
    own = np.array([position[r["caption"]] for r in rows])
    sims = images @ texts.T
    # rank of the image's own caption among all distinct captions (0 = best)
    rank = (sims > sims[np.arange(len(rows)), own][:, None]).sum(axis=1)
    scores: dict[str, float | None] = {
        "web.retrieval_top1": float(np.mean(rank < 1)),
        "web.retrieval_r5": float(np.mean(rank < 5)),
        "web.retrieval_chance": 1.0 / len(captions),
        "web.n_test": len(rows),
    }

    organism = np.array([r["kind"] == "organism" for r in rows])
    adult = organism & np.array([r["life_stage"] == "adult" for r in rows])
    crested = np.array([r["crest_visible"] == "True" for r in rows])
    female = np.array([r["sex"] == "female" for r in rows])
    young = np.array([r["life_stage"] == "juvenile" for r in rows])

    def contrast(template_with: str, template_without: str) -> np.ndarray:
        prompts = [t.format(n) for n in _NOUNS for t in (template_with, template_without)]
        emb = text_features(loaded, prompts, device)
        sims = images @ emb.T
        return (sims[:, 0::2] - sims[:, 1::2]).mean(axis=1)

    crest = contrast("a photo of a {} with a white crest.", "a photo of a {}.")
    positives, negatives = crest[adult & crested], crest[adult & female & ~crested]
    scores["web.crest_auc"] = roc_auc(positives, negatives)
    scores["web.n_crest"] = int(len(positives))
    youth = contrast("a photo of a young {}.", "a photo of a {}.")
    scores["web.young_auc"] = roc_auc(youth[organism & young], youth[organism & ~young])
    return scores
