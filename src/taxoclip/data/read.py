"""Reading WebDataset shards: streaming (``read_shards``) and by random access (``scan_tar``
and ``decode_member``, which training's index uses). The one place tar members become
samples and bytes become values.

Streaming uses webdataset's own tar streaming, with our grouping of members into samples
and our decoding, so that (a) the ``{}`` end-of-shard marker of webdataset >= 0.2.96
(which breaks open_clip's ``tarfile_to_samples_nothrow`` with ``KeyError: 'fname'``) is
handled, and (b) every sample lost to a truncated tar or an undecodable image is counted,
not just logged, so a caller can report "N samples skipped".
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from taxoclip.errors import InputError
from taxoclip.taxonomy import N_RANKS, Lineage, clean_name

from .layout import (
    IMAGE_SUFFIXES,
    SIZES_FILE,
    UrlSpec,
    expand_urls,
    local_path,
    read_sizes,
    split_member_name,
)

logger = logging.getLogger(__name__)

Handler = Callable[[BaseException], bool]


@dataclass
class ReadStats:
    """What ``read_shards`` lost, so callers can report it (exit status 3: partial).

    Counts are per process: with DataLoader workers, each worker keeps its own copy.
    """

    n_samples: int = 0  # samples yielded
    n_skipped: int = 0  # samples dropped: undecodable, incomplete, cut short by a read error
    n_read_errors: int = 0  # errors reading the tar stream itself (truncated, not a tar)
    n_missing: int = 0  # samples sizes.json lists but a (truncated) shard did not hold
    bad_shards: set[str] = field(default_factory=set)
    messages: list[str] = field(default_factory=list)
    max_messages: int = 100

    def note(self, message: str) -> None:
        logger.warning(message)
        if len(self.messages) < self.max_messages:
            self.messages.append(message)

    @property
    def n_lost(self) -> int:
        """Samples not delivered: skipped plus missing."""
        return self.n_skipped + self.n_missing

    @property
    def ok(self) -> bool:
        return self.n_lost == 0 and self.n_read_errors == 0

    def summary(self) -> str:
        text = f"{self.n_samples} samples read, {self.n_skipped} skipped"
        if self.n_missing:
            text += f", {self.n_missing} missing from truncated shards"
        if self.n_read_errors or self.bad_shards:
            text += f"; {self.n_read_errors} read error(s), {len(self.bad_shards)} bad shard(s)"
        return text


def log_and_continue(exn: BaseException) -> bool:
    """Default handler: the error is already logged and counted by the reader; go on."""
    return True


def read_shards(
    urls: UrlSpec,
    decode: bool = True,
    handler: Handler = log_and_continue,
    *,
    stats: ReadStats | None = None,
    require: Collection[str] = ("jpg", "txt"),
) -> Iterator[dict[str, Any]]:
    """Iterate the samples of ``urls`` in order, as dicts keyed by member suffix.

    ``jpg`` (and other image suffixes) become PIL RGB images when ``decode`` is true and
    stay bytes otherwise (for hashing, re-sharding); ``*.txt`` are str and ``json`` a dict.
    ``__key__`` and ``__url__`` say where a sample came from.

    Broken input is never fatal by default: a sample whose image or text cannot be
    decoded, that lacks a ``require``d member, or that a tar read error cut short is
    skipped, logged and counted in ``stats``; shard-level errors go to ``handler`` too
    (webdataset's convention: return True to go on, False to stop, or raise). Missing
    local shard files raise :class:`InputError` at once, before iteration starts.
    """
    expanded = expand_urls(urls)
    missing = [
        p for p in (local_path(u) for u in expanded) if p is not None and not os.path.isfile(p)
    ]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"shard not found: {missing[0]}{more}")
    stats = stats if stats is not None else ReadStats()
    return _iter_samples(expanded, decode, handler, stats, tuple(require))


def _iter_samples(
    urls: list[str], decode: bool, handler: Handler, stats: ReadStats, require: tuple[str, ...]
) -> Iterator[dict[str, Any]]:
    # webdataset is imported here: it imports torch, and importing taxoclip.data is cheap.
    from webdataset.tariterators import tar_file_expander, url_opener

    grouper = _Grouper(urls, stats, require)

    def on_read_error(exn: BaseException) -> bool:
        stats.n_read_errors += 1
        where = next((a for a in reversed(exn.args) if isinstance(a, str) and a in urls), None)
        if where:
            stats.bad_shards.add(where)
        reason = exn.args[0] if exn.args else exn  # webdataset appends stream and url
        stats.note(f"shard read error{f' in {where}' if where else ''}: {reason!r}")
        go_on = handler(exn)
        grouper.stopped = grouper.stopped or not go_on
        return go_on

    sources = url_opener(({"url": url} for url in urls), handler=on_read_error)
    files = tar_file_expander(sources, handler=on_read_error)
    for sample in grouper.run(files):
        try:
            out = decode_sample(sample, decode)
        except Exception as exn:  # any decoder failure means one bad sample, not a bad run
            stats.n_skipped += 1
            stats.note(
                f"skipping sample {sample['__key__']!r} of {sample['__url__']}: "
                f"cannot decode ({type(exn).__name__}: {exn})"
            )
            if not handler(exn):
                return
            continue
        stats.n_samples += 1
        yield out
        if grouper.stopped:
            return


class _Grouper:
    """Groups tar members into samples (consecutive members sharing a key) and accounts.

    Ours rather than webdataset's ``group_by_keys`` so that every loss is counted:
    - a sample open when a read error struck is dropped as cut short (the error surfaces
      while pulling the next member, so a rise in the error count between two members
      marks the open sample);
    - a sample lacking a required member is dropped as incomplete;
    - a shard that ends with fewer samples than its ``sizes.json`` entry (a tar truncated
      at a sample boundary ends silently in Python's tarfile) has the rest counted missing.
    The ``{}`` end-of-shard marker of webdataset >= 0.2.96 just closes the open sample.
    """

    def __init__(self, urls: list[str], stats: ReadStats, require: tuple[str, ...]) -> None:
        self.urls = urls
        self.stats = stats
        self.require = require
        self.stopped = False
        self._next_shard = 0  # urls before this index are started or finished
        self._reading: str | None = None
        self._seen: dict[str, int] = {}  # samples met so far, per shard being read
        self._repeated = {url for url, n in Counter(urls).items() if n > 1}
        self._sizes: dict[Path, dict[str, int] | None] = {}

    def run(self, files: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        current: dict[str, Any] | None = None
        errors = self.stats.n_read_errors
        for member in files:
            if self.stats.n_read_errors != errors:
                errors = self.stats.n_read_errors
                self._cut_short(current)
                current = None
            if not member or "fname" not in member:  # end-of-shard marker
                yield from self._finish(current)
                current = None
                continue
            split = split_member_name(member["fname"])
            if split is None:
                continue
            key, suffix = split
            # Suffix case kept, unlike webdataset's default: TreeOfLife spells taxonTag.txt.
            url = member.get("__url__", "")
            if current is None or key != current["__key__"] or url != current["__url__"]:
                yield from self._finish(current)
                self._reach(url)
                current = {"__key__": key, "__url__": url}
            elif suffix in current:
                self.stats.note(f"duplicate member {member['fname']!r} in {url}; keeping the first")
                continue
            current[suffix] = member["data"]
        if self.stats.n_read_errors != errors:
            self._cut_short(current)
            current = None
        yield from self._finish(current)
        if not self.stopped:
            self._reach(None)

    def _cut_short(self, sample: dict[str, Any] | None) -> None:
        if sample is not None:
            self._count(sample)
            self.stats.n_skipped += 1
            self.stats.note(
                f"skipping sample {sample['__key__']!r} of {sample['__url__']}: "
                "cut short by a read error"
            )

    def _finish(self, sample: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
        if sample is None:
            return
        self._count(sample)
        lacking = [suffix for suffix in self.require if suffix not in sample]
        if lacking:
            self.stats.n_skipped += 1
            self.stats.note(
                f"skipping sample {sample['__key__']!r} of {sample['__url__']}: "
                f"incomplete, no {', '.join(lacking)}"
            )
            return
        yield sample

    def _count(self, sample: dict[str, Any]) -> None:
        url = sample["__url__"]
        self._seen[url] = self._seen.get(url, 0) + 1

    def _reach(self, url: str | None) -> None:
        """Shards are read in order: reaching ``url`` (None: the end) finishes those before,
        including any that yielded nothing at all (unopenable, not a tar)."""
        if url is not None and url == self._reading:
            return
        if self._reading is not None:
            self._check_complete(self._reading)
            self._reading = None
        try:
            stop_at = len(self.urls) if url is None else self.urls.index(url, self._next_shard)
        except ValueError:  # not from our list (cannot happen with webdataset's opener)
            return
        for skipped in self.urls[self._next_shard : stop_at]:
            self._check_complete(skipped)
        self._next_shard = stop_at + 1
        self._reading = url

    def _check_complete(self, url: str) -> None:
        seen = self._seen.pop(url, 0)
        if url in self._repeated:
            return  # a shard listed twice cannot be told apart from its repeat
        expected = self._expected(url)
        if expected is not None and seen < expected:
            self.stats.n_missing += expected - seen
            self.stats.bad_shards.add(url)
            self.stats.note(
                f"{url}: {expected - seen} of {expected} samples listed in {SIZES_FILE} "
                "are missing (truncated shard?)"
            )

    def _expected(self, url: str) -> int | None:
        path = local_path(url)
        if path is None:
            return None
        directory = Path(path).parent
        if directory not in self._sizes:
            try:
                self._sizes[directory] = read_sizes(directory / SIZES_FILE)
            except InputError as exn:
                logger.debug("ignoring %s", exn)
                self._sizes[directory] = None
        sizes = self._sizes[directory]
        if not sizes:
            return None
        size = sizes.get(Path(path).name)
        return int(size) if isinstance(size, int | str) and str(size).isdigit() else None


def decode_sample(sample: dict[str, Any], decode_images: bool) -> dict[str, Any]:
    """Every member of a grouped sample decoded (``decode_member``); ``__key__`` … kept."""
    return {
        suffix: value if suffix.startswith("__") else decode_member(suffix, value, decode_images)
        for suffix, value in sample.items()
    }


def decode_member(suffix: str, value: bytes, decode_images: bool = True) -> Any:
    """One member's bytes as a value: images → PIL RGB (``decode_images``, else the bytes),
    ``*.txt`` → str, ``json`` → dict, anything else stays bytes."""
    if suffix.lower() in IMAGE_SUFFIXES:
        return decode_image(value) if decode_images else value
    if suffix == "txt" or suffix.endswith(".txt"):
        return value.decode("utf-8")
    if suffix == "json":
        return json.loads(value.decode("utf-8"))
    return value


def decode_image(data: bytes) -> Any:
    """A PIL RGB image, decoded now: a truncated file fails here, not later."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.convert("RGB")


def decode_rgb(data: bytes) -> Any:
    """An RGB image as a (3, H, W) uint8 tensor through torchvision's libjpeg-turbo (~4×
    faster than PIL on small JPEGs, for training), or as PIL RGB for whatever torchvision
    cannot read. Raises if neither can."""
    import torch
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_image as tv_decode

    try:
        return tv_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        return decode_image(data)


# ------------------------------------------------------------------- random access


def scan_tar(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, tuple[int, int]]]]:
    """``(key, {suffix: (offset, size)})`` per sample of a local tar, from its headers only,
    grouped as ``read_shards`` groups them: the index random-access readers seek by."""
    try:
        with tarfile.open(path, "r:") as tar:
            current, parts = None, {}
            for info in tar:
                split = split_member_name(info.name) if info.isfile() else None
                if split is None:
                    continue
                key, suffix = split
                if key != current:
                    if current is not None:
                        yield current, parts
                    current, parts = key, {}
                parts.setdefault(suffix, (info.offset_data, info.size))  # first wins, as streamed
            if current is not None:
                yield current, parts
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"cannot read shard {path}: {exc}") from exc


