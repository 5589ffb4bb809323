"""Writing files so a reader never sees half of one: temp sibling, then ``os.replace``.

The one place that renames files into place. Every writer in taxoclip goes through it:

- ``replacing(path)``: one file (``write_text_atomic``, ``write_parquet_atomic`` for the
  common cases);
- ``replacing_files()``: several files that appear together or not at all (shards, an
  index of two files);
- ``replacing_dir(path)``: a whole folder, built beside its final place.

Temporaries are hidden siblings named ``.<name>.<pid>-<random>.tmp``: on the same file
system (so the rename is atomic), unique per writer (threads and processes may write the
same path at once; the last rename wins, and every version is whole), and recognisable,
so ``remove_stale_temps`` can clear what a killed writer left behind.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

_TEMP_SUFFIX = ".tmp"


def temp_sibling(path: str | os.PathLike) -> Path:
    """A fresh, unused hidden name beside ``path`` (nothing is created)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}{_TEMP_SUFFIX}")


def remove_stale_temps(path: str | os.PathLike, older_than: float) -> int:
    """Delete temporaries of ``path`` untouched for ``older_than`` seconds (a live writer's
    are younger); returns how many went. Errors are ignored: another process may race us."""
    path = Path(path)
    now, removed = time.time(), 0
    for temp in path.parent.glob(f".{_glob_escape(path.name)}.*{_TEMP_SUFFIX}"):
        try:
            if now - temp.stat().st_mtime > older_than:
                temp.unlink()
                removed += 1
        except OSError:
            pass
    return removed


@contextmanager
def replacing(path: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; it replaces ``path`` only on success.

    ``durable`` flushes the written file to disk before the rename, so that after a power
    cut ``path`` holds either the old or the new content (checkpoints, caches).
    """
    with replacing_files(durable=durable) as temp_for:
        yield temp_for(path)


@contextmanager
def replacing_files(*, durable: bool = False) -> Iterator[Callable[[str | os.PathLike], Path]]:
    """Yield ``temp_for(path)``; write each temporary it hands out. On success every one
    replaces its path, in the order they were asked for; on failure none does, and all
    temporaries are removed. Paths may be added while writing (a stream of shards)."""
    pairs: list[tuple[Path, Path]] = []

    def temp_for(path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pairs.append((temp_sibling(path), path))
        return pairs[-1][0]

    try:
        yield temp_for
        for temp, path in pairs:
            if durable:
                fsync_path(temp)
            os.replace(temp, path)
    finally:
        for temp, _ in pairs:
            temp.unlink(missing_ok=True)


@contextmanager
def replacing_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new, empty temporary sibling folder to fill; on success it becomes ``path``
    (which must then be absent or an empty folder), on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_sibling(path)
    temp.mkdir()
    try:
        yield temp
        os.replace(temp, path)  # POSIX rename: replaces an empty folder, refuses a full one
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` via a temporary sibling and ``os.replace``."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_parquet_atomic(path: str | os.PathLike, table: pa.Table) -> Path:
    """Write ``table`` as Parquet to ``path`` via a temporary sibling and ``os.replace``."""
    import pyarrow.parquet as pq

    with replacing(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def fsync_path(path: Path) -> None:
    """Flush ``path``'s bytes to disk (before a rename makes them visible)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def cache_dir(kind: str) -> Path:
    """``$TAXOCLIP_CACHE/<kind>`` when set, else ``$XDG_CACHE_HOME/taxoclip/<kind>``
    (``~/.cache/taxoclip/<kind>``): the one place caches live (evaluation features,
    custom-label text embeddings, ONNX exports)."""
    if os.environ.get("TAXOCLIP_CACHE"):
        return Path(os.environ["TAXOCLIP_CACHE"]).expanduser() / kind
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "taxoclip" / kind
