"""The tree-of-life text index in pybioclip's format, and the rank roll-up maps.

``txt_emb_species.npy``: float32 (or float16), shape (D, N), one L2-normalised column per
taxon. ``txt_emb_species.json``: N entries ``[[kingdom, …, species_epithet], common]``
with ``""`` for missing ranks. Each taxon's text is the 7 ranks joined by spaces plus the
common name, through the 80 OpenAI templates: normalise, average, renormalise.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from taxoclip.errors import InputError, UsageError
from taxoclip.files import replacing_files
from taxoclip.taxonomy import RANK_NAMES, Lineage, Rank, clean_name

# File names and which files a folder's index is: torch-free, shared with the ONNX path.
from .scoring import (  # noqa: F401
    JSON_FILE,
    NPY_FILE,
    index_files,
    model_slug,
    rank_groups,
    read_index_arrays,
)
from .templates import OPENAI_IMAGENET_TEMPLATES
from .textmatrix import TEXT_PASS, class_text_matrix_np

log = logging.getLogger(__name__)


def taxon_text(ranks: Sequence[str], common: str) -> str:
    """pybioclip's text for a taxon: the 7 names (holes as "") and the common name."""
    return " ".join([*ranks, common])


@dataclass
class TextIndex:
    """Class text embeddings (D, N) and their names, with per-rank roll-up maps."""

    embeddings: torch.Tensor  # (D, N)
    names: list[list]  # [[7 ranks], common_name]
    _rollups: dict[int, tuple[torch.Tensor, list[tuple[str, ...]]]] = field(
        default_factory=dict, repr=False
    )

    def __len__(self) -> int:
        return len(self.names)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[0])

    @classmethod
    def load(cls, folder: str | os.PathLike, dtype: torch.dtype | None = None,
             model: str | os.PathLike | None = None) -> TextIndex:  # fmt: skip
        """Read an index folder; with ``model``, its own ``txt_emb_<model>`` files first."""
        array, names = read_index_arrays(folder, model)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if dtype is not None:
            tensor = tensor.to(dtype)
        return cls(tensor, names)

    def save(self, folder: str | os.PathLike, dtype: str = "float32") -> Path:
        if dtype not in ("float32", "float16"):
            raise UsageError(f"--dtype must be float32 or float16 (got {dtype})")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        array = self.embeddings.cpu().numpy().astype(dtype)
        with replacing_files() as temp_for:  # both files, or neither
            with temp_for(folder / NPY_FILE).open("wb") as handle:
                np.save(handle, array)
            temp_for(folder / JSON_FILE).write_text(
                json.dumps(self.names, ensure_ascii=False), encoding="utf-8"
            )
        return folder

    def logits(
        self, features: torch.Tensor, scale: torch.Tensor | float, chunk: int = 65_536
    ) -> torch.Tensor:
        """``scale · features @ embeddings`` in float32, (B, N).

        A half-precision index stays half in memory (1M × 768 is 1.5 GB instead of 3):
        it is widened ``chunk`` columns at a time.
        """
        embeddings = self.embeddings
        if embeddings.device != features.device:
            embeddings = self.embeddings = embeddings.to(features.device)
        features = features.float()
        if embeddings.dtype == torch.float32:
            return scale * (features @ embeddings)
        out = torch.empty(features.shape[0], embeddings.shape[1], device=features.device)
        for start in range(0, embeddings.shape[1], chunk):
            block = embeddings[:, start : start + chunk].float()
            torch.matmul(features, block, out=out[:, start : start + block.shape[1]])
        return out.mul_(scale)

    def check_dim(self, model_dim: int, model_spec: str) -> None:
        if self.dim != model_dim:
            raise InputError(
                f"text index has embedding dimension D={self.dim} but model {model_spec} "
                f"produces D={model_dim}; build an index for this model with `taxoclip index`"
            )

    def subset(self, keep: Sequence[bool] | torch.Tensor) -> TextIndex:
        mask = torch.as_tensor(
            list(keep) if not isinstance(keep, torch.Tensor) else keep, dtype=torch.bool
        )
        if mask.numel() != len(self):
            raise UsageError(
                f"filter has {mask.numel()} entries but the index has {len(self)} taxa"
            )
        positions = torch.nonzero(mask).squeeze(-1)
        if positions.numel() == 0:
            raise UsageError("the filter keeps no taxa")
        return TextIndex(self.embeddings[:, positions], [self.names[i] for i in positions.tolist()])

    def rollup(self, rank: Rank) -> tuple[torch.Tensor, list[tuple[str, ...]]]:
        """``(group, labels)``: species column → taxon at ``rank`` (names down to it).

        Computed once per rank with ``np.unique`` over the joined rank prefixes, so the
        roll-up of probabilities is one ``index_add`` — never a Python loop over taxa.
        """
        rank = Rank.parse(rank)
        if rank not in self._rollups:
            group, labels = rank_groups(self.names, rank)
            self._rollups[rank] = (torch.from_numpy(group), labels)
        return self._rollups[rank]


