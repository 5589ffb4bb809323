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
]
