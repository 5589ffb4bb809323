"""Taxonomy core: ranks, lineages with holes, captions, taxonomic distance."""

from .lineage import (
    N_RANKS,
    RANK_NAMES,
    RANKS,
    Lineage,
    Rank,
    clean_name,
    taxonomic_distance,
)
from .text import (
    SHARD_TEXT_KEYS,
    TRAINING_TEXT_TYPES,
    UNKNOWN_TAXONOMY,
    TextType,
    render_all,
    render_text,
    tagged_name,
)

__all__ = [
    "N_RANKS",
    "RANK_NAMES",
    "RANKS",
    "SHARD_TEXT_KEYS",
    "TRAINING_TEXT_TYPES",
    "UNKNOWN_TAXONOMY",
    "Lineage",
    "Rank",
    "TextType",
    "clean_name",
    "render_all",
    "render_text",
    "tagged_name",
    "taxonomic_distance",
]
