"""Training data: indexed WebDataset shards read by random access, batches by step.

Why not a streaming pipeline: exact resume. Every batch is a pure function of
``(seed, step)`` — the epoch's permutation, the slice for this rank, the caption type
and every augmentation — so a run restarted from a checkpoint at step ``s`` sees exactly
the batches an uninterrupted run would, whatever the number of DataLoader workers. The
shards stay the standard TreeOfLife layout; the index (member offsets inside each tar)
is built once at start-up from tar headers (``taxoclip.data.scan_tar``, which groups
members into samples exactly as the streaming reader does).
"""

from __future__ import annotations

import io
import logging
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from taxoclip.data import (
    IMAGE_SUFFIXES,
    decode_member,
    decode_rgb,
    expand_urls,
    local_path,
    read_member,
    scan_tar,
)
from taxoclip.errors import InputError, UsageError
from taxoclip.taxonomy import TRAINING_TEXT_TYPES, TextType

log = logging.getLogger(__name__)

_MAX_SUBSTITUTES = 16


#: Members the training index records for each sample.
INDEX_SUFFIXES = ("jpg", "txt", *(f"{t.value}.txt" for t in TRAINING_TEXT_TYPES))


def text_type_for_step(seed: int, step: int, fixed: str = "random") -> str:
    """The caption type of a whole global batch: drawn uniformly per step (BioCLIP 2's
    mix), identical on every rank because it depends only on ``(seed, step)``."""
    if fixed != "random":
        return TextType.parse(fixed).value
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7, step]))
    return TRAINING_TEXT_TYPES[int(rng.integers(len(TRAINING_TEXT_TYPES)))].value


