"""Analyze: the emergent properties of a model's embeddings, each beside its baseline and null.

Stage API: ``run(AnalyzeConfig(model=..., data=..., out=...)) -> AnalysisResult`` (what
``taxoclip analyze`` calls). ``metrics`` holds the pure functions over arrays (species
centroids, image embeddings and their labels); ``data`` reads a SynthToL root or an
evaluation folder, the embeddings file and precomputed embeddings (``--embeddings``);
``suite`` runs every metric the data allows for the model and its untrained twin;
``ceiling`` trains a small network with the labels to give each separation statistic its
ceiling; ``runner`` writes metrics.json, embeddings.npz and
the figures of ``plots`` (matplotlib, imported only when plotting).

Importing this package is light: the names below other than the config are loaded on
first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import AnalysisResult, AnalyzeConfig, format_summary

# name -> submodule holding it (imported on first access: numpy, scipy, sklearn)
_LAZY = {
    **dict.fromkeys(
        (
            "DOES_NOT_HOLD",
            "HOLDS",
            "INCONCLUSIVE",
            "EcologicalAlignment",
            "IntraSpeciesSeparation",
            "Orthogonality",
            "TaxonomicAlignment",
            "TraitAlignment",
            "Verdict",
            "claim_holds",
            "ecological_alignment",
            "effective_dimension",
            "fisher_direction",
            "fisher_discriminant_ratio",
            "group_means",
            "intra_species_separation",
            "l2_normalize",
            "orthogonality",
            "taxonomic_alignment",
            "trait_alignment",
        ),
        "metrics",
    ),
    **dict.fromkeys(
        (
            "AnalysisData",
            "Embedded",
            "EmbeddingsFile",
            "SpeciesTable",
            "embedded_from",
            "load_embeddings",
            "read_analysis_data",
            "read_embeddings",
            "save_embeddings",
        ),
        "data",
    ),
    **dict.fromkeys(("Ceiling", "measure_ceiling"), "ceiling"),
    **dict.fromkeys(("STATS", "compute_metrics", "species_centroids", "stat_entry"), "suite"),
    **dict.fromkeys(("render_plots", "write_json"), "runner"),
}

__all__ = ["AnalysisResult", "AnalyzeConfig", "format_summary", "run", *sorted(_LAZY)]


def run(config: AnalyzeConfig) -> AnalysisResult:
    """Analyse ``config.model`` on ``config.data`` beside its baseline; write ``config.out``."""
    from .runner import run as run_command

    return run_command(config)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
