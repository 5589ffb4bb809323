"""Reading WebDataset shards: streaming (``read_shards``, one shard at a time for training's
readers; ``open_shard`` opens local, ``pipe:``, http(s) and fsspec URLs with retries;
``shard_sizes`` reads the ``sizes.json`` beside them) and by random access (``scan_tar``,
``read_member``). The one place tar members become samples and bytes become values.

Streaming uses webdataset's own tar streaming, with our grouping of members into samples
and our decoding, so that (a) the ``{}`` end-of-shard marker of webdataset >= 0.2.96
(which breaks open_clip's ``tarfile_to_samples_nothrow`` with ``KeyError: 'fname'``) is
handled, and (b) every sample lost to a truncated tar or an undecodable image is counted,
not just logged, so a caller can report "N samples skipped".
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from taxoclip.errors import InputError
from taxoclip.taxonomy import N_RANKS, Lineage, clean_name

from .layout import (
    IMAGE_MEMBERS,
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
    retries: int | None = None,
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

    With ``retries`` set, shards are opened by :func:`open_shard` (local, ``pipe:``,
    http(s), fsspec URLs): a shard that cannot be opened is retried, then raises
    :class:`InputError` naming it, instead of going to ``handler``, and members are parsed
    by :func:`tar_members` (training's path); errors later in a stream (a truncated tar)
    are still counted and skipped.
    """
    expanded = expand_urls(urls)
    missing = [
        p for p in (local_path(u) for u in expanded) if p is not None and not os.path.isfile(p)
    ]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"shard not found: {missing[0]}{more}")
    stats = stats if stats is not None else ReadStats()
    return _iter_samples(expanded, decode, handler, stats, tuple(require), retries)


def _iter_samples(
    urls: list[str],
    decode: bool,
    handler: Handler,
    stats: ReadStats,
    require: tuple[str, ...],
    retries: int | None = None,
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

    if retries is None:
        sources = url_opener(({"url": url} for url in urls), handler=on_read_error)
        files = tar_file_expander(sources, handler=on_read_error)
    else:  # an unopenable shard is retried, then raised (InputError naming it)
        files = _expand_streams(urls, retries, on_read_error)
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


def _expand_streams(urls: list[str], retries: int, on_error: Handler) -> Iterator[dict[str, Any]]:
    """Tar members of each shard as webdataset's ``tar_file_expander`` gives them (``fname``,
    ``data``, ``__url__``; ``{}`` after each complete shard; a read error goes to
    ``on_error`` with the URL in its args), through :func:`tar_members`."""
    for url in urls:
        stream = open_shard(url, retries)
        try:
            for member in tar_members(stream):
                member["__url__"] = url
                yield member
        except Exception as exn:  # a truncated or damaged stream: the rest of the shard
            exn.args = (*exn.args, url)
            if not on_error(exn):
                return
            continue
        finally:
            stream.close()
        yield {}


_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
_META = re.compile(r"__[^/]*__($|/)")


def tar_members(stream: BinaryIO) -> Iterator[dict[str, Any]]:
    """The regular files of a tar stream as ``{"fname", "data"}``, in order.

    A plain tar is parsed here, header by header (ustar, pax and GNU long names), about
    ten times faster than Python's ``tarfile`` on shards of many small members; a
    compressed one goes through webdataset's ``tarfile`` reader. Like ``tarfile`` it
    raises ``tarfile.ReadError`` on a stream cut short inside a member or a bad header,
    and stops quietly at the end-of-archive block or at a clean end of stream.
    """
    head = stream.read(512)
    if head.startswith(_COMPRESSED):
        from webdataset.tariterators import tar_file_iterator

        yield from tar_file_iterator(_Prefixed(head, stream))
        return
    long_name: str | None = None
    header = head
    while True:
        if not header or header == _ZERO_BLOCK:
            return
        if len(header) < 512:
            raise tarfile.ReadError("unexpected end of data")
        if _checksum(header) != _octal(header[148:156]):
            raise tarfile.ReadError("bad checksum")
        size = _octal(header[124:136])
        kind = header[156:157]
        data = _read_exactly(stream, size + -size % 512)[:size]  # the member and its padding
        if kind in (b"x", b"L"):
            long_name = _pax_path(data) if kind == b"x" else data.rstrip(b"\0").decode()
        elif kind in (b"0", b"\0", b"7"):
            name = long_name or _header_name(header)
            long_name = None
            if not ("/" not in name and name.startswith("__") and name.endswith("__")) and not (
                _META.match(name)
            ):
                yield {"fname": name, "data": data}
        elif kind != b"g":
            long_name = None
        header = stream.read(512)


_ZERO_BLOCK = bytes(512)


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size) if size else b""
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            raise tarfile.ReadError("unexpected end of data")
        data += more
    return data


