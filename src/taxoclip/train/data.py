"""Training data: WebDataset shards streamed in a seeded order, batches made by readers.

Nothing here grows with the number of samples N: the shards are known by their URL and
their size in ``sizes.json`` (no tar is opened to plan the run), each *reader* (one per
DataLoader worker on each rank) streams its own shards, and a batch is the next
``batch_size`` samples of one reader's shuffle buffer.

Readers, shards and epochs
    There are ``R = world_size × max(1, workers)`` readers; reader ``t`` reads the shards
    ``G[t], G[t+R], G[t+2R], …`` of the endless sequence ``G = P0 ++ P1 ++ …`` where ``Pe``
    is the permutation of all K shards seeded by ``(seed, e)``. Each pass ``Pe`` is thus
    read exactly once, by all readers together, whatever K and R: when K is not a
    multiple of R the readers that got one shard fewer in a pass start the next pass
    earlier (the pass is *padded from the next pass*, nothing is dropped or repeated
    within a pass, no reader ever runs dry; even R > K works). An epoch is nominal:
    ``N // global_batch`` steps, open_clip's ``--train-num-samples`` epoch.

Shuffle buffer
    A reader fills a block of ``shuffle_buffer`` samples from its stream (crossing shard
    boundaries), emits it in a permutation seeded by ``(seed, reader, block number)``,
    then fills the next block. Its position (:class:`ReaderPosition`) is therefore four
    numbers — which of its shards and which sample of it the block starts at, the block
    number, and how many samples of the block were emitted — and resuming re-reads at
    most one block (from its start: the shard is streamed up to that sample without
    decoding).

Batches and steps
    Step ``s`` of a rank is made by its reader ``s mod W`` (W streams per rank): with W
    DataLoader workers, worker ``w`` of a run started at step ``s0`` plays stream
    ``(w + s0) mod W``, so the DataLoader's round-robin order gives steps in order. The
    caption type is drawn per step from ``(seed, step)`` (the same on every rank) and
    each crop is seeded by ``(seed, step, rank, position)``. Every batch carries its
    reader's position after it; the trainer keeps the latest per reader and checkpoints
    them, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from taxoclip.data import IMAGE_MEMBERS, decode_member, decode_rgb, expand_urls, local_path
from taxoclip.data.read import ReadStats, read_shards, scan_tar, shard_sizes
from taxoclip.errors import InputError, UsageError
from taxoclip.taxonomy import TRAINING_TEXT_TYPES, TextType

log = logging.getLogger(__name__)

_MAX_SUBSTITUTES = 16


def text_type_for_step(seed: int, step: int, fixed: str = "random") -> str:
    """The caption type of a whole global batch: drawn uniformly per step (BioCLIP 2's
    mix), identical on every rank because it depends only on ``(seed, step)``."""
    if fixed == "caption":  # a general corpus: the plain txt
        return fixed
    if fixed != "random":
        return TextType.parse(fixed).value
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7, step]))
    return TRAINING_TEXT_TYPES[int(rng.integers(len(TRAINING_TEXT_TYPES)))].value


# ------------------------------------------------------------------- shards and order


@dataclass(frozen=True)
class ShardList:
    """The training shards: URLs and sample counts (from ``sizes.json``; never per sample)."""

    urls: tuple[str, ...]
    sizes: tuple[int, ...]

    @property
    def n_samples(self) -> int:
        return sum(self.sizes)

    @classmethod
    def resolve(cls, spec: str | Sequence[str]) -> ShardList:
        """Expand ``spec`` (brace patterns, ``::`` lists; local, ``pipe:``, http(s), fsspec)
        and find each shard's size in the ``sizes.json`` beside it. A local shard that no
        ``sizes.json`` lists is counted from its tar headers (once, at start-up)."""
        urls = expand_urls(spec)
        for url in urls:
            path = local_path(url)
            if path is not None and not Path(path).is_file():
                raise InputError(f"training shard not found: {path}")
        sizes = shard_sizes(urls)
        out = []
        for url, size in zip(urls, sizes, strict=True):
            if size is None:
                path = local_path(url)
                if path is None:
                    raise UsageError(
                        f"no sizes.json lists {url}: put a sizes.json (shard name → sample "
                        "count, as taxoclip and open_clip write it) beside the shards"
                    )
                log.warning("%s is not in a sizes.json; counting its samples", path)
                size = sum(1 for _ in scan_tar(path))
            out.append(size)
        if not sum(out):
            raise InputError(f"no samples in {len(urls)} shard(s): {spec}")
        return cls(urls=tuple(urls), sizes=tuple(out))


@lru_cache(maxsize=8)
def shard_order(seed: int, epoch: int, n_shards: int) -> np.ndarray:
    """Pass ``epoch``'s permutation of the shards: seeded by ``(seed, epoch)``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11, epoch]))
    return rng.permutation(n_shards).astype(np.int32)


