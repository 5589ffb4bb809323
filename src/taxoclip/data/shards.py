"""WebDataset shards in the TreeOfLife-200M layout (DESIGN sections 2 and 3).

Writing: every sample becomes the members ``<key>.json``, ``<key>.<textkey>.txt`` for each
shard text key, ``<key>.txt`` (the taxon caption, which stock open_clip reads through
``wds.rename(text="txt")``) and ``<key>.jpg``, in that order. Tars are byte-for-byte
deterministic so that a re-run of a pipeline can be checked with a hash, and ``sizes.json``
is written beside them because open_clip's ``get_dataset_size`` reads it.

Reading: webdataset's own tar streaming, with our grouping of members into samples and
our decoding, so that (a) the ``{}`` end-of-shard marker of webdataset >= 0.2.96 (which
breaks open_clip's ``tarfile_to_samples_nothrow`` with ``KeyError: 'fname'``) is handled,
and (b) every sample lost to a truncated tar or an undecodable image is counted, not
just logged, so a caller can report "N samples skipped".
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import tarfile
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import braceexpand

from taxoclip.errors import InputError, UsageError
from taxoclip.taxonomy import N_RANKS, SHARD_TEXT_KEYS, Lineage, clean_name, render_all

logger = logging.getLogger(__name__)

SIZES_FILE = "sizes.json"
DEFAULT_SAMPLES_PER_SHARD = 10_000
IMAGE_SUFFIXES: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")

#: Member suffixes of one sample in our layout, in the order they are written. The image
#: goes last on purpose: a tar cut short anywhere inside a sample then always leaves that
#: sample without its image, so the reader's ``require=("jpg", …)`` drops it even when
#: Python's tarfile ends the stream silently (it does when the cut falls in a header).
SHARD_MEMBER_SUFFIXES: tuple[str, ...] = (
    ("json",) + tuple(f"{key}.txt" for key in SHARD_TEXT_KEYS) + ("txt", "jpg")
)

# Characters that break the member name → (key, suffix) split webdataset does (it splits at
# the first dot of the basename) or that would turn a key into a directory inside the tar.
_BAD_KEY_CHARS = re.compile(r"[./\\\s]")
_SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{6})\.tar$")
# Braces and "::" are syntax in the URL specs open_clip and webdataset expand.
_BAD_PATTERN_PARTS = ("{", "}", "::")

Handler = Callable[[BaseException], bool]


# --------------------------------------------------------------------------- samples


@dataclass
class ShardSample:
    """One image with its lineage, ready to be written as a shard sample.

    ``meta`` holds ground truth that is not text (species id, sex, life stage …); it is
    written into ``<key>.json`` together with the full lineage and common name.
    """

    key: str
    jpg: bytes
    lineage: Lineage
    common_name: str = ""
    meta: dict | None = None


@dataclass
class ShardSet:
    """The shards one ``write_shards`` call produced, in order, with their sample counts."""

    paths: list[Path]
    sizes: list[int]

    @property
    def n_samples(self) -> int:
        return sum(self.sizes)

    @property
    def n_shards(self) -> int:
        return len(self.paths)

    @property
    def pattern(self) -> str:
        """The URL spec open_clip's ``--train-data`` expects.

        ``/abs/dir/shard-{000000..000009}.tar`` for contiguous shards of one prefix (what
        ``write_shards`` produces), the plain path for a single shard, else the paths
        joined by ``::`` (which open_clip and webdataset also accept).
        """
        if not self.paths:
            raise UsageError("an empty shard set has no URL pattern")
        paths = [Path(p).absolute() for p in self.paths]
        for path in paths:
            bad = [part for part in _BAD_PATTERN_PARTS if part in str(path)]
            if bad:
                raise UsageError(
                    f"shard path {path} contains {bad[0]!r}, which is syntax in shard URL "
                    "patterns; write the shards to a directory without it"
                )
        if len(paths) == 1:
            return str(paths[0])
        matches = [_SHARD_NAME.match(p.name) for p in paths]
        parents = {p.parent for p in paths}
        if all(matches) and len(parents) == 1:
            prefixes = {m["prefix"] for m in matches}
            indices = [int(m["index"]) for m in matches]
            first = indices[0]
            if len(prefixes) == 1 and indices == list(range(first, first + len(indices))):
                (prefix,) = prefixes
                last = indices[-1]
                return str(paths[0].parent / f"{prefix}-{{{first:06d}..{last:06d}}}.tar")
        return "::".join(str(p) for p in paths)

    @property
    def urls(self) -> list[str]:
        return [str(Path(p).absolute()) for p in self.paths]

    @classmethod
    def load(cls, directory: str | os.PathLike[str], prefix: str = "shard") -> ShardSet:
        """The shard set of ``prefix`` in ``directory``, as recorded in its ``sizes.json``.

        Lets a later stage (train, analyze) pick up shards without re-counting them.
        """
        directory = Path(directory)
        sizes = _read_sizes(directory / SIZES_FILE)
        if sizes is None:
            raise InputError(f"{directory / SIZES_FILE}: not found (not a taxoclip shard dir?)")
        entries = []
        for name, size in sizes.items():
            match = _SHARD_NAME.match(name)
            if match and match["prefix"] == prefix:
                entries.append((int(match["index"]), directory / name, int(size)))
        if not entries:
            raise InputError(f"{directory / SIZES_FILE}: lists no shards named {prefix}-NNNNNN.tar")
        entries.sort()
        missing = [str(path) for _, path, _ in entries if not path.is_file()]
        if missing:
            raise InputError(f"shard listed in sizes.json not found: {missing[0]}")
        return cls(paths=[p for _, p, _ in entries], sizes=[s for _, _, s in entries])


# --------------------------------------------------------------------------- writing


def write_shards(
    samples: Iterable[ShardSample],
    out_dir: str | os.PathLike[str],
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD,
    prefix: str = "shard",
    *,
    n_shards: int | None = None,
) -> ShardSet:
    """Write ``samples`` as deterministic WebDataset tars plus ``sizes.json``; return the set.

    Samples are streamed: at most one is held at a time. Shards are written to hidden
    temp files and renamed only once every sample was written, so a failure part-way
    (a bad key, an exception in the caller's generator) leaves the directory as it was.
    Shards of the same ``prefix`` left over from an earlier, larger run are removed and
    ``sizes.json`` entries of other prefixes are kept, so train and test sets can share a
    directory.

    ``n_shards`` spreads the samples evenly over exactly that many shards (sizes differ
    by at most one) instead of filling shards of ``samples_per_shard``; it needs a sized
    collection.
    """
    _check_prefix(prefix)
    if n_shards is not None:
        if not isinstance(samples, Collection):
            raise UsageError("n_shards needs a sized sequence of samples, not a stream")
        plan = _even_split(len(samples), n_shards)
    else:
        if isinstance(samples_per_shard, bool) or not isinstance(samples_per_shard, int):
            raise UsageError(f"samples_per_shard must be an integer, got {samples_per_shard!r}")
        if samples_per_shard < 1:
            raise UsageError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        plan = None
    out = _prepare_out_dir(out_dir)
    return _write(samples, out, prefix, plan, samples_per_shard)


def write_shards_split(
    samples: Sequence[ShardSample],
    out_dir: str | os.PathLike[str],
    n_shards: int,
    prefix: str = "shard",
) -> ShardSet:
    """Spread ``samples`` evenly over exactly ``n_shards`` shards (the CLI's ``--shards N``).

    More shards than samples would leave empty shards, which stall DataLoader workers
    assigned to them, so that is refused.
    """
    return write_shards(samples, out_dir, prefix=prefix, n_shards=n_shards)


def _even_split(n_samples: int, n_shards: int) -> list[int]:
    if isinstance(n_shards, bool) or not isinstance(n_shards, int):
        raise UsageError(f"the number of shards must be an integer, got {n_shards!r}")
    if n_shards < 1:
        raise UsageError(f"the number of shards must be >= 1, got {n_shards}")
    if n_shards > n_samples:
        raise UsageError(
            f"cannot spread {n_samples} sample(s) over {n_shards} shards: "
            "every shard needs at least one sample"
        )
    base, extra = divmod(n_samples, n_shards)
    return [base + (1 if index < extra else 0) for index in range(n_shards)]


def _check_prefix(prefix: str) -> None:
    if not isinstance(prefix, str) or not prefix:
        raise UsageError(f"shard prefix must be a non-empty string, got {prefix!r}")
    bad = [part for part in (*_BAD_PATTERN_PARTS, "/", "\\") if part in prefix]
    if bad or prefix != prefix.strip() or prefix.startswith("."):
        raise UsageError(f"shard prefix {prefix!r} cannot be used in a shard URL pattern")


def _prepare_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exn:
        raise UsageError(f"{out}: cannot create output directory ({exn.strerror})") from exn
    if not os.access(out, os.W_OK):
        raise UsageError(f"{out}: output directory is not writable")
    return out


def check_key(key: object) -> str:
    """Validate a sample key; webdataset splits member names at the first dot of the basename.

    A dot in a key would silently turn ``a.b.jpg`` into key ``a`` with suffix ``b.jpg``,
    mixing samples; a slash would make a directory inside the tar.
    """
    if not isinstance(key, str) or not key:
        raise UsageError(f"sample key must be a non-empty string, got {key!r}")
    if _BAD_KEY_CHARS.search(key):
        raise UsageError(
            f"sample key {key!r} contains a dot, slash or whitespace; webdataset splits "
            "member names at the first dot, so keys must not contain one"
        )
    if key.startswith("__"):
        raise UsageError(f"sample key {key!r} starts with '__', which webdataset reserves")
    return key


def _write(
    samples: Iterable[ShardSample],
    out: Path,
    prefix: str,
    plan: list[int] | None,
    samples_per_shard: int,
) -> ShardSet:
    seen: set[str] = set()
    sizes: list[int] = []
    temps: list[Path] = []
    finals: list[Path] = []
    tar: tarfile.TarFile | None = None
    try:
        for sample in samples:
            key = _check_sample(sample, seen)
            if tar is None or sizes[-1] >= _capacity(plan, len(sizes) - 1, samples_per_shard):
                if tar is not None:
                    tar.close()
                index = len(sizes)
                if plan is not None and index >= len(plan):
                    # Only reachable when a sequence's len() lied; the plan is from len().
                    raise UsageError(f"more samples than the {len(plan)} planned for")
                final = out / f"{prefix}-{index:06d}.tar"
                temp = out / f".{final.name}.{os.getpid()}.tmp"
                temps.append(temp)
                finals.append(final)
                sizes.append(0)
                # PAX: non-ASCII and long member names survive; headers stay deterministic
                # because every field that could vary is fixed in _member(). Not a `with`:
                # the tar stays open across samples and is closed on rollover or failure.
                tar = tarfile.open(temp, "w", format=tarfile.PAX_FORMAT, encoding="utf-8")  # noqa: SIM115
            for name, data in _sample_members(sample, key):
                tar.addfile(_member(name, len(data)), io.BytesIO(data))
            sizes[-1] += 1
        if tar is not None:
            tar.close()
            tar = None
        if not sizes:
            raise UsageError(f"no samples to write to {out}")
        if plan is not None and sizes != plan:
            raise UsageError(f"wrote {sum(sizes)} samples, expected {sum(plan)}")
        for temp, final in zip(temps, finals, strict=True):
            os.replace(temp, final)
    except BaseException:
        if tar is not None:
            tar.close()
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise
    _remove_stale(out, prefix, keep={f.name for f in finals})
    _update_sizes(out, prefix, dict(zip((f.name for f in finals), sizes, strict=True)))
    return ShardSet(paths=finals, sizes=sizes)


def _capacity(plan: list[int] | None, index: int, samples_per_shard: int) -> int:
    return plan[index] if plan is not None else samples_per_shard


def _check_sample(sample: ShardSample, seen: set[str]) -> str:
    if not isinstance(sample, ShardSample):
        raise UsageError(f"expected a ShardSample, got {type(sample).__name__}")
    key = check_key(sample.key)
    if key in seen:
        raise UsageError(f"duplicate sample key {key!r}: keys must be unique within a shard set")
    seen.add(key)
    if not isinstance(sample.jpg, bytes | bytearray | memoryview):
        raise UsageError(f"sample {key!r}: jpg must be bytes, got {type(sample.jpg).__name__}")
    if not isinstance(sample.lineage, Lineage):
        raise UsageError(
            f"sample {key!r}: lineage must be a Lineage, got {type(sample.lineage).__name__}"
        )
    if sample.meta is not None and not isinstance(sample.meta, dict):
        raise UsageError(f"sample {key!r}: meta must be a dict, got {type(sample.meta).__name__}")
    return key


def _sample_members(sample: ShardSample, key: str) -> list[tuple[str, bytes]]:
    common = clean_name(sample.common_name)
    texts = render_all(sample.lineage, common)
    record = _jsonable(dict(sample.meta or {}), key)
    for field_name, ours in (("lineage", sample.lineage.to_list()), ("common_name", common)):
        # Meta read back from one of our shards carries these already; a different value
        # would make the json disagree with the captions, so it is refused, not overwritten.
        if field_name in record and record[field_name] != ours:
            raise UsageError(
                f"sample {key!r}: meta[{field_name!r}] = {record[field_name]!r} disagrees "
                f"with the sample's {field_name} {ours!r}"
            )
        record[field_name] = ours
    payload = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    members = [(f"{key}.json", payload.encode("utf-8"))]
    members += [
        (f"{key}.{name}.txt", text.encode("utf-8")) for name, text in texts.items() if name != "txt"
    ]
    members.append((f"{key}.txt", texts["txt"].encode("utf-8")))
    members.append((f"{key}.jpg", bytes(sample.jpg)))
    return members


def _jsonable(value: Any, key: str) -> Any:
    """Plain JSON types; numpy scalars unwrapped, NaN → null (pandas' missing value)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(k): _jsonable(v, key) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, key) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        return _jsonable(value.item(), key)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise UsageError(f"sample {key!r}: meta value {value!r} ({type(value).__name__}) is not JSON")


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _remove_stale(out: Path, prefix: str, keep: set[str]) -> None:
    # A stale shard-000012.tar from an earlier, larger run would be read by a glob or a
    # hand-written pattern and disagree with sizes.json.
    for path in out.glob(f"{_glob_escape(prefix)}-*.tar"):
        match = _SHARD_NAME.match(path.name)
        if match and match["prefix"] == prefix and path.name not in keep:
            logger.info("removing stale shard %s", path)
            path.unlink()


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _read_sizes(path: Path) -> dict[str, int] | None:
    if not path.is_file():
        return None
    try:
        sizes = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exn:
        raise InputError(f"{path}: unreadable ({exn})") from exn
    if not isinstance(sizes, dict):
        raise InputError(f"{path}: expected a JSON object of shard name → sample count")
    return sizes


def _update_sizes(out: Path, prefix: str, ours: dict[str, int]) -> None:
    path = out / SIZES_FILE
    try:
        existing = _read_sizes(path) or {}
    except InputError as exn:
        logger.warning("%s; rewriting it", exn)
        existing = {}
    merged = {}
    for name, size in existing.items():
        match = _SHARD_NAME.match(name)
        if not (match and match["prefix"] == prefix) and (out / name).is_file():
            merged[name] = size
    merged.update(ours)
    text = json.dumps(dict(sorted(merged.items())), indent=1) + "\n"
    temp = out / f".{SIZES_FILE}.{os.getpid()}.tmp"
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


# --------------------------------------------------------------------------- reading


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


UrlSpec = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | ShardSet


def expand_urls(spec: UrlSpec) -> list[str]:
    """Shard URLs from a spec as open_clip takes it: ``::``-separated, brace-expanded.

    A sequence's elements are expanded the same way (open_clip leaves them as they are),
    so a command line can pass several patterns.
    """
    if isinstance(spec, ShardSet):
        return spec.urls
    parts = (
        [os.fspath(spec)] if isinstance(spec, str | os.PathLike) else [os.fspath(s) for s in spec]
    )
    urls = [
        url
        for part in parts
        for piece in part.split("::")
        if piece
        for url in braceexpand.braceexpand(piece)
    ]
    if not urls:
        raise UsageError(f"no shard URLs in {spec!r}")
    return urls


def _local_path(url: str) -> str | None:
    if url.startswith("file:"):
        return url[len("file:") :]
    if url.startswith("pipe:") or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+://", url):
        return None
    return url


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
        p for p in (_local_path(u) for u in expanded) if p is not None and not os.path.isfile(p)
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
            out = _decode_sample(sample, decode)
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
        from webdataset.tariterators import base_plus_ext

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
            key, suffix = base_plus_ext(member["fname"])
            if key is None:
                continue
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
        path = _local_path(url)
        if path is None:
            return None
        directory = Path(path).parent
        if directory not in self._sizes:
            try:
                self._sizes[directory] = _read_sizes(directory / SIZES_FILE)
            except InputError as exn:
                logger.debug("ignoring %s", exn)
                self._sizes[directory] = None
        sizes = self._sizes[directory]
        if not sizes:
            return None
        size = sizes.get(Path(path).name)
        return int(size) if isinstance(size, int | str) and str(size).isdigit() else None


def _decode_sample(sample: dict[str, Any], decode_images: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for suffix, value in sample.items():
        if suffix.startswith("__"):
            out[suffix] = value
        elif suffix.lower() in IMAGE_SUFFIXES:
            out[suffix] = _decode_image(value) if decode_images else value
        elif suffix == "txt" or suffix.endswith(".txt"):
            out[suffix] = value.decode("utf-8")
        elif suffix == "json":
            out[suffix] = json.loads(value.decode("utf-8"))
        else:
            out[suffix] = value
    return out


def _decode_image(data: bytes) -> Any:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decode now: a truncated file fails here, inside the skip-and-count
        return image.convert("RGB")


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
