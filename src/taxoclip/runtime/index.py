"""The tree-of-life text index in pybioclip's format, as numpy: files, subsets, rank maps.

``txt_emb_species.npy``: float32 (or float16), shape (D, N), one L2-normalised column per
taxon. ``txt_emb_species.json``: N entries ``[[kingdom, …, species_epithet], common]``
with ``""`` for missing ranks. One class, :class:`TextIndex`, read by every runtime and
every caller (predict, the pybioclip classes, serve, listing); torch-free.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taxoclip.errors import InputError, UsageError
from taxoclip.files import replacing_files
from taxoclip.taxonomy import RANK_NAMES, Rank

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


def index_files(
    folder: str | os.PathLike, model: str | os.PathLike | None = None
) -> tuple[Path, Path]:
    """``(npy, json)`` of ``folder``: the model's own ``txt_emb_<model>.{npy,json}`` when
    present beside the default ``txt_emb_species`` files (a model's names file may be
    absent: the default one is used), else the default ones."""
    folder = Path(folder)
    slug = model_slug(model)
    if slug and (folder / f"txt_emb_{slug}.npy").is_file():
        names = folder / f"txt_emb_{slug}.json"
        return folder / f"txt_emb_{slug}.npy", names if names.is_file() else folder / JSON_FILE
    return folder / NPY_FILE, folder / JSON_FILE


def read_index_arrays(
    folder: str | os.PathLike, model: str | os.PathLike | None = None
) -> tuple[np.ndarray, list]:
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
            for name in (NPY_FILE, JSON_FILE)
        ]
    except Exception as exc:  # offline without a cache, network errors, missing repo
        raise InputError(
            f"cannot get the tree-of-life index of {model_spec} from {repo}: {exc}"
        ) from exc
    return Path(paths[0]).parent


def taxon_value(ranks: Sequence[str], rank: Rank) -> str:
    """A taxon's name at ``rank`` as pybioclip's label data and a subset CSV write it
    (species: the binomial)."""
    if rank is Rank.SPECIES:
        return f"{ranks[5]} {ranks[6]}"
    return ranks[int(rank)]


def read_subset(text: str, source: str = "--subset") -> tuple[Rank, list[str]]:
    """``--subset``'s CSV — its first column named by a rank, one taxon per line — as
    ``(rank, names)``; the one reader of predict, the pybioclip classes and serve."""
    rows = [row for row in csv.reader(io.StringIO(text)) if row and row[0].strip()]
    if not rows:
        raise UsageError(f"{source}: empty; give a CSV whose first line names a rank")
    column = rows[0][0].strip().lower()
    if column not in RANK_NAMES:
        raise UsageError(
            f"The first column of {source} is named '{column}' but must be one of "
            f"{','.join(RANK_NAMES)}."
        )
    values = list(dict.fromkeys(row[0].strip() for row in rows[1:]))
    if not values:
        raise UsageError(f"{source}: no {column} names under the header")
    return Rank.parse(column), values


def rank_groups(names: Sequence, rank: Rank) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """``(group, labels)``: each species column's taxon at ``rank`` (names down to it).

    One ``np.unique`` over the joined rank prefixes, so rolling probabilities up is one
    scatter-add per image, never a Python loop over taxa.
    """
    depth = int(Rank.parse(rank)) + 1
    prefixes = np.array(["\x1f".join(entry[0][:depth]) for entry in names], dtype=object)
    labels, inverse = np.unique(prefixes, return_inverse=True)
    return inverse.astype(np.int64).reshape(-1), [tuple(x.split("\x1f")) for x in labels]


@dataclass
class TextIndex:
    """Class text embeddings (D, N) and their names, with per-rank roll-up maps."""

    embeddings: np.ndarray  # (D, N) float32 or float16 (a half index stays half in memory)
    names: list  # [[7 ranks], common_name]
    _rollups: dict = field(default_factory=dict, repr=False)
    _values: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.embeddings = np.ascontiguousarray(np.asarray(self.embeddings))

    @classmethod
    def load(cls, folder: str | os.PathLike, model: str | os.PathLike | None = None) -> TextIndex:
        """Read an index folder; with ``model``, its own ``txt_emb_<model>`` files first."""
        return cls(*read_index_arrays(folder, model))

    def save(self, folder: str | os.PathLike, dtype: str = "float32") -> Path:
        if dtype not in ("float32", "float16"):
            raise UsageError(f"--dtype must be float32 or float16 (got {dtype})")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with replacing_files() as temp_for:  # both files, or neither
            with temp_for(folder / NPY_FILE).open("wb") as handle:
                np.save(handle, self.embeddings.astype(dtype))
            temp_for(folder / JSON_FILE).write_text(
                json.dumps(self.names, ensure_ascii=False), encoding="utf-8"
            )
        return folder

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

    def values_at(self, rank: Rank | str) -> tuple[list[str], frozenset[str]]:
        """Each taxon's name at ``rank`` (:func:`taxon_value`) and the set of them, once
        per rank (serve checks every request's subset against it)."""
        rank = Rank.parse(rank)
        if rank not in self._values:
            labels = [taxon_value(entry[0], rank) for entry in self.names]
            self._values[rank] = (labels, frozenset(labels))
        return self._values[rank]

    def check_names(self, rank: Rank | str, values: Sequence[str]) -> None:
        """A UsageError naming every one of ``values`` the index lacks at ``rank``."""
        column = Rank.parse(rank).get_label()
        known = self.values_at(rank)[1]
        unknown = [str(v) for v in values if v not in known]
        if unknown:
            raise UsageError(
                f"Unknown {column} received: {', '.join(unknown)}. Only known {column} may be used."
            )

    def keep(self, rank: Rank | str, values: Sequence[str]) -> list[bool]:
        """Which taxa a subset at ``rank`` keeps (names checked first)."""
        self.check_names(rank, values)
        labels = self.values_at(rank)[0]
        wanted = set(values)
        return [label in wanted for label in labels]

    def subset(self, keep: Sequence[bool]) -> TextIndex:
        mask = np.asarray(list(keep), dtype=bool)
        if mask.size != len(self):
            raise UsageError(f"filter has {mask.size} entries but the index has {len(self)} taxa")
        positions = np.nonzero(mask)[0]
        if positions.size == 0:
            raise UsageError("the filter keeps no taxa")
        return TextIndex(self.embeddings[:, positions], [self.names[i] for i in positions])

    def rollup(self, rank: Rank | str) -> tuple[np.ndarray, list[tuple[str, ...]]]:
        """``(group, labels)``: species column → taxon at ``rank``, computed once per rank."""
        rank = Rank.parse(rank)
        if rank not in self._rollups:
            self._rollups[rank] = rank_groups(self.names, rank)
        return self._rollups[rank]
