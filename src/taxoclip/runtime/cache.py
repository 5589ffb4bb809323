"""The ONNX export cache: what makes ``--runtime auto`` fast on any model spec.

The first run on a model (a folder, a run dir, a weights file, ``hf-hub:``, an open_clip
name with a weights file) exports it with :func:`~.export.export_onnx` into the cache,
checks the export against torch on sample images (the agreement ``export.json``
records), and says once on stderr what that cost; every later run finds the export by a
key computed without torch, verifies it and opens it on ONNX Runtime, so it never imports
torch (tests/runtime/test_cache.py runs one in a subprocess and looks).

- **where**: ``$TAXOCLIP_CACHE/onnx`` when set, else ``$XDG_CACHE_HOME/taxoclip/onnx``
  (``~/.cache/…``): :func:`taxoclip.files.cache_dir`;
- **key**: SHA-256 of the model's configuration file and weights file, the opset, the
  versions of taxoclip, torch, onnx, onnxruntime and open_clip, and whether int8 files
  are made. Preprocessing is in the configuration file; crop or squash is not in the key
  because the export does not depend on it (both are measured);
- **atomic**: an export is built in a temporary sibling folder and renamed into place, so
  a failed or killed export (an unsupported op, a full disk) leaves no half-written model;
- **one exporter**: an exclusive ``fcntl`` lock per key; a second process waits for it,
  then reuses what the first built;
- **verified**: ``manifest.json`` holds every file's SHA-256 and size; a run checks them
  (hashing again only when a file's inode, size, mtime or ctime changed since the last
  check, which any write to it changes), and rebuilds a corrupt export with one line;
- **fallback**: a model that cannot be exported or keyed (random weights, an open_clip
  pretrained tag, no onnxruntime, a read-only or full cache, an export that fails or
  disagrees with torch) runs on torch with one line saying why. A failure that would only
  happen again (the exporter refused the model, the export disagreed) is remembered
  beside the key, so later runs do not retry it until a version changes.

Which precision ``auto`` runs is :func:`auto_runtime`: fp32, unless the export records
int8 agreement that clears :data:`INT8_BARS` from a quantisation that does not depend on
the batch (the hook by which calibrated int8 becomes the default).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taxoclip import __version__
from taxoclip.errors import TaxoclipError
from taxoclip.files import cache_dir as files_cache_dir
from taxoclip.files import replacing_dir, temp_sibling, write_text_atomic

from .onnx import CONFIG_FILE, EXPORT_FILE, SAFETENSORS_FILE, TEXT_ONNX

log = logging.getLogger(__name__)

#: The ONNX opset every export uses (:mod:`.export` reads it from here: part of the key).
OPSET = 18
#: Bumped when what an export folder holds changes, so old entries are not reused
#: (2: ``text_step.onnx``, the text tower on a key/value cache, which indexes use).
CACHE_FORMAT = 2
MANIFEST_FILE = "manifest.json"
VERIFIED_FILE = "verified.json"  # the file stats at the last successful hash check
#: Whether the cache also makes int8 files. Off: the only int8 today is dynamic
#: quantisation, which auto never picks (see :func:`auto_runtime`), so making it would only
#: add to the first run's cost; turn on when calibrated int8 clears INT8_BARS.
CACHE_INT8 = False
#: Smallest cosine between torch's and the ONNX fp32 tower's raw features on the sample
#: images (both preprocessings, and the text tower) for the cache to use an export.
FP32_MIN_COSINE = 0.9999
#: What int8 must have shown on the recorded sample images before auto runs it.
# int8 becomes auto's choice only when it clears both bars on trained models *and* runs
# >= 1.5x fp32 on the CPU (issue 20). Measured (docs/benchmarks.md, "int8 that agrees"):
# static QDQ agrees on 99.5-99.6 % of top-1 on the small trained models but is only
# 1.01-1.04x fp32 there, and a trained ViT-B-16 was not measured; so fp32 until then.
INT8_AUTO = False
INT8_BARS = {"top1_agreement": 0.99, "min_cosine": 0.99}

# Names the model loader (taxoclip.models.io, which imports torch) looks for, in its order.
_FOLDER_WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_HUB_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# (import name, distribution name): the libraries an export's bytes depend on.
_LIBRARIES = (
    ("torch", "torch"),
    ("onnx", "onnx"),
    ("onnxruntime", "onnxruntime"),
    ("open_clip", "open_clip_torch"),
)


class Unavailable(Exception):
    """Why a model has no cached export (said in the one fallback line)."""


def cache_root() -> Path:
    return files_cache_dir("onnx")


# --------------------------------------------------------------------------- the source


@dataclass(frozen=True)
class Source:
    """What a model spec's weights and configuration are, found without torch."""

    spec: str
    pretrained: str | None
    weights: Path
    config: Path | None  # open_clip_config.json (or a bare config); None: an open_clip name


