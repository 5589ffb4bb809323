"""Exact and near-duplicate removal, and leak detection against evaluation images.

Near duplicates are PDQ hashes (256 bits, from :mod:`taxoclip.curate.images`) within a
Hamming radius, found by multi-index hashing, not an all-pairs loop: in memory with faiss
(``HammingIndex``, ``near_duplicates``), and as group-bys over Ray Data in the curation
pipeline (``band_keys`` → candidate pairs → ``hamming`` → ``greedy_keepers``), which
keeps exactly the records ``near_duplicates`` keeps.

Measured on SynthToL, 32 px images squash-upscaled to 288 px (tests/curate/test_dedup.py
builds the same sample):

- false positives: no two *different* images within Hamming 10 (closest pair 58 bits
  apart among 400 images, 30 among 12,000), so no pixel verification step is used at the
  default radius; the ``verify`` hooks are there for callers that widen it. (Thumbnail
  checks would not help here anyway: different SynthToL images correlate at 0.98–0.99 as
  32×32 grey thumbnails, more than an image and its own 3 % crop.)
- recall at radius 10: JPEG q60–80 1.00, rescale 0.8–0.95 1.00, brightness ±5 % 1.00,
  a 32 px test image re-hosted at 224–320 px vs the 32 px original 0.99 (111 of 112).
- crops are PDQ's weak spot (its 16×16 DCT bits follow content position): crops of
  ≤ 0.5 % are found (0.98), ≤ 1 % only 0.75, ≤ 3 % 0.29 — a shifted or cropped copy is
  not reliably a near duplicate here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from taxoclip.curate.images import PDQ_BYTES, open_image, pdq_hash, to_rgb
from taxoclip.errors import InputError, UsageError
from taxoclip.runtime.images import IMAGE_SUFFIXES  # what counts as an image, everywhere

CODE_BITS = PDQ_BYTES * 8
# Beyond this radius each of the 16 tables would be probed with ≥ 4 of 16 bits flipped
# (2,517 buckets per table and query): a linear scan is the simpler choice there.
_MAX_MULTIHASH_RADIUS = 63
_QUERY_CHUNK = 65_536  # bounds the memory of one faiss range search

Verify = Callable[[int, int], bool]


class HammingIndex:
    """Codes of 256 bits, searched for all neighbours within ``radius`` (inclusive).

    Multi-index hashing (faiss ``IndexBinaryMultiHash``): each code is cut into ``nhash``
    substrings of ``b`` bits, each looked up in its own hash table with up to ``nflip``
    bits flipped. Two codes within distance r differ in at most ⌊r / nhash⌋ bits of some
    substring (pigeonhole), so ``nflip = ⌊r / nhash⌋`` makes the search exact, not
    approximate. For r = 10: 11 substrings of 23 bits, exact lookups only. Candidates are
    then checked at full length, so only true neighbours come back.
    """

    def __init__(self, radius: int = 10) -> None:
        if not 0 <= radius <= CODE_BITS:
            raise UsageError(f"Hamming radius must be within 0..{CODE_BITS}, got {radius}")
        self.radius = int(radius)
        if radius > _MAX_MULTIHASH_RADIUS:
            self._index: Any = faiss.IndexBinaryFlat(CODE_BITS)
        else:
            nhash = min(max(radius + 1, 4), 16)  # b = 256 / nhash stays within 16..64 bits
            self._index = faiss.IndexBinaryMultiHash(CODE_BITS, nhash, CODE_BITS // nhash)
            self._index.nflip = radius // nhash

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, codes: np.ndarray | Sequence[bytes]) -> None:
        """Add codes; they get ids ``len(self)``, ``len(self) + 1``, … in order."""
        array = as_codes(codes)
        if len(array):
            self._index.add(array)

    def neighbours(self, codes: np.ndarray | Sequence[bytes]) -> list[np.ndarray]:
        """For each query, the ids within ``radius``, nearest first (ties by id)."""
        return [ids for ids, _ in self.search(codes)]

    def search(self, codes: np.ndarray | Sequence[bytes]) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each query, ``(ids, distances)`` within ``radius``, nearest first."""
        queries = as_codes(codes)
        found: list[tuple[np.ndarray, np.ndarray]] = []
        for start in range(0, len(queries), _QUERY_CHUNK):
            chunk = queries[start : start + _QUERY_CHUNK]
            if len(self) == 0:
                empty = (np.empty(0, np.int64), np.empty(0, np.int32))
                found.extend(empty for _ in range(len(chunk)))
                continue
            # faiss keeps distances strictly below the radius it is given.
            limits, distances, ids = self._index.range_search(chunk, self.radius + 1)
            limits = limits.astype(np.int64)  # faiss gives uint64
            rows = np.repeat(np.arange(len(chunk)), np.diff(limits))
            order = np.lexsort((ids, distances, rows))  # per query: nearest, then lowest id
            bounds = limits[1:-1]
            found.extend(
                zip(
                    np.split(ids[order].astype(np.int64), bounds),
                    np.split(distances[order].astype(np.int32), bounds),
                    strict=True,
                )
            )
        return found