def reader_shard(seed: int, n_shards: int, reader: int, n_readers: int, k: int) -> int:
    """The ``k``-th shard reader ``reader`` of ``n_readers`` reads (see the module doc)."""
    position = reader + k * n_readers
    epoch, within = divmod(position, n_shards)
    return int(shard_order(seed, epoch, n_shards)[within])


# ------------------------------------------------------------------- one reader


@dataclass
class ReaderPosition:
    """Where one reader stands in its stream (see the module doc), and what it lost on the
    way. A checkpoint holds it as :meth:`state_dict`, a plain dict, so that
    ``torch.load(weights_only=True)`` reads it."""

    shard: int = 0  # which of the reader's shards the current block starts in (its k)
    offset: int = 0  # the sample of that shard the block starts at
    block: int = 0  # the block's number: it seeds the block's permutation
    taken: int = 0  # samples of the block already emitted
    counted: int = -1  # the last shard whose losses are in the counts below
    n_read_errors: int = 0
    n_missing: int = 0
    n_skipped: int = 0
    n_substituted: int = 0  # corrupt samples replaced by the next one
    bad_shards: list[str] = field(default_factory=list)  # at most 100 named

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)  # a copy: the list too

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in _POSITION_FIELDS:
            if name in state:  # a key a position lacks keeps its value
                value = state[name]
                setattr(self, name, list(value) if name == "bad_shards" else int(value))

    @classmethod
    def from_state_dict(cls, state: dict[str, Any] | None) -> ReaderPosition:
        """The position a checkpoint holds (None: a reader that has read nothing)."""
        position = cls()
        if state is not None:
            position.load_state_dict(state)
        return position

    def copy(self) -> ReaderPosition:
        return replace(self, bad_shards=list(self.bad_shards))


_POSITION_FIELDS = tuple(f.name for f in fields(ReaderPosition))