def resolve_source(spec: str | os.PathLike, pretrained: str | None = None) -> Source:
    """The files behind ``spec`` as :func:`taxoclip.models.load_model` would read them.

    Raises :class:`Unavailable` where they cannot be named without torch (random weights,
    an open_clip pretrained tag, an ``hf-hub:`` model not in the local Hugging Face
    cache) or do not exist (the torch loader then gives its own, precise error).
    """
    text = os.fspath(spec).strip()
    weights = _pretrained_file(pretrained)
    if text.startswith("hf-hub:"):
        repo = text[len("hf-hub:") :]
        config = _hub_file(repo, (CONFIG_FILE,))
        return Source(text, pretrained, weights or _hub_file(repo, _HUB_WEIGHT_NAMES), config)
    path = Path(text.removeprefix("local-dir:")).expanduser()
    if path.is_dir():
        folder = next((f for f in (path, path / "model") if (f / CONFIG_FILE).is_file()), None)
        if folder is None:
            raise Unavailable(f"{path} holds no {CONFIG_FILE}")
        return Source(text, pretrained, weights or _folder_weights(folder), folder / CONFIG_FILE)
    if path.is_file() and path.suffix == ".json":
        if "model_cfg" in _read_json(path):  # an open_clip_config.json: its folder is the model
            return resolve_source(path.parent, pretrained)
        if weights is None:
            raise Unavailable("random weights (a config without --pretrained)")
        return Source(text, pretrained, weights, path)
    if path.is_file():
        candidates = (path.parent, path.parent.parent, path.parent.parent / "model")
        folder = next((c for c in candidates if (c / CONFIG_FILE).is_file()), None)
        if folder is None or path.suffix not in _WEIGHT_SUFFIXES or pretrained:
            raise Unavailable(f"{path} is not a weights file beside an {CONFIG_FILE}")
        return Source(text, None, path, folder / CONFIG_FILE)
    if os.sep in text or text.startswith((".", "~")):
        raise Unavailable(f"no such file or folder: {text}")
    # an open_clip model name: its configuration is open_clip's (its version is in the key)
    if pretrained is None:
        raise Unavailable("random weights (no --pretrained): nothing to export once and reuse")
    if weights is None:
        raise Unavailable(
            f"open_clip's pretrained tag {pretrained!r} names no file without loading open_clip; "
            "pass the weights file, or make a folder once with `taxoclip export onnx`"
        )
    return Source(text, pretrained, weights, None)


def _pretrained_file(pretrained: str | None) -> Path | None:
    if not pretrained:
        return None
    path = Path(pretrained).expanduser()
    return path if path.is_file() else None


def _folder_weights(folder: Path) -> Path:
    for name in _FOLDER_WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pth"))
    if not found:
        raise Unavailable(f"{folder} has {CONFIG_FILE} but no weights file")
    return min(found, key=lambda p: (p.suffix != ".safetensors", p.name))


def _hub_file(repo: str, names: tuple[str, ...]) -> Path:
    """A file of a Hub repo: from the local Hugging Face cache without asking the network
    (later runs), else downloaded (the first)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError as exc:
        raise Unavailable("huggingface_hub is not installed") from exc
    for name in names:
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    from huggingface_hub import hf_hub_download

    reasons = []
    for name in names:  # not here yet: download it, as the torch loader would
        try:
            return Path(hf_hub_download(repo_id=repo, filename=name))
        except Exception as exc:  # offline-cache misses, 404s, network: all mean "not here"
            reasons.append(_first_line(exc))
    raise Unavailable(f"cannot get {' or '.join(names)} of hf-hub:{repo} ({'; '.join(reasons)})")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Unavailable(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


# --------------------------------------------------------------------------- the key


def file_digest(path: Path) -> str:
    """SHA-256 of a weights or configuration file. A Hugging Face blob is named by it;
    other files are hashed once per (path, size, mtime) (:func:`.text.weights_digest`)."""
    resolved = path.resolve()
    name = resolved.name
    if resolved.parent.name == "blobs" and len(name) == 64 and set(name) <= set("0123456789abcdef"):
        return name
    from .text import weights_digest

    digest = weights_digest(resolved)
    if digest is None:
        raise Unavailable(f"cannot read {path}")
    return digest


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries an export depends on, read from their
    ``*.dist-info`` folders: no import (torch's alone is seconds), no importlib.metadata."""
    import importlib.util

    versions = {"taxoclip": __version__}
    for module, dist in _LIBRARIES:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            raise Unavailable(f"{module} is not installed (pip install 'taxoclip[onnx]')")
        site = Path(spec.origin).parent.parent
        infos = sorted(site.glob(f"{dist}-*.dist-info"))
        if infos:
            versions[module] = infos[-1].name[len(dist) + 1 : -len(".dist-info")]
        else:  # an unusual install (egg, editable): ask the slow way
            from importlib.metadata import version

            versions[module] = version(dist)
    return versions


