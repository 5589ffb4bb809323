"""Image inputs, torch-free: which files are images, collecting them, decoding in threads,
and why an image failed.

Every stage that reads image files finds them here (:data:`IMAGE_SUFFIXES`, the one list),
and every encoder is fed by :func:`iter_decoded` (through :mod:`.encode`). Nothing here is
ever fatal for one image: a failure becomes that image's reason, the same words whichever
runtime runs and whichever stage asked.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from taxoclip.errors import UsageError

#: File suffixes read as images wherever a folder is scanned (predict, curation's folder
#: sources and leak check, ONNX export's samples): what PIL decodes of the usual photo formats.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)

ImageInput = str | os.PathLike | Image.Image


def collect_images(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Expand files, directories (recursive, image extensions) and glob patterns, in order.

    A path that does not exist is kept as given (it becomes a per-image error later, so
    it is reported rather than silently dropped); a glob or directory that matches no
    image is a usage error.
    """
    found: list[str] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            files = sorted(
                str(p)
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                raise UsageError(
                    f"directory {text} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            found.extend(files)
        elif any(ch in text for ch in "*?[") and not path.exists():
            files = sorted(p for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not files:
                raise UsageError(f"pattern {text} matches no files")
            found.extend(files)
        else:
            found.append(text)
    if not found:
        raise UsageError("no input images given")
    return found


def image_key(image: ImageInput, index: int) -> str:
    """pybioclip's key: the path as given, or the position for in-memory images."""
    return str(index) if isinstance(image, Image.Image) else os.fspath(image)


def load_rgb(image: ImageInput) -> Image.Image:
    """Open and fully decode an image as RGB; raises with a reason a person can act on."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = Path(image)
    if not path.exists():
        raise FileNotFoundError("no such file")
    if path.is_dir():
        raise IsADirectoryError("is a directory")
    if path.stat().st_size == 0:
        raise ValueError("empty file (0 bytes)")
    with Image.open(path) as opened:
        opened.load()  # decode now: truncated files fail here, not later
        return opened.convert("RGB")


def describe_error(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc).strip() or name
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not a readable image"
    if isinstance(exc, OSError) and "truncated" in text.lower():
        return f"truncated image ({text})"
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, ValueError)):
        return text
    return f"{name}: {text}"


def prepare_one(image: ImageInput, prepare: Callable[[Image.Image], Any]) -> tuple[Any, str | None]:
    """``(prepare(decoded image), None)`` or ``(None, reason)``: never raises."""
    try:
        return prepare(load_rgb(image)), None
    except Exception as exc:  # any failure is this image's, reported, never fatal
        return None, describe_error(exc)


def iter_decoded(
    images: Sequence[ImageInput],
    prepare: Callable[[Image.Image], Any],
    batch_size: int = 32,
    workers: int = 0,
) -> Iterator[tuple[list[int], list[Any], dict[int, str]]]:
    """Per batch: positions prepared, ``prepare(image)`` of each, and failures (position →
    reason). ``workers`` > 0 decodes and prepares in that many threads (PIL and numpy
    release the GIL while they work), the next batch while the caller runs this one."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (got {batch_size})")
    starts = range(0, len(images), batch_size)

    def batch(start: int, pool: ThreadPoolExecutor | None):
        chunk = images[start : start + batch_size]
        results = (
            pool.map(lambda im: prepare_one(im, prepare), chunk)
            if pool
            else (prepare_one(im, prepare) for im in chunk)
        )
        ok, prepared, errors = [], [], {}
        for offset, (value, reason) in enumerate(results):
            if reason is None:
                ok.append(start + offset)
                prepared.append(value)
            else:
                errors[start + offset] = reason
        return ok, prepared, errors

    if workers <= 0:
        for start in starts:
            yield batch(start, None)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool, ThreadPoolExecutor(1) as ahead:
        pending = None
        for start in starts:
            future = ahead.submit(batch, start, pool)
            if pending is not None:
                yield pending.result()
            pending = future
        if pending is not None:
            yield pending.result()


def auto_workers(value: int | None) -> int:
    """Decoding threads when ``--workers`` is not given: none on ≤ 2 cores (measured:
    they only compete with the model for the CPU there), else up to 4."""
    if value is not None:
        return value
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    return 0 if cores <= 2 else min(4, cores // 2)
