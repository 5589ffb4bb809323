"""Herbarium19 with BioCLIP 2's generalized-category-discovery protocol (the GCD code's
layout and class split, from sgvaze/generalized-category-discovery)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from taxoclip.errors import InputError
from taxoclip.evaluate.dataset import EvalSet

from .common import check_nonempty, image_folder
from .registry import register

HERBARIUM_SPLITS_FILE = "herbarium_19_class_splits.pkl"

#: BioCLIP 2's Herbarium19 protocol (``src/evaluation/herbarium19.py``, from the GCD code's
#: ``get_herbarium_datasets``): the share of Old-class ``small-train`` images labelled, and
#: the seed of that draw.
HERBARIUM_LABELLED_FRACTION = 0.8
HERBARIUM_SEED = 0


class _SplitsUnpickler(pickle.Unpickler):
    """Reads the GCD class-split pickle: plain containers and numpy arrays, nothing else."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("builtins", "range"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
    }

    def find_class(self, module: str, name: str) -> object:
        """Allow only the classes a list/array of class indices needs."""
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _class_split(splits_file: Path, class_names: list[str]) -> tuple[list[int], list[int]]:
    """The Old and New class indices of the split pickle, checked against the classes."""
    try:
        with splits_file.open("rb") as handle:
            splits = _SplitsUnpickler(handle).load()
    except Exception as exc:  # any unpickling failure is a bad input file
        raise InputError(f"{splits_file}: not a readable class-split pickle ({exc})") from exc
    if not isinstance(splits, dict) or "Old" not in splits:
        raise InputError(f"{splits_file}: must hold a dict with an 'Old' list of class indices")
    out: dict[str, list[int]] = {"Old": [], "New": []}
    for key in out:
        for value in list(splits.get(key, [])):
            try:
                index = int(value)
            except (TypeError, ValueError):
                raise InputError(f"{splits_file}: {key} holds a non-integer {value!r}") from None
            if not 0 <= index < len(class_names):
                raise InputError(
                    f"{splits_file}: {key} class index {index} outside 0..{len(class_names) - 1}"
                )
            out[key].append(index)
    return out["Old"], out["New"]


def herbarium_labelled(
    n_old_images: int, fraction: float = HERBARIUM_LABELLED_FRACTION, seed: int = HERBARIUM_SEED
) -> np.ndarray:
    """Positions (among the Old-class images, in ImageFolder order) that are labelled: the
    GCD code's ``np.random.seed(seed); np.random.choice(range(n), replace=False,
    size=int(fraction * n))``, reproduced with the same legacy generator."""
    size = int(fraction * n_old_images)
    return np.random.RandomState(seed).choice(n_old_images, size=size, replace=False)


@register(
    "herbarium19",
    protocols=("gcd",),
    markers=("small-train",),
    layout=(
        "GCD layout: small-train/<class>/ and herbarium_19_class_splits.pkl "
        "({'Old': [...], 'New': [...]} over the sorted class folders); BioCLIP 2's "
        "protocol: a seeded 80 % of the Old-class small-train images labelled, the rest "
        "of small-train scored; small-validation/ unused (Imageomics/bioclip-2 "
        "src/evaluation/herbarium19.py, from sgvaze/generalized-category-discovery)"
    ),
)
def load_herbarium19(
    path: Path, seed: int = HERBARIUM_SEED, labelled_fraction: float = HERBARIUM_LABELLED_FRACTION
) -> EvalSet:
    """Herbarium19 with BioCLIP 2's protocol (``src/evaluation/herbarium19.py``): the
    ``small-train/<class>/`` image folder (683 classes, sorted as torchvision's
    ``ImageFolder`` sorts them) and ``herbarium_19_class_splits.pkl`` (``{'Old': [...],
    'New': [...]}``, indices into those sorted folders). A seeded ``labelled_fraction`` of
    the Old-class images is labelled (split ``train``); every other ``small-train`` image,
    of Old and New classes, is scored (split ``test``). ``small-validation`` is not used."""
    train_dir = path / "small-train"
    if not train_dir.is_dir():
        raise InputError(f"{train_dir}: no such folder (Herbarium19 GCD layout)")
    paths, labels = image_folder(train_dir)
    check_nonempty(train_dir, paths, [])
    class_names = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    splits_file = path / HERBARIUM_SPLITS_FILE
    if not splits_file.is_file():
        raise InputError(f"{splits_file}: no such file (the GCD Old/New class split is needed)")
    old, new = _class_split(splits_file, class_names)
    known = [class_names[i] for i in old]
    old_positions = np.flatnonzero(np.isin(labels, known))
    labelled = old_positions[herbarium_labelled(len(old_positions), labelled_fraction, seed)]
    splits = np.full(len(paths), "test", dtype=object)
    splits[labelled] = "train"
    return EvalSet(
        name="herbarium19",
        filepaths=paths,
        labels=labels,
        task_type="category_discovery",
        splits=[str(s) for s in splits],
        extra={
            "protocol": "bioclip2-gcd",
            "known_classes": known,
            "novel_classes": [class_names[i] for i in new],
            "labelled_fraction": labelled_fraction,
            "seed": seed,
            "class_names": class_names,
            "n_clusters": len(old) + len(new) if new else len(class_names),
        },
    )