def cache_key(source: Source, int8: bool) -> tuple[str, dict[str, Any]]:
    """The key of ``source``'s export and what it is made of (recorded in the manifest)."""
    payload = {
        "format": CACHE_FORMAT,
        "weights_sha256": file_digest(source.weights),
        "config": file_digest(source.config) if source.config else source.spec,
        "opset": OPSET,
        "int8": int8,
        "versions": library_versions(),
    }
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32], payload


# --------------------------------------------------------------------------- entries


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _stats(folder: Path, names: list[str]) -> dict[str, list[int]]:
    out = {}
    for name in names:
        stat = (folder / name).stat()
        out[name] = [stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]
    return out


def problem(entry: Path) -> str | None:
    """Why the export in ``entry`` cannot be used (None: it is whole, as made)."""
    manifest_path = entry / MANIFEST_FILE
    if not manifest_path.is_file():
        return "no manifest" if entry.exists() else "absent"
    try:
        files = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
        names = sorted(files)
        stats = _stats(entry, names)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"
    for name in names:
        if stats[name][1] != files[name]["size"]:
            return f"{name} has {stats[name][1]} bytes, not {files[name]['size']}"
    with contextlib.suppress(OSError, ValueError):
        if json.loads((entry / VERIFIED_FILE).read_text(encoding="utf-8")) == stats:
            return None  # hashed since, and nothing has written to any file
    for name in names:
        if _sha256(entry / name) != files[name]["sha256"]:
            return f"{name} does not match its SHA-256"
    with contextlib.suppress(OSError):  # a read-only cache: hash again next time
        write_text_atomic(entry / VERIFIED_FILE, json.dumps(stats))
    return None


@dataclass
class CachedExport:
    """A verified export in the cache, and the source weights it was made from."""

    folder: Path
    weights: Path
    record: dict[str, Any]


def cached_export(
    spec: str | os.PathLike, pretrained: str | None = None, *, int8: bool = False
) -> CachedExport:
    """The cached export of ``spec``, made (once, by one process) if need be.

    Raises :class:`Unavailable` with the reason when there is none and none can be made
    (a model that cannot even be loaded included: torch then says precisely why).
    """
    source = resolve_source(spec, pretrained)
    key, payload = cache_key(source, int8)
    root = cache_root()
    entry = root / key
    why = problem(entry)
    if why is None:
        return _opened(entry, source)
    failed = root / f"{key}.failed.json"
    if failed.is_file():
        raise Unavailable(
            f"{_read_json(failed).get('reason', 'an earlier export failed')} "
            f"(remembered in {failed}; delete it to try again)"
        )
    with _locked(root, key, source.spec):
        why = problem(entry)  # another process may have built (or rebuilt) it meanwhile
        if why is None:
            return _opened(entry, source)
        if why != "absent":
            log.warning("cached ONNX export %s is corrupt (%s): rebuilding it", entry, why)
            _remove(entry)
        for stale in root.glob(f".{key}.*.tmp"):  # we hold the lock: a dead writer's
            shutil.rmtree(stale, ignore_errors=True)
        _build(entry, source, int8, payload, failed)
    return _opened(entry, source)


def _opened(entry: Path, source: Source) -> CachedExport:
    from .onnx import read_json

    return CachedExport(entry, source.weights, read_json(entry / EXPORT_FILE, "cached export"))


