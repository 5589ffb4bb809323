"""The TreeOfLife-200M shard layout: what a sample is, how members are named, which shards
make a set. Shared by the writer (``write``) and the readers (``read``, training's index).

Every sample is the members ``<key>.json``, ``<key>.<textkey>.txt`` for each shard text
key, ``<key>.txt`` (the taxon caption, which stock open_clip reads as ``text``) and
``<key>.jpg``, in that order. ``sizes.json`` beside the tars lists each shard's sample
count (open_clip's ``get_dataset_size`` reads it).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import braceexpand

from taxoclip.errors import InputError, UsageError
from taxoclip.taxonomy import SHARD_TEXT_KEYS, Lineage

SIZES_FILE = "sizes.json"
DEFAULT_SAMPLES_PER_SHARD = 10_000
# The member suffixes (no dot) an image of a WebDataset sample may have; the suffixes of
# image *files* are taxoclip.runtime.images.IMAGE_SUFFIXES.
IMAGE_MEMBERS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")

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
SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{6})\.tar$")
# Braces and "::" are syntax in the URL specs open_clip and webdataset expand.
BAD_PATTERN_PARTS = ("{", "}", "::")
# A tar member name split into sample key and suffix, exactly as webdataset's
# ``base_plus_ext`` splits it: at the first dot of the basename, the folders kept in the key.
_MEMBER_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


@dataclass
class ShardSample:
    """One image with its lineage, ready to be written as a shard sample.

    ``meta`` holds ground truth that is not text (species id, sex, life stage …); it is
    written into ``<key>.json`` together with the full lineage and common name.

    A *caption* sample (``caption`` set, ``lineage`` None) is an image–caption pair of a
    general corpus, as LAION's shards hold them: only ``<key>.json``, ``<key>.txt`` (the
    caption) and ``<key>.jpg``; training reads it with ``--text-type caption`` or as
    ``--replay`` data.
    """

    key: str
    jpg: bytes
    lineage: Lineage | None
    common_name: str = ""
    meta: dict | None = None
    caption: str | None = None


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
            bad = [part for part in BAD_PATTERN_PARTS if part in str(path)]
            if bad:
                raise UsageError(
                    f"shard path {path} contains {bad[0]!r}, which is syntax in shard URL "
                    "patterns; write the shards to a directory without it"
                )
        if len(paths) == 1:
            return str(paths[0])
        matches = [SHARD_NAME.match(p.name) for p in paths]
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
        sizes = read_sizes(directory / SIZES_FILE)
        if sizes is None:
            raise InputError(f"{directory / SIZES_FILE}: not found (not a taxoclip shard dir?)")
        entries = []
        for name, size in sizes.items():
            match = SHARD_NAME.match(name)
            if match and match["prefix"] == prefix:
                entries.append((int(match["index"]), directory / name, int(size)))
        if not entries:
            raise InputError(f"{directory / SIZES_FILE}: lists no shards named {prefix}-NNNNNN.tar")
        entries.sort()
        missing = [str(path) for _, path, _ in entries if not path.is_file()]
        if missing:
            raise InputError(f"shard listed in sizes.json not found: {missing[0]}")
        return cls(paths=[p for _, p, _ in entries], sizes=[s for _, _, s in entries])


def split_member_name(name: str) -> tuple[str, str] | None:
    """``(key, suffix)`` of a tar member name (``"a/0001.taxon.txt"`` → ``("a/0001",
    "taxon.txt")``); None for a name without a suffix, which belongs to no sample."""
    match = _MEMBER_NAME.match(name)
    return (match.group(1), match.group(2)) if match else None


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


def local_path(url: str) -> str | None:
    if url.startswith("file:"):
        return url[len("file:") :]
    if url.startswith("pipe:") or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+://", url):
        return None
    return url


def read_sizes(path: Path) -> dict[str, int] | None:
    if not path.is_file():
        return None
    try:
        sizes = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exn:
        raise InputError(f"{path}: unreadable ({exn})") from exn
    if not isinstance(sizes, dict):
        raise InputError(f"{path}: expected a JSON object of shard name → sample count")
    return sizes