def read_member(handle: BinaryIO, offset: int, size: int) -> bytes:
    """The bytes of one member found by ``scan_tar``, from an open shard file."""
    handle.seek(offset)
    return handle.read(size)


def sample_to_record(sample: dict[str, Any]) -> tuple[Lineage, str]:
    """The (lineage, common name) a read sample was written from.

    ``taxonomic_name.txt`` skips missing ranks, so holes cannot be rebuilt from it: the
    full lineage comes from ``json["lineage"]``. Foreign shards without it are accepted
    only when their taxonomic name has all seven ranks and agrees with the scientific name.
    """
    meta = sample.get("json")
    if isinstance(meta, bytes | bytearray):
        meta = json.loads(bytes(meta).decode("utf-8"))
    key = sample.get("__key__", "?")
    if isinstance(meta, dict) and "lineage" in meta:
        ranks = meta["lineage"]
        if not isinstance(ranks, list) or len(ranks) != N_RANKS:
            raise InputError(f"sample {key!r}: json lineage must be a list of {N_RANKS} names")
        return Lineage.from_ranks(ranks), clean_name(meta.get("common_name", ""))
    name = _text(sample.get("taxonomic_name.txt"))
    common = clean_name(_text(sample.get("common_name.txt")))
    ranks = name.split()
    if len(ranks) == N_RANKS:
        lineage = Lineage.from_ranks(ranks)
        scientific = _text(sample.get("scientific_name.txt"))
        if not scientific or clean_name(scientific) == lineage.species_binomial:
            return lineage, common
    raise InputError(
        f"sample {key!r}: no json lineage, and taxonomic_name {name!r} cannot be split into "
        f"{N_RANKS} ranks unambiguously (missing ranks are skipped in it)"
    )


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    return str(value)
