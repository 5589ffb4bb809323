"""The text index read and scored with numpy: the ONNX runtime's path, no torch.

Which files a folder's index is, reading and checking them (shared with the torch
:class:`~taxoclip.predict.index.TextIndex`, so both report the same errors), and the
numpy twins of its scoring: logits, softmax, the per-rank roll-up (one ``np.add.at``-free
``bincount``-style sum per rank via a species→taxon map) and top-k.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taxoclip.errors import InputError, UsageError
from taxoclip.taxonomy import Rank

#: Models with a published tree-of-life index: their Hugging Face dataset repos.
TOL_MODELS = {
    "hf-hub:imageomics/bioclip": "imageomics/TreeOfLife-10M",
    "hf-hub:imageomics/bioclip-2": "imageomics/TreeOfLife-200M",
}

NPY_FILE = "txt_emb_species.npy"
JSON_FILE = "txt_emb_species.json"


def model_slug(model: str | os.PathLike | None) -> str | None:
    """The name a model's own index files carry (pybioclip #161: ``txt_emb_<model>``):
    the last part of the spec (``hf-hub:imageomics/bioclip-2`` → ``bioclip-2``); a run
    dir's ``…/RUN/model`` folder goes by the run's name."""
    if not model:
        return None
    text = os.fspath(model).removeprefix("hf-hub:").rstrip("/\\")
    path = Path(text)
    name = path.name
    if name == "model" and path.parent.name:
        name = path.parent.name
    return name or None


def index_files(folder: str | os.PathLike, model: str | os.PathLike | None = None
                ) -> tuple[Path, Path]:  # fmt: skip
    """``(npy, json)`` of ``folder``: the model's own ``txt_emb_<model>.{npy,json}`` when
    present beside the default ``txt_emb_species`` files (a model's names file may be
    absent: the default one is used), else the default ones."""
    folder = Path(folder)
    slug = model_slug(model)
    if slug and (folder / f"txt_emb_{slug}.npy").is_file():
        names = folder / f"txt_emb_{slug}.json"
        return folder / f"txt_emb_{slug}.npy", names if names.is_file() else folder / JSON_FILE
    return folder / NPY_FILE, folder / JSON_FILE


def read_index_arrays(folder: str | os.PathLike, model: str | os.PathLike | None = None
                      ) -> tuple[np.ndarray, list]:  # fmt: skip
    """``(embeddings (D, N), names)`` of an index folder, checked; InputError otherwise."""
    folder = Path(folder)
    npy, names_file = index_files(folder, model)
    for path in (npy, names_file):
        if not path.is_file():
            raise InputError(f"text index {folder}: missing {path.name}")
    try:
        array = np.load(npy)
    except (ValueError, OSError) as exc:
        raise InputError(f"text index {npy}: cannot read ({exc})") from exc
    try:
        names = json.loads(names_file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise InputError(f"text index {names_file}: cannot read ({exc})") from exc
    if array.ndim != 2:
        raise InputError(f"text index {npy}: expected a (D, N) matrix, got shape {array.shape}")
    if array.shape[1] != len(names):
        raise InputError(
            f"text index {folder}: {npy.name} has N={array.shape[1]} columns but "
            f"{names_file.name} lists {len(names)} taxa"
        )
    return array, names


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def topk(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest ``k`` per row, descending (ties: lower position first, as torch on CPU)."""
    k = min(k, values.shape[1])
    if k < values.shape[1]:
        part = np.argpartition(-values, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(values.shape[1]), values.shape).copy()
    part_values = np.take_along_axis(values, part, axis=1)
    order = np.lexsort((part, -part_values), axis=1)
    positions = np.take_along_axis(part, order, axis=1)
    return np.take_along_axis(values, positions, axis=1), positions