def as_codes(codes: np.ndarray | Sequence[bytes]) -> np.ndarray:
    """Codes as a C-contiguous ``uint8`` array of shape (n, 32), from an array or bytes."""
    if isinstance(codes, np.ndarray):
        array = codes
    else:
        items = list(codes)
        bad = [i for i, code in enumerate(items) if len(code) != PDQ_BYTES]
        if bad:
            raise UsageError(
                f"{len(bad)} codes are not {PDQ_BYTES} bytes long (first at index {bad[0]}); "
                "drop records whose image was rejected before deduplicating"
            )
        array = np.frombuffer(b"".join(items), dtype=np.uint8).reshape(len(items), PDQ_BYTES)
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != PDQ_BYTES:
        raise UsageError(
            f"codes must be uint8 of shape (n, {PDQ_BYTES}), got {array.dtype} {array.shape}"
        )
    return np.ascontiguousarray(array)


def exact_duplicates(md5s: Sequence[str], priority: Sequence[Any]) -> dict[int, int]:
    """Records whose bytes are identical: ``{dropped index: kept index}``.

    In each group of equal ``md5s`` the record first by ``priority`` (a sort key per
    record, e.g. ``(-pixels, record_id)``) is kept. Make the key unique (end it with the
    record id): ties fall back to the index, which depends on input order.
    """
    _check_lengths(len(md5s), priority)
    keeper: dict[str, int] = {}
    for index in _priority_order(priority):
        keeper.setdefault(md5s[index], index)
    return {i: keeper[md5] for i, md5 in enumerate(md5s) if keeper[md5] != i}


def near_duplicates(
    codes: np.ndarray | Sequence[bytes],
    priority: Sequence[Any],
    radius: int = 10,
    verify: Verify | None = None,
) -> dict[int, int]:
    """Records within ``radius`` of a record kept before them: ``{dropped: kept}``.

    Greedy keeper assignment, not connected components: records are visited in
    ``priority`` order; one not yet dropped is kept and drops every not-yet-kept record
    within the radius of it (and accepted by ``verify(kept, candidate)``, if given).
    Connected components would chain A~B~C and drop C for a keeper A it does not resemble
    — a camera-trap burst or a slowly changing series would collapse into one image —
    whereas here every dropped record is itself within the radius of its keeper, so each
    rejection can be checked on its own. Deterministic for a unique ``priority``.
    """
    array = as_codes(codes)
    _check_lengths(len(array), priority)
    index = HammingIndex(radius)
    index.add(array)
    neighbours = index.neighbours(array)
    dropped: dict[int, int] = {}
    kept: set[int] = set()
    for keep in _priority_order(priority):
        if keep in dropped:
            continue
        kept.add(keep)
        for candidate in neighbours[keep].tolist():
            if candidate in kept or candidate in dropped:
                continue
            if verify is None or verify(keep, candidate):
                dropped[candidate] = keep
    return dict(sorted(dropped.items()))


def leaks(
    codes: np.ndarray | Sequence[bytes],
    eval_codes: np.ndarray | Sequence[bytes],
    radius: int = 10,
    verify: Verify | None = None,
) -> dict[int, int]:
    """Records that are copies of an evaluation image: ``{index: nearest eval index}``.

    The evaluation codes are indexed (usually the smaller side) and every record queried;
    ``verify(index, eval_index)`` may veto a candidate, the nearest accepted one is named.
    """
    index = HammingIndex(radius)
    index.add(eval_codes)
    found: dict[int, int] = {}
    for record, (ids, _) in enumerate(index.search(codes)):
        for eval_index in ids.tolist():
            if verify is None or verify(record, eval_index):
                found[record] = eval_index
                break
    return found


