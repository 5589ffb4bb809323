"""Small builders shared by test modules (real models, real files; nothing mocked)."""

from __future__ import annotations

import os
from pathlib import Path


def saved_model(folder: Path, name: str = "taxoclip-vit-t32", seed: int = 0) -> Path:
    """A freshly initialised open_clip model written as a model folder (HF layout)."""
    from taxoclip.models import create_model, save_model

    loaded = create_model(name, seed=seed)
    return save_model(loaded.model, folder, loaded.model_cfg, loaded.preprocess_cfg)


def child_processes(marker: str) -> list[int]:
    """Pids of this process's descendants whose command line holds ``marker`` (e.g. the Ray
    actor class a test kills), read from /proc, so a test kills only its own workers."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [os.getpid()]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid]
        found += children
        frontier += children
    pids = []
    for pid in found:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in title:
            pids.append(pid)
    return pids