def rollup_topk(
    probs: torch.Tensor, group: torch.Tensor, n_groups: int, k: int, min_prob: float = 1e-9
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` groups by summed probability: one ``index_add`` over the species→group
    map. Species at or under ``min_prob`` are left out (pybioclip's rule); they are zeroed
    *in place* in ``probs`` with one fused threshold pass (``torch.where`` costs ~10×)."""
    kept = torch.nn.functional.threshold_(probs, min_prob, 0.0)
    summed = torch.zeros(probs.shape[0], n_groups, dtype=probs.dtype, device=probs.device)
    summed.index_add_(1, group.to(probs.device), kept)
    return summed.topk(min(k, n_groups), dim=1)


# --------------------------------------------------------------------------- building


@torch.inference_mode()
def encode_class_texts(
    model: torch.nn.Module | None,
    tokenizer,
    labels: Sequence[str],
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    progress: bool = False,
    text_encoder=None,
) -> torch.Tensor:
    """(D, N) zero-shot classifier: each label through the 80 templates, normalised,
    averaged, renormalised (CLIP's and pybioclip's recipe); see :func:`class_text_matrix`."""
    return torch.from_numpy(
        class_text_matrix(model, tokenizer, labels, device, batch_size, progress, text_encoder)
    )


def class_text_matrix(model, tokenizer, labels: Sequence[str], device="cpu", batch_size: int = 32,
                      progress: bool = False, text_encoder=None) -> np.ndarray:  # fmt: skip
    """:func:`encode_class_texts` as numpy: tokenised once, passes sorted by length and
    trimmed (:mod:`.textmatrix`); with ``text_encoder`` (the exported ONNX text tower)
    ``model`` and ``tokenizer`` are not used. ``batch_size`` taxa × 80 captions / 2 per
    pass, at least :data:`~.textmatrix.TEXT_PASS`."""
    from taxoclip.runtime.text_torch import TorchTextEncoder

    encoder = text_encoder or TorchTextEncoder(model, tokenizer, device)
    per_pass = max(TEXT_PASS, batch_size * len(OPENAI_IMAGENET_TEMPLATES) // 2)
    return class_text_matrix_np(encoder, labels, progress, per_pass)


def build_index(
    model: torch.nn.Module,
    tokenizer,
    taxa: Sequence[tuple[Lineage, str]],
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    progress: bool = False,
) -> TextIndex:
    if not taxa:
        raise UsageError("no taxa to index")
    names = [[lineage.to_list(), clean_name(common)] for lineage, common in taxa]
    labels = [taxon_text(ranks, common) for ranks, common in names]
    embeddings = encode_class_texts(model, tokenizer, labels, device, batch_size, progress)
    return TextIndex(embeddings, names)


def read_taxa(source: str | os.PathLike) -> list[tuple[Lineage, str]]:
    """Taxa from a CSV (rank columns + optional ``common_name``; SynthToL's species.csv
    and pybioclip's ``list-tol-taxa`` output both qualify) or a GBIF backbone folder."""
    path = Path(source)
    if path.is_dir():
        from .backbone import read_backbone_species

        return read_backbone_species(path)
    if not path.is_file():
        raise InputError(f"taxa source {path}: no such file or folder")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        rank_columns = (set(RANK_NAMES) | {"class_", "species_epithet"}) & columns
        if not rank_columns:
            raise InputError(
                f"taxa CSV {path}: no rank columns; expected some of {', '.join(RANK_NAMES)} "
                "(and optionally species_epithet, common_name)"
            )
        taxa, seen = [], set()
        for row in reader:
            lineage = Lineage.from_mapping(row)
            if lineage.is_empty:
                continue
            common = clean_name(row.get("common_name", ""))
            key = (lineage.ranks, common)
            if key not in seen:
                seen.add(key)
                taxa.append((lineage, common))
    if not taxa:
        raise InputError(f"taxa CSV {path} lists no taxa")
    return taxa
