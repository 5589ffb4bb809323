"""Long runs of ``predict`` and ``embed``: output on disk as it is made, a checkpoint, resume.

Rows (``predict``: one JSON line per image, its rows) and features (``embed``: raw float32
rows and one key per line) are appended to body files in ``OUTPUT.partial/`` batch by
batch, so memory does not grow with the images. With ``--checkpoint-every N`` a small
``checkpoint.json`` is written there (atomically, after the bodies are flushed to disk)
at the first batch boundary past every N images: the images done, each body's length in
bytes, and a fingerprint of the run (the inputs list, the model's weights, the runtime,
every flag that changes the output). ``--resume`` checks the fingerprint — a difference is
refused, named — cuts each body back to its recorded length and goes on from the next
image. Batches start at multiples of ``--batch-size`` from the first image in every run,
resumed or not, so each image is encoded in the same batch as in an uninterrupted run
and the output is byte-identical. When every image is done, the output file is written
from the bodies in one pass (atomically: a killed run never leaves a half-written
output), and ``OUTPUT.partial/`` is removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from taxoclip.errors import InputError
from taxoclip.files import replacing

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".partial"
CHECKPOINT_FILE = "checkpoint.json"
INPUTS_FILE = "inputs.txt"
CHECKPOINT_VERSION = 1


def sidecar_of(output: str | os.PathLike) -> Path:
    """Where a run writing ``output`` keeps its bodies and checkpoint."""
    path = Path(output)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def file_digest(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def content_digest(value: str | os.PathLike | None) -> str | None:
    """sha256 of a file, of a folder's files (names and bytes, sorted), or None when
    ``value`` names neither (a model name, an hf-hub: spec, a comma list of labels)."""
    if value is None:
        return None
    path = Path(value)
    if path.is_file():
        return file_digest(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for child in sorted(p for p in path.iterdir() if p.is_file()):
            digest.update(f"{child.name}\0{file_digest(child)}\0".encode())
        return digest.hexdigest()
    return None


def inputs_digest(keys: list[str]) -> str:
    digest = hashlib.sha256()
    for key in keys:
        digest.update(key.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def fingerprint(keys: list[str], weights: Any, **settings: Any) -> dict[str, Any]:
    """What must match for a resume: the inputs (count and digest of the list, in order),
    the model's weights (sha256 of the file, or the spec when there is no file) and every
    setting that changes the output."""
    weights_digest = content_digest(weights) if weights is not None else None
    return {
        "inputs": {"n": len(keys), "sha256": inputs_digest(keys)},
        "weights": weights_digest or (str(weights) if weights is not None else None),
        **{name: value for name, value in settings.items()},
    }


class Progress:
    """The body files of one run in ``folder``, appended batch by batch, and its checkpoint.

    ``open`` starts afresh (an earlier run's folder is replaced) or, with ``resume``,
    continues from the checkpoint there; ``done`` is then the number of images already
    written. ``advance(done)`` after each batch writes a checkpoint every ``every``
    images. ``close`` removes the folder (``keep`` leaves it, for a run that failed).
    """

    def __init__(
        self,
        folder: Path,
        bodies: tuple[str, ...],
        every: int | None,
        print_: dict[str, Any] | None,
        temporary: bool = False,
    ) -> None:
        self.folder = folder
        self.every = every
        self.fingerprint = print_
        self.temporary = temporary
        self.done = 0
        self._last = 0
        self.handles: dict[str, BinaryIO] = {}
        self.names = bodies

    @classmethod
    def open(
        cls,
        output: str | None,
        bodies: tuple[str, ...],
        *,
        keys: list[str],
        every: int | None = None,
        resume: bool = False,
        print_: dict[str, Any] | None = None,
        step: int = 1,
    ) -> Progress:
        """``print_``: the run's fingerprint (needed with ``every`` or ``resume``);
        ``step``: the batch size (a checkpoint always lies on a batch boundary)."""
        from .output import is_file_output

        if not is_file_output(output):  # stdout, /dev/null: the bodies in a temporary folder
            folder = Path(tempfile.mkdtemp(prefix="taxoclip-rows-"))
            run = cls(folder, bodies, None, None, temporary=True)
            run._start_fresh()
            return run
        folder = sidecar_of(output)
        run = cls(folder, bodies, every, print_)
        checkpoint = folder / CHECKPOINT_FILE
        if resume and checkpoint.is_file():
            run._resume(json.loads(checkpoint.read_text(encoding="utf-8")), keys, step)
        else:
            if resume:
                log.warning("--resume: no checkpoint in %s; starting from the first image", folder)
            elif folder.exists():
                log.warning("replacing %s, left by an earlier run (--resume continues one)", folder)
            run._start_fresh(keys if print_ is not None else None)
        return run

    # ----------------------------------------------------------------------- starting

    def _start_fresh(self, keys: list[str] | None = None) -> None:
        if not self.temporary:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        if keys is not None:  # to name the first different input of a refused resume
            with replacing(self.folder / INPUTS_FILE) as tmp, tmp.open("wb") as handle:
                for key in keys:
                    handle.write(key.encode("utf-8", "surrogateescape") + b"\n")
        for name in self.names:
            self.handles[name] = (self.folder / name).open("wb")

    def _resume(self, state: dict[str, Any], keys: list[str], step: int) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise InputError(
                f"--resume: {self.folder / CHECKPOINT_FILE} has version "
                f"{state.get('version')}, this taxoclip writes {CHECKPOINT_VERSION}"
            )
        difference = self._difference(state["fingerprint"], keys)
        if difference:
            raise InputError(
                f"--resume refused: the run checkpointed in {self.folder} had {difference}; "
                "run again without --resume to start over"
            )
        self.done = self._last = int(state["images_done"])
        if self.done % step:
            raise InputError(
                f"--resume: the checkpoint's {self.done} images are not a whole "
                f"number of batches of {step}"
            )
        for name in self.names:
            path = self.folder / name
            size = int(state["bytes"][name])
            if not path.is_file() or path.stat().st_size < size:
                raise InputError(
                    f"--resume: {path} is shorter than its checkpoint says "
                    f"({size} bytes); run again without --resume"
                )
            handle = path.open("r+b")
            handle.truncate(size)
            handle.seek(size)
            self.handles[name] = handle
        log.info("resuming %s at image %d", self.folder, self.done)

    def _difference(self, then: dict[str, Any], keys: list[str]) -> str | None:
        """The first way ``then`` (the checkpoint's fingerprint) differs from this run's."""
        now = self.fingerprint or {}
        if then.get("inputs") != now.get("inputs"):
            return "different inputs: " + self._input_difference(then["inputs"]["n"], keys)
        if then.get("weights") != now.get("weights"):
            return (
                f"a different model: weights {_short(then.get('weights'))} then, "
                f"{_short(now.get('weights'))} now"
            )
        for name in sorted(set(then) | set(now)):
            if name in ("inputs", "weights"):
                continue
            if then.get(name) != now.get(name):
                return f"{name} {_short(then.get(name))} then, {_short(now.get(name))} now"
        return None

    def _input_difference(self, n_then: int, keys: list[str]) -> str:
        counts = f"{n_then} images then, {len(keys)} now"
        listed = self.folder / INPUTS_FILE
        if not listed.is_file():
            return counts
        with listed.open("rb") as handle:
            for position, line in enumerate(handle):
                was = line[:-1].decode("utf-8", "surrogateescape")
                if position >= len(keys):
                    break
                if was != keys[position]:
                    return f"{counts}; image #{position + 1} was {was!r}, is {keys[position]!r}"
        return counts + ("" if n_then != len(keys) else "; the same paths (their order differs)")

    # ----------------------------------------------------------------------- running

    def advance(self, done: int) -> None:
        """``done`` images are written (a batch boundary): checkpoint when one is due."""
        self.done = done
        if self.every and done - self._last >= self.every:
            self.checkpoint()

    def checkpoint(self) -> None:
        sizes = {}
        for name, handle in self.handles.items():
            handle.flush()
            os.fsync(handle.fileno())
            sizes[name] = handle.tell()
        state = {
            "version": CHECKPOINT_VERSION,
            "images_done": self.done,
            "bytes": sizes,
            "fingerprint": self.fingerprint,
        }
        with replacing(self.folder / CHECKPOINT_FILE, durable=True) as tmp:
            tmp.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
        self._last = self.done

    def finish_bodies(self) -> dict[str, Path]:
        """Flush and close the bodies; their paths, to read the output from."""
        for handle in self.handles.values():
            handle.close()
        return {name: self.folder / name for name in self.names}

    def close(self, keep: bool = False) -> None:
        for handle in self.handles.values():
            if not handle.closed:
                handle.close()
        if not keep or self.temporary:
            shutil.rmtree(self.folder, ignore_errors=True)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def read_lines(path: Path) -> Iterator[bytes]:
    """The lines of a body file, newline removed, streamed."""
    with path.open("rb") as handle:
        for line in handle:
            yield line[:-1]