class ShardReader:
    """One reader's endless stream of raw samples (bytes), shuffled by blocks; see the
    module doc. :attr:`position` is its exact position; a reader built from it goes on
    with the same samples."""

    def __init__(
        self,
        shards: ShardList,
        seed: int,
        reader: int,
        n_readers: int,
        buffer: int,
        position: ReaderPosition | None = None,
        retries: int = 3,
    ) -> None:
        self.shards, self.seed, self.reader, self.n_readers = shards, seed, reader, n_readers
        self.buffer, self.retries = max(1, buffer), retries
        self._go_to(position.copy() if position is not None else ReaderPosition())

    def _go_to(self, position: ReaderPosition) -> None:
        """Stand at ``position`` with nothing read: the next sample re-reads its block."""
        self.position = position
        self._block: list[dict[str, Any]] = []
        self._order: np.ndarray | None = None
        self._next = (position.shard, position.offset)  # where the next block starts
        self._samples: Iterator[dict[str, Any]] | None = None
        self._stats: ReadStats | None = None
        self._stats_shard = -1
        self._cursor: tuple[int, int] | None = None  # where the open stream stands

    def state_dict(self) -> dict[str, Any]:
        return self.position.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._go_to(ReaderPosition.from_state_dict(state))

    def url(self, k: int) -> str:
        shard = reader_shard(self.seed, len(self.shards.urls), self.reader, self.n_readers, k)
        return self.shards.urls[shard]

    def next_sample(self) -> dict[str, Any]:
        position = self.position
        if self._order is None:  # a new reader: re-read the block its position is in
            self._fill(skip=position.taken)
        if position.taken >= len(self._block):
            position.shard, position.offset = self._next
            position.block += 1
            self._fill(skip=0)
        sample = self._block[int(self._order[position.taken])]
        position.taken += 1
        return sample

    def _fill(self, skip: int) -> None:
        """Read the block that starts at the recorded position; ``skip`` of it are done."""
        shard, offset = self.position.shard, self.position.offset
        if self._samples is None or self._cursor != (shard, offset):  # else: read on
            self._open(shard, offset)
        block: list[dict[str, Any]] = []
        empty_run = 0  # shards in a row that gave nothing: all of them broken means stop
        while len(block) < self.buffer:
            sample = next(self._samples, None)
            if sample is None:
                empty_run = empty_run + 1 if offset == 0 else 0
                if empty_run > len(self.shards.urls):
                    raise InputError(
                        f"no readable samples in any of {len(self.shards.urls)} training shards"
                    )
                shard, offset = shard + 1, 0
                self._open(shard, 0)
                continue
            block.append(sample)
            offset += 1
        self._next = self._cursor = (shard, offset)
        self._block = block
        rng = np.random.default_rng(
            np.random.SeedSequence([self.seed, 13, self.reader, self.position.block])
        )
        self._order = rng.permutation(len(block))
        self.position.taken = skip

    def count_substituted(self, n: int) -> None:
        self.position.n_substituted += n

    def _open(self, k: int, skip: int) -> None:
        self._account()
        url = self.url(k)
        self._stats, self._stats_shard = ReadStats(max_messages=10), k
        samples = read_shards(
            [url], decode=False, stats=self._stats, require=(), retries=self.retries
        )
        for _ in range(skip):  # resuming inside a shard: stream up to the sample, no decoding
            if next(samples, None) is None:
                break
        self._samples = samples

    def _account(self) -> None:
        """Add a finished shard's losses to the reader's counts, once per shard (a resume
        re-reads the shard its block starts in, and must not count it twice)."""
        stats, k, position = self._stats, self._stats_shard, self.position
        self._stats = None
        if stats is None or k <= position.counted:
            return
        position.counted = k
        position.n_read_errors += stats.n_read_errors
        position.n_missing += stats.n_missing
        position.n_skipped += stats.n_skipped
        for url in sorted(stats.bad_shards):
            if url not in position.bad_shards and len(position.bad_shards) < 100:
                position.bad_shards.append(url)
                log.warning("training shard %s is damaged: %s", url, stats.summary())


# ------------------------------------------------------------------- batches


@dataclass(frozen=True)
class StreamSpec:
    """What a rank's loader streams: which shards, how, and which steps."""

    shards: ShardList
    seed: int
    text_type: str | None  # None: replay corpus, plain ``txt`` captions
    batch_size: int
    rank: int
    world_size: int
    n_streams: int  # readers per rank: max(1, DataLoader workers)
    start_step: int
    total_steps: int
    buffer: int
    retries: int = 3

    @property
    def n_readers(self) -> int:
        return self.world_size * self.n_streams


@dataclass
class Batch:
    """One step's batch, made by one reader, with that reader's position after it."""

    images: torch.Tensor
    tokens: torch.Tensor
    caption_ids: torch.Tensor  # equal ids: equal captions (--caption-positives)
    step: int = 0
    reader: int = 0  # the reader's number among all ranks' readers
    position: ReaderPosition = field(default_factory=ReaderPosition)
    n_substituted: int = 0  # corrupt samples replaced in this batch