@contextlib.contextmanager
def _locked(root: Path, key: str, spec: str) -> Iterator[None]:
    """An exclusive lock on ``key``: the second process to want an export waits here."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = (root / f"{key}.lock").open("a+")
    except OSError as exc:
        raise Unavailable(f"cannot write the cache {root} ({exc.strerror or exc})") from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process exporting %s to ONNX into %s", spec, root)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove(entry: Path) -> None:
    """Rename away then delete: a reader never sees a folder half deleted."""
    doomed = temp_sibling(entry)
    with contextlib.suppress(FileNotFoundError):
        os.replace(entry, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _build(entry: Path, source: Source, int8: bool, payload: dict, failed: Path) -> None:
    """Export into a temporary sibling, check it, write its manifest, rename it into place."""
    from .config import ExportOnnxConfig

    log.info(
        "first use of %s on ONNX Runtime: exporting it once into %s (later runs reuse it; "
        "--runtime torch skips this)",
        source.spec,
        entry,
    )
    started = time.perf_counter()
    try:
        with replacing_dir(entry) as tmp:
            from .export import export_onnx

            config = ExportOnnxConfig(
                model=source.spec, pretrained=source.pretrained, out=str(tmp), int8=int8
            )
            export_onnx(config)
            record = json.loads((tmp / EXPORT_FILE).read_text(encoding="utf-8"))
            disagreement = fp32_disagreement(record)
            if disagreement:
                raise _Refused(f"the export disagrees with torch ({disagreement})")
            if (tmp / TEXT_ONNX).is_file():  # nothing reads the weights: do not keep a copy
                (tmp / SAFETENSORS_FILE).unlink(missing_ok=True)
            names = sorted(p.name for p in tmp.iterdir() if p.is_file())
            files = {
                n: {"sha256": _sha256(tmp / n), "size": (tmp / n).stat().st_size} for n in names
            }
            manifest = {
                "key": entry.name,
                "source": source.spec,
                "pretrained": source.pretrained,
                "weights": str(source.weights),
                "made_of": payload,
                "files": files,
            }
            write_text_atomic(tmp / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
            write_text_atomic(tmp / VERIFIED_FILE, json.dumps(_stats(tmp, names)))
    except OSError as exc:  # a full disk, a read-only cache: may work another time
        why = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            why = f"no space left in {entry.parent}"
        raise Unavailable(f"cannot export into the cache ({why})") from exc
    except (MemoryError, ImportError) as exc:  # may work another time, too
        raise Unavailable(f"export failed: {_first_line(exc)}") from exc
    except Exception as exc:  # the exporter refused the model: it would again
        if isinstance(exc, TaxoclipError) and isinstance(exc.__cause__, ImportError):
            raise Unavailable(str(exc)) from exc  # onnxruntime missing: it may be installed
        reason = str(exc) if isinstance(exc, _Refused) else f"export failed: {_first_line(exc)}"
        with contextlib.suppress(OSError):
            write_text_atomic(failed, json.dumps({"reason": reason, "made_of": payload}) + "\n")
        raise Unavailable(reason) from exc
    agreement = record.get("agreement", {})
    cosine = min(agreement[f"image_fp32_{m}"]["min_cosine"] for m in ("crop", "squash"))
    log.info(
        "exported %s in %.1f s, once (ONNX fp32 against torch on %s: min cosine %.6f); "
        "later runs load it without torch",
        source.spec,
        time.perf_counter() - started,
        agreement.get("samples", "sample images"),
        cosine,
    )


class _Refused(Exception):
    pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


# --------------------------------------------------------------------------- decisions


def fp32_disagreement(record: dict[str, Any]) -> str | None:
    """Why an export's recorded fp32 agreement is too poor to use instead of torch."""
    agreement = record.get("agreement") or {}
    for mode in ("crop", "squash"):
        measured = agreement.get(f"image_fp32_{mode}") or {}
        cosine = measured.get("min_cosine", 0.0)
        if cosine < FP32_MIN_COSINE:
            return f"image features, {mode}: min cosine {cosine:.6f} < {FP32_MIN_COSINE}"
        if measured.get("top1_agreement", 1.0) < 1.0 - 1e-9:
            return f"image features, {mode}: top-1 agreement {measured['top1_agreement']:.3f}"
    for name, what in (("text_fp32", "text"), ("text_step_fp32", "text (prefix cache)")):
        text = agreement.get(f"{name}_min_cosine")
        if text is not None and text < FP32_MIN_COSINE:
            return f"{what} features: min cosine {text:.6f} < {FP32_MIN_COSINE}"
    return None


def int8_meets_bars(record: dict[str, Any]) -> bool:
    """Whether an export's int8 files may be auto's choice: :data:`INT8_AUTO` is on, its
    recorded int8 agreement, under both preprocessings, clears :data:`INT8_BARS` (top-1
    against an index included: without an index there is no evidence), and the
    quantisation does not make an image's scores depend on its batch-mates (dynamic
    quantisation does: never the default)."""
    if not INT8_AUTO:
        return False
    quantization = record.get("quantization") or {}
    if not quantization or "quantize_dynamic" in str(quantization.get("method", "")):
        return False
    agreement = record.get("agreement") or {}
    for mode in ("crop", "squash"):
        measured = agreement.get(f"image_int8_{mode}") or {}
        if any(measured.get(name, -1.0) < bar for name, bar in INT8_BARS.items()):
            return False
    return True


def auto_runtime(record: dict[str, Any]) -> str:
    """What ``--runtime auto`` runs an export on: ``onnx-int8`` when its int8 agreement
    clears the bars (:func:`int8_meets_bars`), else ``onnx`` (fp32)."""
    return "onnx-int8" if int8_meets_bars(record) else "onnx"