def rollup_topk_np(probs: np.ndarray, group: np.ndarray, n_groups: int, k: int,
                   min_prob: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """numpy twin of :func:`taxoclip.predict.index.rollup_topk`: species at or under
    ``min_prob`` left out (zeroed in place), the rest summed per group, top-``k`` groups."""
    probs[probs <= min_prob] = 0.0
    summed = np.zeros((probs.shape[0], n_groups), dtype=probs.dtype)
    for row in range(probs.shape[0]):  # bincount per image: C speed, no (B, N) temporaries
        summed[row] = np.bincount(group, weights=probs[row], minlength=n_groups)
    return topk(summed, k)


@dataclass
class NumpyIndex:
    """A text index as numpy: (D, N) embeddings and names, with per-rank roll-up maps."""

    embeddings: np.ndarray
    names: list
    _rollups: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, folder: str | os.PathLike, model: str | os.PathLike | None = None) -> NumpyIndex:
        array, names = read_index_arrays(folder, model)
        return cls(np.ascontiguousarray(array), names)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[0])

    def check_dim(self, model_dim: int, model_spec: str) -> None:
        if self.dim != model_dim:
            raise InputError(
                f"text index has embedding dimension D={self.dim} but model {model_spec} "
                f"produces D={model_dim}; build an index for this model with `taxoclip index`"
            )

    def logits(self, features: np.ndarray, scale: float, chunk: int = 65_536) -> np.ndarray:
        """``scale · features @ embeddings`` in float32, (B, N); a float16 index is widened
        ``chunk`` columns at a time."""
        features = features.astype(np.float32, copy=False)
        if self.embeddings.dtype == np.float32:
            out = features @ self.embeddings
        else:
            out = np.empty((features.shape[0], self.embeddings.shape[1]), dtype=np.float32)
            for start in range(0, self.embeddings.shape[1], chunk):
                block = self.embeddings[:, start : start + chunk].astype(np.float32)
                out[:, start : start + block.shape[1]] = features @ block
        out *= np.float32(scale)
        return out

    def subset(self, keep: Sequence[bool]) -> NumpyIndex:
        mask = np.asarray(list(keep), dtype=bool)
        if mask.size != len(self):
            raise UsageError(f"filter has {mask.size} entries but the index has {len(self)} taxa")
        positions = np.nonzero(mask)[0]
        if positions.size == 0:
            raise UsageError("the filter keeps no taxa")
        return NumpyIndex(self.embeddings[:, positions], [self.names[i] for i in positions])

    def rollup(self, rank: Rank) -> tuple[np.ndarray, list[tuple[str, ...]]]:
        """``(group, labels)``: species column → taxon at ``rank`` (as TextIndex.rollup)."""
        rank = Rank.parse(rank)
        if rank not in self._rollups:
            self._rollups[rank] = rank_groups(self.names, rank)
        return self._rollups[rank]


def rank_groups(names: Sequence, rank: Rank) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """``(group, labels)``: each species column's taxon at ``rank`` (names down to it).

    One ``np.unique`` over the joined rank prefixes, so rolling probabilities up is one
    scatter-add, never a Python loop over taxa. Shared by both runtimes' indexes.
    """
    depth = int(Rank.parse(rank)) + 1
    prefixes = np.array(["\x1f".join(entry[0][:depth]) for entry in names], dtype=object)
    labels, inverse = np.unique(prefixes, return_inverse=True)
    return inverse.astype(np.int64).reshape(-1), [tuple(x.split("\x1f")) for x in labels]


def published_index_folder(model_spec: str) -> Path:
    """The folder of the published tree-of-life index of ``model_spec`` (BioCLIP, BioCLIP 2),
    from the Hugging Face cache or the Hub, as pybioclip gets it."""
    repo = TOL_MODELS.get(model_spec)
    if repo is None:
        raise UsageError(
            f"model {model_spec} has no published tree-of-life index; pass one with "
            "--index DIR (build it with `taxoclip index --model ... --taxa ...`)"
        )
    from huggingface_hub import hf_hub_download

    try:
        paths = [
            hf_hub_download(repo_id=repo, filename=f"embeddings/{name}", repo_type="dataset")
            for name in ("txt_emb_species.npy", "txt_emb_species.json")
        ]
    except Exception as exc:  # offline without a cache, network errors, missing repo
        raise InputError(
            f"cannot get the tree-of-life index of {model_spec} from {repo}: {exc}"
        ) from exc
    return Path(paths[0]).parent