@dataclass
class ShardIndex:
    """Where each sample's members lie: shard number and (offset, size) per suffix."""

    paths: list[str]
    shard: np.ndarray  # (N,) int32
    keys: list[str]
    members: dict[str, np.ndarray]  # suffix → (N, 2) int64 offset, size; -1 if absent

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def build(cls, spec: str | Sequence[str], suffixes: Sequence[str]) -> ShardIndex:
        """Index local shards (paths or ``file:`` URLs, brace patterns, ``::`` lists)."""
        urls = expand_urls(spec)
        paths = []
        for url in urls:
            path = local_path(url)
            if path is None:
                raise UsageError(
                    f"training reads shards by random access; stage {url} on a local or "
                    "network file system and pass its path"
                )
            if not Path(path).is_file():
                raise InputError(f"training shard not found: {path}")
            paths.append(path)
        shard_ids: list[int] = []
        keys: list[str] = []
        found: dict[str, list[tuple[int, int]]] = {s: [] for s in suffixes}
        for number, path in enumerate(paths):
            for key, parts in scan_tar(path):
                image = next((parts[s] for s in IMAGE_SUFFIXES if s in parts), None)
                if image is None:
                    continue
                shard_ids.append(number)
                keys.append(key)
                for suffix in suffixes:
                    found[suffix].append(image if suffix == "jpg" else parts.get(suffix, (-1, -1)))
        if not keys:
            raise InputError(f"no samples with an image in {len(paths)} shard(s): {spec}")
        return cls(
            paths=paths,
            shard=np.asarray(shard_ids, dtype=np.int32),
            keys=keys,
            members={s: np.asarray(v, dtype=np.int64).reshape(-1, 2) for s, v in found.items()},
        )


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields, for each step from ``start_step``, this rank's ``(sample, step)`` pairs.

    Epoch ``e`` is a permutation seeded by ``(seed, e)``; step ``s`` takes the global
    batch ``perm[b·G : (b+1)·G]`` (``b = s mod steps_per_epoch``, the tail dropped) and
    this rank its contiguous slice, so ranks never share samples and the union over
    ranks is the same global batch a single process would draw.
    """

    def __init__(
        self,
        n_samples: int,
        global_batch: int,
        total_steps: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
    ) -> None:
        if global_batch % world_size:
            raise UsageError(f"global batch {global_batch} is not divisible by {world_size} ranks")
        if n_samples < global_batch:
            raise UsageError(
                f"{n_samples} training samples cannot fill one global batch of {global_batch}"
            )
        self.n_samples, self.global_batch = n_samples, global_batch
        self.total_steps, self.seed = total_steps, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.steps_per_epoch = n_samples // global_batch
        self.local_batch = global_batch // world_size

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def global_indices(self, step: int) -> np.ndarray:
        epoch, within = divmod(step, self.steps_per_epoch)
        perm = np.random.default_rng(np.random.SeedSequence([self.seed, 3, epoch])).permutation(
            self.n_samples
        )
        return perm[within * self.global_batch : (within + 1) * self.global_batch]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.total_steps):
            indices = self.global_indices(step)
            mine = indices[self.rank * self.local_batch : (self.rank + 1) * self.local_batch]
            yield [(int(i), step) for i in mine]


class ShardTrainDataset(Dataset):
    """Map-style view of indexed shards: item ``(index, step)`` → image tensor + captions.

    Augmentation is seeded by ``(seed, step, index)``, so it does not depend on which
    worker draws the item. A sample that cannot be decoded is logged and replaced by the
    next readable one (the batch keeps its size, which the distributed loss needs); the
    item records how many were replaced so the trainer can count them.
    """

    def __init__(
        self,
        index: ShardIndex,
        transform: Callable[[Image.Image, np.random.Generator], torch.Tensor],
        seed: int,
        text_type: str | None = "random",
    ) -> None:
        self.index, self.transform, self.seed = index, transform, seed
        self.text_type = text_type
        self._files: dict[int, io.BufferedReader] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"] = {}  # file handles do not cross into worker processes
        return state

    def _read(self, index: int, suffix: str) -> bytes | None:
        offset, size = self.index.members[suffix][index]
        if offset < 0:
            return None
        shard = int(self.index.shard[index])
        handle = self._files.get(shard)
        if handle is None:
            handle = self._files[shard] = open(self.index.paths[shard], "rb")  # noqa: SIM115
        return read_member(handle, int(offset), int(size))

    def _load(self, index: int, step: int, caption_key: str) -> tuple[torch.Tensor, str]:
        image = decode_rgb(self._read(index, "jpg"))
        caption = self._read(index, caption_key)
        if caption is None:
            caption = self._read(index, "txt")
        if caption is None:
            raise ValueError(f"no {caption_key} or txt caption")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 5, step, index]))
        return self.transform(image, rng), decode_member("txt", caption)

    def get(self, index: int, step: int, caption_key: str) -> tuple[torch.Tensor, str, int]:
        substitutes = 0
        for attempt in range(_MAX_SUBSTITUTES):
            candidate = (index + attempt) % len(self.index)
            try:
                image, caption = self._load(candidate, step, caption_key)
                return image, caption, substitutes
            except Exception as exc:  # one unreadable sample must not stop training
                substitutes += 1
                shard = self.index.paths[int(self.index.shard[candidate])]
                log.warning(
                    "skipping corrupt sample %s in %s (%s: %s)",
                    self.index.keys[candidate],
                    shard,
                    type(exc).__name__,
                    exc,
                )
        raise InputError(f"{_MAX_SUBSTITUTES} consecutive unreadable samples near {index}")

    def __getitem__(self, item: tuple[int, int]):
        index, step = item
        if self.text_type is None:  # general image-caption pairs (replay): plain ``txt``
            caption_key = "txt"
        else:
            caption_key = f"{text_type_for_step(self.seed, step, self.text_type)}.txt"
        image, caption, substitutes = self.get(index, step, caption_key)
        return image, caption, substitutes, step


def caption_ids(captions: Sequence[str]) -> torch.Tensor:
    """A stable integer per distinct caption (identical captions → identical id)."""
    return torch.tensor([zlib.crc32(c.encode("utf-8")) for c in captions], dtype=torch.int64)


class Collate:
    """Stacks images, tokenizes the step's captions, carries caption ids and skip counts.

    Captions repeat (every image of a species shares them) and open_clip's tokenizer
    costs ~0.4 ms per caption in Python, so token rows are cached per process.
    """

    def __init__(self, tokenizer: Callable[[list[str]], torch.Tensor], cache_size: int = 200_000):
        self.tokenizer = tokenizer
        self.cache_size = cache_size
        self._tokens: dict[str, torch.Tensor] = {}

    def tokenize(self, captions: Sequence[str]) -> torch.Tensor:
        new = [c for c in dict.fromkeys(captions) if c not in self._tokens]
        if new:
            if len(self._tokens) + len(new) > self.cache_size:
                self._tokens.clear()
            self._tokens.update(zip(new, self.tokenizer(new), strict=True))
        return torch.stack([self._tokens[c] for c in captions])

    def __call__(self, items):
        images, captions, substitutes, steps = zip(*items, strict=True)
        return {
            "images": torch.stack(images),
            "tokens": self.tokenize(captions),
            "caption_ids": caption_ids(captions),
            "n_substituted": int(sum(substitutes)),
            "step": int(steps[0]),
        }
