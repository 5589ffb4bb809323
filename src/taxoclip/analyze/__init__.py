"""Analyze: the emergent properties of DESIGN section 6, each beside its baseline and null.

``metrics`` holds the pure functions over arrays (species centroids, image embeddings and
their labels); ``run`` is ``taxoclip analyze``: it feeds them from a model, its untrained
twin and a SynthToL root or evaluation folder, and writes metrics.json, embeddings.npz
and the figures of ``plots`` (matplotlib, imported only when plotting).
"""

from .metrics import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    EcologicalAlignment,
    IntraSpeciesSeparation,
    Orthogonality,
    TaxonomicAlignment,
    TraitAlignment,
    Verdict,
    claim_holds,
    ecological_alignment,
    effective_dimension,
    fisher_direction,
    fisher_discriminant_ratio,
    group_means,
    intra_species_separation,
    l2_normalize,
    orthogonality,
    taxonomic_alignment,
    trait_alignment,
)
from .run import (
    AnalysisData,
    AnalysisResult,
    Embedded,
    SpeciesTable,
    compute_metrics,
    format_summary,
    load_embeddings,
    read_analysis_data,
    render_plots,
    run_analysis,
    save_embeddings,
    species_centroids,
)

__all__ = [
    "DOES_NOT_HOLD",
    "HOLDS",
    "INCONCLUSIVE",
    "AnalysisData",
    "AnalysisResult",
    "EcologicalAlignment",
    "Embedded",
    "IntraSpeciesSeparation",
    "Orthogonality",
    "SpeciesTable",
    "TaxonomicAlignment",
    "TraitAlignment",
    "Verdict",
    "claim_holds",
    "compute_metrics",
    "ecological_alignment",
    "effective_dimension",
    "fisher_direction",
    "fisher_discriminant_ratio",
    "format_summary",
    "group_means",
    "intra_species_separation",
    "l2_normalize",
    "load_embeddings",
    "orthogonality",
    "read_analysis_data",
    "render_plots",
    "run_analysis",
    "save_embeddings",
    "species_centroids",
    "taxonomic_alignment",
    "trait_alignment",
]