def _octal(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # base-256 (GNU) for big numbers
        return int.from_bytes(field[1:], "big") * (-1 if field[:1] == b"\xff" else 1)
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError as exc:
        raise tarfile.ReadError(f"invalid header field {field!r}") from exc


def _checksum(header: bytes) -> int:
    import numpy as np  # summing 512 bytes in numpy: ~10x faster than Python's sum

    total = int(np.frombuffer(header, dtype=np.uint8).sum(dtype=np.int64))
    return total - sum(header[148:156]) + 256  # the checksum field counts as 8 spaces


def _header_name(header: bytes) -> str:
    name = header[:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _pax_path(data: bytes) -> str | None:
    """The ``path`` of a pax extended header (records ``"<len> key=value\\n"``)."""
    position = 0
    while position < len(data):
        space = data.find(b" ", position)
        if space < 0:
            break
        length = int(data[position:space])
        key, _, value = data[space + 1 : position + length - 1].partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "surrogateescape")
        position += length
    return None


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
    if suffix.lower() in IMAGE_MEMBERS:
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


# ------------------------------------------------------------------- opening shards

#: Seconds before the first retry of a shard that cannot be opened; doubles each time.
RETRY_DELAY = float(os.environ.get("TAXOCLIP_RETRY_DELAY", "1.0"))


def open_shard(url: str, retries: int = 3) -> BinaryIO:
    """A readable byte stream of one shard, its first block already read successfully.

    Local paths and ``file:`` open directly; ``pipe:CMD``, ``http(s)://`` (curl) and the
    other webdataset schemes through webdataset's ``gopen``; any other ``scheme://`` through
    fsspec (``s3://``, ``gs://``, ``hf://`` … when their fsspec package is installed). The
    open and the first read are tried ``1 + retries`` times with a doubling delay, then
    :class:`InputError` names the URL and the last error.
    """
    last: BaseException | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(RETRY_DELAY * 2 ** (attempt - 1))
        stream = None
        try:
            stream = _open_url(url)
            head = stream.read(512)
            if not head:
                raise OSError("empty stream (nothing could be read)")
            return _Prefixed(head, stream)
        except Exception as exc:  # any opener failure: retry, then report it
            last = exc
            logger.warning(
                "cannot open shard %s (attempt %d of %d): %s", url, attempt + 1, retries + 1, exc
            )
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
    raise InputError(f"cannot read shard {url} after {retries + 1} attempts: {last}")


def _open_url(url: str) -> BinaryIO:
    path = local_path(url)
    if path is not None:
        return open(path, "rb")  # noqa: SIM115 (the caller closes it)
    from webdataset.gopen import gopen_schemes

    scheme = url.split(":", 1)[0]
    if scheme in gopen_schemes:
        from webdataset.gopen import gopen

        return gopen(url, "rb")
    import fsspec

    return fsspec.open(url, "rb").open()


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were read ahead (to test that it opens)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head, self._rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size is None or size < 0:
                head, self._head = self._head, b""
                return head + self._rest.read()
            head, self._head = self._head[:size], self._head[size:]
            return head if len(head) == size else head + self._rest.read(size - len(head))
        return self._rest.read(size)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._rest.close()
        super().close()


def shard_sizes(urls: list[str]) -> list[int | None]:
    """Each shard's sample count from the ``sizes.json`` beside it (local, http(s), fsspec,
    or beside the last ``*.tar`` word of a ``pipe:`` command); None where none lists it.
    Each folder's ``sizes.json`` is read once; no shard is opened."""
    folders: dict[str, dict[str, int] | None] = {}
    out: list[int | None] = []
    for url in urls:
        located = _sizes_location(url)
        if located is None:
            out.append(None)
            continue
        folder, name = located
        if folder not in folders:
            folders[folder] = _read_remote_sizes(folder)
        sizes = folders[folder] or {}
        size = sizes.get(name)
        out.append(int(size) if isinstance(size, int | str) and str(size).isdigit() else None)
    return out


def _sizes_location(url: str) -> tuple[str, str] | None:
    if url.startswith("pipe:"):
        words = [w for w in url[len("pipe:") :].split() if w.endswith(".tar")]
        if not words:
            return None
        url = words[-1]
    path = local_path(url)
    target = path if path is not None else url
    if "/" not in target:
        return "", target
    folder, name = target.rsplit("/", 1)
    return folder, name


def _read_remote_sizes(folder: str) -> dict[str, int] | None:
    target = f"{folder}/{SIZES_FILE}" if folder else SIZES_FILE
    if local_path(target) is not None:
        return read_sizes(Path(target))
    try:
        with open_shard(target, retries=1) as stream:
            sizes = json.loads(stream.read().decode("utf-8"))
    except (InputError, ValueError) as exc:
        logger.info("no usable %s: %s", target, exc)
        return None
    return sizes if isinstance(sizes, dict) else None


# ------------------------------------------------------------------- tar index


def scan_tar(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, tuple[int, int]]]]:
    """``(key, {suffix: (offset, size)})`` per sample of a local tar, from its headers only,
    grouped as ``read_shards`` groups them (training counts a shard missing from sizes.json
    with it, without decoding anything)."""
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
