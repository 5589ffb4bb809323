"""Checkpoints: open_clip's keys plus what exact resume needs, written atomically.

``RUN/checkpoints/epoch_N.pt`` at epoch ends (all kept) and ``step_NNNNNNNN.pt`` every
``--checkpoint-every`` steps (the last K kept). Each file holds ``epoch, name,
state_dict, optimizer, scaler`` as open_clip writes them (``state_dict`` is the bare
CLIP, whole tensors even under FSDP, so open_clip and ``load_model`` read it), and
``step``, ``replay_proj``, ``torch_rng``, ``counters``, the ``config``, the ``layout``
(processes, readers per process, FSDP) and every data reader's position (``readers``,
``replay_readers``; see data.py) for resuming. state.py says which typed piece of the run
writes and reads each key. Under FSDP ``optimizer`` is the whole optimiser state keyed by
parameter name. Only tensors and plain Python values go in, so
``torch.load(weights_only=True)`` reads them.
``checkpoints/latest.json`` names the newest complete checkpoint; it is replaced only
after that checkpoint is on disk, so a kill at any moment leaves a loadable pair."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from taxoclip.errors import InputError
from taxoclip.files import replacing, write_text_atomic

log = logging.getLogger(__name__)

LATEST = "latest.json"
_STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_dir(run: Path) -> Path:
    return run / "checkpoints"


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with replacing(path, durable=True) as tmp, tmp.open("wb") as handle:
        torch.save(obj, handle)


def save_checkpoint(run: Path, state: dict[str, Any], name: str, keep: int) -> Path:
    """Write ``state`` as ``checkpoints/<name>``, point ``latest.json`` at it, prune."""
    folder = checkpoint_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    _atomic_torch_save(state, path)
    write_text_atomic(folder / LATEST, json.dumps({"file": name, "step": state["step"]}) + "\n")
    step_files = sorted(p for p in folder.iterdir() if _STEP_FILE.match(p.name))
    for old in step_files[:-keep]:
        old.unlink(missing_ok=True)
    return path


def find_latest(run: Path) -> Path | None:
    """The checkpoint ``latest.json`` names, or None when the run has none."""
    pointer = checkpoint_dir(run) / LATEST
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())["file"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read checkpoint pointer {pointer}: {exc}") from exc
    path = checkpoint_dir(run) / name
    if not path.is_file():
        raise InputError(f"{pointer} names {name}, which is missing")
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise InputError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    missing = {"step", "state_dict", "optimizer", "config"} - set(state)
    if missing:
        raise InputError(f"checkpoint {path} lacks {', '.join(sorted(missing))}")
    return state
