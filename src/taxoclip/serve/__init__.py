"""``taxoclip serve``: a warm JSON API and a web page over one loaded model and index.

``create_app`` (FastAPI), ``Engine`` (the model and index), ``Batcher`` (images of
concurrent requests share forward passes) load on first use of their names; importing
this package is light (the CLI reads only :mod:`.config`).
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import ServeConfig, ServeResult

_LAZY = {
    "create_app": "app",
    "Engine": "engine",
    "Batcher": "batching",
    "Limits": "uploads",
    "run_serve": "run",
    "bind_socket": "run",
    "serve_forever": "run",
}

__all__ = ["ServeConfig", "ServeResult", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
