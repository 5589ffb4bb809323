"""Predict, embed, index: pybioclip's formats and API on any taxoclip model.

Importing this package imports torch and open_clip (through ``taxoclip.models``).
"""

from taxoclip.taxonomy import Rank

from .classifiers import (
    BIOCLIP_MODEL_STR,
    TOL_MODELS,
    BaseClassifier,
    CustomLabelsBinningClassifier,
    CustomLabelsClassifier,
    TreeOfLifeClassifier,
)
from .images import EncodedImages, collect_images, encode_images, iter_encoded
from .index import TextIndex, build_index, encode_class_texts, read_taxa

__all__ = [
    "BIOCLIP_MODEL_STR",
    "TOL_MODELS",
    "BaseClassifier",
    "CustomLabelsBinningClassifier",
    "CustomLabelsClassifier",
    "EncodedImages",
    "Rank",
    "TextIndex",
    "TreeOfLifeClassifier",
    "build_index",
    "collect_images",
    "encode_class_texts",
    "encode_images",
    "iter_encoded",
    "read_taxa",
]
