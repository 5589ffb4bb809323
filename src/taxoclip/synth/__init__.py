"""SynthToL: a procedural tree of life with known ground truth (DESIGN section 5)."""

from .dataset import SynthConfig, SynthResult, generate
from .tree import HABITATS, PATTERNS, Species, build_tree

__all__ = [
    "HABITATS",
    "PATTERNS",
    "Species",
    "SynthConfig",
    "SynthResult",
    "build_tree",
    "generate",
    "write_raw_source",
]


def __getattr__(name: str):
    # Raw-source mode needs pyarrow and rapidfuzz; plain SynthToL should not pay for them.
    if name == "write_raw_source":
        from .raw_source import write_raw_source

        return write_raw_source
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
