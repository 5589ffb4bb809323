"""The one place a ``--device`` value becomes a torch device string."""

from __future__ import annotations

import torch

from taxoclip.errors import UsageError


def resolve_device(name: str | None) -> str:
    """``auto`` (or None) is cuda when available, else cpu; other names are checked."""
    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"--device {name!r} is not a device (auto, cpu, cuda, cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    return name