# --------------------------------------------------------------------------- bands
# Multi-index hashing as group-bys: the 256 bits are cut into radius + 1 disjoint bands, so
# two codes within the radius agree exactly on at least one band (pigeonhole). Records equal
# on a band are candidate pairs; each pair is verified at full length and reported once,
# by the first band it agrees on.

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def band_bounds(radius: int) -> list[tuple[int, int]]:
    """``radius + 1`` contiguous bit ranges ``[start, stop)`` covering the 256 bits."""
    if not 0 <= radius < CODE_BITS:
        raise UsageError(f"Hamming radius must be within 0..{CODE_BITS - 1}, got {radius}")
    n = radius + 1
    edges = [round(k * CODE_BITS / n) for k in range(n + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def band_keys(codes: np.ndarray | Sequence[bytes], radius: int) -> list[list[bytes]]:
    """Per band, per code: the band's bits packed into bytes, prefixed by the band number
    (one byte), so one key column holds every band and equal keys mean the same band."""
    bits = np.unpackbits(as_codes(codes), axis=1)
    keys = []
    for band, (start, stop) in enumerate(band_bounds(radius)):
        packed = np.packbits(bits[:, start:stop], axis=1)
        prefix = bytes([band])
        keys.append([prefix + row.tobytes() for row in packed])
    return keys


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between rows of ``a`` and ``b`` (uint8 (n, 32) each, or broadcast)."""
    return _POPCOUNT[np.bitwise_xor(a, b)].sum(axis=-1, dtype=np.int32)


def first_common_band(a: bytes, b: bytes, radius: int) -> int:
    """The first band on which two codes agree exactly, or -1."""
    for band, keys in enumerate(band_keys([a, b], radius)):
        if keys[0] == keys[1]:
            return band
    return -1


def greedy_keepers(
    priority: dict[str, Any], edges: Sequence[tuple[str, str, int]]
) -> dict[str, tuple[str, int]]:
    """The greedy keeper rule of ``near_duplicates`` on an explicit candidate graph.

    ``priority`` gives each record in the graph its sort key (unique, e.g. ``(-pixels,
    record_id)``), ``edges`` the verified pairs ``(a, b, distance)``. Records are visited
    in priority order; one not yet dropped is kept and drops every not-yet-kept neighbour.
    Returns ``{dropped: (keeper, distance)}``; records outside the graph are all kept.
    """
    neighbours: dict[str, list[tuple[str, int]]] = {}
    for a, b, distance in edges:
        neighbours.setdefault(a, []).append((b, distance))
        neighbours.setdefault(b, []).append((a, distance))
    dropped: dict[str, tuple[str, int]] = {}
    kept: set[str] = set()
    for keep in sorted(neighbours, key=lambda r: priority[r]):
        if keep in dropped:
            continue
        kept.add(keep)
        for candidate, distance in neighbours[keep]:
            if candidate not in kept and candidate not in dropped:
                dropped[candidate] = (keep, distance)
    return dropped


def nearest_within(
    codes: np.ndarray, eval_codes: np.ndarray, radius: int, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """For each code, the nearest evaluation code within ``radius`` (ties: lowest index):
    ``(indices, distances)``, index -1 where none is that close. Brute force in chunks —
    evaluation sets are small and broadcast to every worker."""
    n = len(codes)
    best = np.full(n, -1, dtype=np.int64)
    best_d = np.full(n, CODE_BITS + 1, dtype=np.int32)
    for start in range(0, len(eval_codes), chunk):
        part = eval_codes[start : start + chunk]
        d = hamming(codes[:, None, :], part[None, :, :])  # (n, chunk)
        j = d.argmin(axis=1)
        dj = d[np.arange(n), j]
        better = dj < best_d  # strict: an earlier chunk wins ties (lower index)
        best[better], best_d[better] = j[better] + start, dj[better]
    best[best_d > radius] = -1
    return best, best_d


def hash_folder(folder: str | os.PathLike[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """PDQ codes of every image under ``folder`` (recursively), for ``--exclude-eval``.

    Returns ``(codes, names, problems)``: codes (n, 32) uint8 in the order of ``names``
    (paths relative to ``folder``, sorted); files that cannot be read or decoded are not
    fatal, they are listed in ``problems`` as ``"name: reason"``. Images are hashed at
    their own size, whatever it is (no minimum size applies to evaluation images).
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"evaluation folder {root}: not a folder")
    paths = sorted(
        (p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    codes: list[bytes] = []
    names: list[str] = []
    problems: list[str] = []
    for path in paths:
        name = path.relative_to(root).as_posix()
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append(f"{name}: cannot read: {exc.strerror or exc}")
            continue
        opened = open_image(data)
        if opened.reason:
            problems.append(f"{name}: {opened.reason}")
            continue
        assert opened.image is not None
        try:
            code, _ = pdq_hash(to_rgb(opened.image))
        except Exception as exc:  # noqa: BLE001 - one odd file must not stop the folder
            problems.append(f"{name}: convert: {exc}")
            continue
        codes.append(code)
        names.append(name)
    return as_codes(codes), names, problems


def _priority_order(priority: Sequence[Any]) -> list[int]:
    return sorted(range(len(priority)), key=lambda i: (priority[i], i))


def _check_lengths(n: int, priority: Sequence[Any]) -> None:
    if len(priority) != n:
        raise UsageError(f"priority has {len(priority)} keys for {n} records")
