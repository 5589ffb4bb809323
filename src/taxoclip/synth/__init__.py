"""SynthToL: a procedural tree of life with known ground truth.

``run(SynthConfig(out=...))`` builds one (``generate(out, config)`` for library callers);
see ``dataset`` for the layout on disk and ``raw`` for the GBIF-like raw source. Importing
this package is light: numpy, PIL and rapidfuzz load with the modules that need them.
"""

from __future__ import annotations

from .config import SynthConfig, SynthResult

__all__ = [
    "HABITATS",
    "PATTERNS",
    "Species",
    "SynthConfig",
    "SynthResult",
    "build_tree",
    "generate",
    "run",
    "write_raw_source",
]

# Heavy names, imported on first use (PEP 562).
_LAZY = {
    "generate": "dataset",
    "HABITATS": "tree",
    "PATTERNS": "tree",
    "Species": "tree",
    "build_tree": "tree",
    "write_raw_source": "raw",
}


def run(config: SynthConfig) -> SynthResult:
    """Build the SynthToL ``config`` describes into ``config.out``."""
    from taxoclip.errors import UsageError

    from .dataset import generate

    if not config.out:
        raise UsageError("synth needs an output directory (OUT)")
    return generate(config.out, config, progress=config.progress)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
