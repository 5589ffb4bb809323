"""Writing WebDataset shards in the TreeOfLife-200M layout (see ``layout``).

Tars are byte-for-byte deterministic, so that a re-run of a pipeline can be checked with
a hash. A shard set appears whole or not at all: shards are written to temporaries and
renamed only once every sample was written (``taxoclip.files.replacing_files``).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import tarfile
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from taxoclip.errors import InputError, UsageError
from taxoclip.files import replacing_files, write_text_atomic
from taxoclip.taxonomy import Lineage, clean_name, render_all

from .layout import (
    BAD_PATTERN_PARTS,
    DEFAULT_SAMPLES_PER_SHARD,
    SHARD_NAME,
    SIZES_FILE,
    ShardSample,
    ShardSet,
    check_key,
    read_sizes,
)

logger = logging.getLogger(__name__)


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
    bad = [part for part in (*BAD_PATTERN_PARTS, "/", "\\") if part in prefix]
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


def _write(
    samples: Iterable[ShardSample],
    out: Path,
    prefix: str,
    plan: list[int] | None,
    samples_per_shard: int,
) -> ShardSet:
    seen: set[str] = set()
    sizes: list[int] = []
    finals: list[Path] = []
    tar: tarfile.TarFile | None = None
    with replacing_files() as temp_for:  # every shard, or none
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
                    finals.append(out / f"{prefix}-{index:06d}.tar")
                    sizes.append(0)
                    # PAX: non-ASCII and long member names survive; headers stay deterministic
                    # because every field that could vary is fixed in _member(). Not a `with`:
                    # the tar stays open across samples and is closed on rollover or failure.
                    tar = tarfile.open(  # noqa: SIM115
                        temp_for(finals[-1]), "w", format=tarfile.PAX_FORMAT, encoding="utf-8"
                    )
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
        finally:
            if tar is not None:  # closed before its temporary goes
                tar.close()
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
    if sample.caption is not None:
        if not isinstance(sample.caption, str) or not sample.caption.strip():
            raise UsageError(f"sample {key!r}: a caption must be a non-empty string")
    elif not isinstance(sample.lineage, Lineage):
        raise UsageError(
            f"sample {key!r}: lineage must be a Lineage, got {type(sample.lineage).__name__}"
        )
    if sample.meta is not None and not isinstance(sample.meta, dict):
        raise UsageError(f"sample {key!r}: meta must be a dict, got {type(sample.meta).__name__}")
    return key


def _sample_members(sample: ShardSample, key: str) -> list[tuple[str, bytes]]:
    if sample.caption is not None:  # a general image–caption pair: no taxonomic texts
        record = _jsonable(dict(sample.meta or {}), key)
        payload = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return [
            (f"{key}.json", payload.encode("utf-8")),
            (f"{key}.txt", " ".join(sample.caption.split()).encode("utf-8")),
            (f"{key}.jpg", bytes(sample.jpg)),
        ]
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
        match = SHARD_NAME.match(path.name)
        if match and match["prefix"] == prefix and path.name not in keep:
            logger.info("removing stale shard %s", path)
            path.unlink()


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _update_sizes(out: Path, prefix: str, ours: dict[str, int]) -> None:
    path = out / SIZES_FILE
    try:
        existing = read_sizes(path) or {}
    except InputError as exn:
        logger.warning("%s; rewriting it", exn)
        existing = {}
    merged = {}
    for name, size in existing.items():
        match = SHARD_NAME.match(name)
        if not (match and match["prefix"] == prefix) and (out / name).is_file():
            merged[name] = size
    merged.update(ours)
    text = json.dumps(dict(sorted(merged.items())), indent=1) + "\n"
    write_text_atomic(path, text)