class StreamingBatches(IterableDataset):
    """The batches of this rank's steps ``start_step .. total_steps - 1``, each made by one
    reader (see the module doc) and carrying that reader's position after it."""

    def __init__(
        self,
        spec: StreamSpec,
        transform: Callable[[Any, np.random.Generator], torch.Tensor],
        collate: Collate,
        positions: Sequence[ReaderPosition | None] | None = None,
    ) -> None:
        self.spec, self.transform, self.collate = spec, transform, collate
        self.positions = list(positions) if positions is not None else [None] * spec.n_readers

    def __iter__(self) -> Iterator[Batch]:
        spec = self.spec
        info = get_worker_info()
        worker = info.id if info is not None else 0
        stream = (worker + spec.start_step) % spec.n_streams
        reader_id = spec.rank * spec.n_streams + stream
        reader = ShardReader(
            spec.shards,
            spec.seed,
            reader_id,
            spec.n_readers,
            spec.buffer,
            self.positions[reader_id],
            spec.retries,
        )
        for step in range(spec.start_step + worker, spec.total_steps, spec.n_streams):
            items, substituted = self._batch(reader, step)
            reader.count_substituted(substituted)
            batch = self.collate(items)
            batch.step, batch.reader, batch.n_substituted = step, reader_id, substituted
            batch.position = reader.position.copy()
            yield batch

    def _batch(self, reader: ShardReader, step: int) -> tuple[list[tuple[Any, str]], int]:
        spec = self.spec
        if spec.text_type in (None, "caption"):
            caption_key = "txt"
        else:
            caption_key = f"{text_type_for_step(spec.seed, step, spec.text_type)}.txt"
        items: list[tuple[Any, str]] = []
        substituted = in_a_row = 0
        while len(items) < spec.batch_size:
            sample = reader.next_sample()
            try:
                rng = np.random.default_rng(
                    np.random.SeedSequence([spec.seed, 5, step, spec.rank, len(items)])
                )
                items.append(load_sample(sample, caption_key, self.transform, rng))
                in_a_row = 0
            except Exception as exc:  # one unreadable sample must not stop training
                substituted += 1
                in_a_row += 1
                log.warning(
                    "skipping corrupt sample %s in %s (%s: %s)",
                    sample.get("__key__"),
                    sample.get("__url__"),
                    type(exc).__name__,
                    exc,
                )
                if in_a_row >= _MAX_SUBSTITUTES:
                    raise InputError(
                        f"{_MAX_SUBSTITUTES} consecutive unreadable samples in "
                        f"{sample.get('__url__')}"
                    ) from exc
        return items, substituted


def load_sample(
    sample: dict[str, Any], caption_key: str, transform, rng: np.random.Generator
) -> tuple[torch.Tensor, str]:
    """A raw sample's augmented image and its ``caption_key`` caption (``txt`` if absent)."""
    image = next((sample[s] for s in IMAGE_MEMBERS if s in sample), None)
    if image is None:
        raise ValueError("no image member")
    caption = sample.get(caption_key, sample.get("txt"))
    if caption is None:
        raise ValueError(f"no {caption_key} or txt caption")
    if isinstance(caption, bytes | bytearray):
        caption = decode_member("txt", bytes(caption))
    return transform(decode_rgb(image), rng), caption


def caption_ids(captions: Sequence[str]) -> torch.Tensor:
    """A stable integer per distinct caption (identical captions → identical id)."""
    return torch.tensor([zlib.crc32(c.encode("utf-8")) for c in captions], dtype=torch.int64)


class Collate:
    """Stacks images, tokenizes the step's captions, carries caption ids.

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

    def __call__(self, items: Sequence[tuple[torch.Tensor, str]]) -> Batch:
        images, captions = zip(*items, strict=True)
        return Batch(torch.stack(images), self.tokenize(captions), caption_ids(captions))


def unbatched(batch: Batch) -> Batch:
    """The DataLoader's collate for already-made batches (``batch_size=None``)."""
    return batch
