"""The numbers BioCLIP 2 publishes, in one place (stdlib only).

Source: the imageomics/bioclip-2 model card on Hugging Face, section "Results" (the same
tables as the paper, "BioCLIP 2: Emergent Properties from Scaling Hierarchical Contrastive
Learning", arXiv 2505.23883); restated in docs/reference.md#published-numbers. Percent.

``taxoclip eval --suite bioclip2`` prints :data:`SHOWN` of these beside the model's own
numbers, one row per benchmark (:data:`COLUMNS` says which of our rows each column is).
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = "imageomics/bioclip-2 model card, Results (= the BioCLIP 2 paper, arXiv 2505.23883)"

#: Zero-shot top-1 (%), the ten species benchmarks and their mean.
ZERO_SHOT_COLUMNS = (
    "NABirds",
    "Plankton",
    "Insects",
    "Insects 2",
    "Camera Trap",
    "PlantNet",
    "Fungi",
    "PlantVillage",
    "Med. Leaf",
    "Rare Species",
    "mean",
)
ZERO_SHOT: dict[str, tuple[float, ...]] = {
    "CLIP ViT-L/14": (66.5, 1.3, 9.0, 11.7, 29.5, 61.7, 7.6, 6.5, 25.6, 35.2, 25.5),
    "SigLIP": (61.7, 2.4, 27.3, 20.7, 33.7, 81.8, 36.9, 28.5, 54.5, 47.6, 39.5),
    "BioTrove-CLIP": (39.4, 1.0, 20.5, 15.7, 10.7, 64.4, 38.2, 15.7, 31.6, 24.6, 26.2),
    "BioCLIP": (58.8, 6.1, 34.9, 20.5, 31.7, 88.2, 40.9, 19.0, 38.5, 37.1, 37.6),
    "BioCLIP 2": (74.9, 3.9, 55.3, 27.7, 53.9, 96.8, 83.8, 25.1, 57.8, 76.8, 55.6),
}

#: Beyond species: FishNet exact-match accuracy, NeWT micro (pooled) accuracy, AwA2
#: macro-F1, Herbarium19 clustering accuracy, PlantDoc 1-shot accuracy (%), and the mean.
BEYOND_COLUMNS = ("FishNet", "NeWT", "AwA2", "Herbarium19", "PlantDoc", "mean")
BEYOND: dict[str, tuple[float, ...]] = {
    "CLIP ViT-L/14": (27.9, 83.4, 61.6, 18.2, 22.3, 42.7),
    "SigLIP": (31.9, 83.2, 67.3, 18.6, 28.2, 45.8),
    "Supervised-IN21K": (29.4, 75.8, 52.7, 14.9, 25.1, 39.6),
    "DINOv2": (37.4, 83.7, 48.6, 28.1, 38.6, 47.3),
    "BioTrove-CLIP": (22.1, 82.5, 45.7, 20.4, 37.7, 41.7),
    "BioCLIP": (30.1, 82.7, 65.9, 26.8, 39.5, 49.0),
    "BioCLIP 2": (39.8, 89.1, 69.5, 48.6, 40.4, 57.5),
}

#: The published models ``taxoclip eval --suite bioclip2`` shows beside ours.
SHOWN = ("BioCLIP 2", "BioCLIP", "CLIP ViT-L/14")


@dataclass(frozen=True)
class Column:
    """One published column and the row of ours it sits beside."""

    column: str  # as the model card names it
    table: str  # "zero-shot" or "beyond"
    task: str  # our results' task name
    metric: str  # our results' metric name


#: Tasks of the means (filled by the suite when every benchmark of the table ran).
ZERO_SHOT_MEAN_TASK = "mean of the 10 species benchmarks"
BEYOND_MEAN_TASK = "mean of the 5 beyond-species benchmarks"
#: The camera-trap column is one number over the five IDLE-OO sets: our mean of the sets.
CAMERA_TRAP_TASK = "camera_trap"
CAMERA_TRAP_METRIC = "zero-shot top-1 (mean of sets)"

COLUMNS: tuple[Column, ...] = (
    Column("NABirds", "zero-shot", "nabirds", "zero-shot top-1"),
    Column("Plankton", "zero-shot", "meta_album/plankton", "zero-shot top-1"),
    Column("Insects", "zero-shot", "meta_album/insects", "zero-shot top-1"),
    Column("Insects 2", "zero-shot", "meta_album/insects2", "zero-shot top-1"),
    Column("Camera Trap", "zero-shot", CAMERA_TRAP_TASK, CAMERA_TRAP_METRIC),
    Column("PlantNet", "zero-shot", "meta_album/plantnet", "zero-shot top-1"),
    Column("Fungi", "zero-shot", "meta_album/fungi", "zero-shot top-1"),
    Column("PlantVillage", "zero-shot", "meta_album/plant_village", "zero-shot top-1"),
    Column("Med. Leaf", "zero-shot", "meta_album/medicinal_leaf", "zero-shot top-1"),
    Column("Rare Species", "zero-shot", "rare_species", "zero-shot top-1"),
    Column("mean", "zero-shot", ZERO_SHOT_MEAN_TASK, "zero-shot top-1"),
    Column("FishNet", "beyond", "fishnet", "exact-match"),
    Column("NeWT", "beyond", "newt", "pooled accuracy"),
    Column("AwA2", "beyond", "awa2", "macro-f1"),
    Column("Herbarium19", "beyond", "herbarium19", "GCD accuracy (all)"),
    Column("PlantDoc", "beyond", "plantdoc", "1-shot"),
    Column("mean", "beyond", BEYOND_MEAN_TASK, "mean"),
)


def published(model: str, column: Column) -> float:
    """The published number (percent) of ``model`` for ``column``."""
    names, table = (
        (ZERO_SHOT_COLUMNS, ZERO_SHOT) if column.table == "zero-shot" else (BEYOND_COLUMNS, BEYOND)
    )
    return table[model][names.index(column.column)]


def label(model: str) -> str:
    """The results' model name of a published column, e.g. ``"BioCLIP 2 (published)"``."""
    return f"{model} (published)"


def column_for(task: str) -> Column | None:
    return next((c for c in COLUMNS if c.task == task), None)
