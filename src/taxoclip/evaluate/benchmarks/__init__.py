"""Published benchmarks BioCLIP 2 reports on: where each lives under a root, how to read it.

One module per benchmark; each registers its loader where it defines it
(:func:`~.registry.register`) with the layouts it reads, the protocols it is scored with,
how to tell it is absent and, for a suite of several sets, how to load the sets one by
one. Every loader reads one benchmark from the files as they are distributed (the
dataset's own release, or the layout BioCLIP 2's evaluation code reads — each entry says
which and where that was learned) and returns an :class:`~taxoclip.evaluate.dataset.EvalSet`
(or a list of them for suites of several sets). Shared reading helpers are in
:mod:`.common`; this module only imports the benchmarks, orders them and re-exports the
names other modules use.

Sources consulted (read, not copied):

* BioCLIP 2 evaluation code, ``github.com/Imageomics/bioclip-2``: ``slurm/eval.sh`` (which
  species sets and where their CSVs sit), ``src/evaluation/data.py`` (``metadata.csv``
  reading), ``fishnet.py``, ``newt.py``, ``awa2.py``, ``herbarium19.py``, ``plantdoc.py``.
* BioCLIP annotation files, ``github.com/Imageomics/bioclip``:
  ``data/annotation/rare_species/metadata.csv`` (header
  ``,kingdom,phylum,cls,order,family,genus,species,common_name,filepath,class``) and
  ``data/annotation/meta-album/FNG_Mini/metadata.csv`` (header ``,filepath,class``).
* IDLE-OO Camera Traps dataset card,
  ``huggingface.co/datasets/imageomics/IDLE-OO-Camera-Traps`` (``<set>-balanced.csv`` at the
  top, images under ``data/test/<set>/``).
"""

from __future__ import annotations

from .awa2 import load_awa2
from .camera_trap import (
    CAMERA_TRAP_COLUMNS,
    CAMERA_TRAP_SETS,
    camera_trap_sets,
    load_camera_trap,
    load_camera_trap_set,
    taxon_com,
)
from .common import IMAGE_SUFFIXES, nfc, read_bioclip_csv
from .fishnet import FISHNET_ATTRIBUTES, load_fishnet
from .herbarium19 import (
    HERBARIUM_LABELLED_FRACTION,
    HERBARIUM_SEED,
    HERBARIUM_SPLITS_FILE,
    herbarium_labelled,
    load_herbarium19,
)
from .meta_album import (
    META_ALBUM_INFO_DEFAULTS,
    META_ALBUM_SETS,
    load_meta_album,
    load_meta_album_set,
)
from .nabirds import load_nabirds
from .newt import load_newt
from .plantdoc import load_plantdoc
from .rare_species import RARE_SPECIES_CATALOG, RARE_SPECIES_CATALOG_COLUMNS, load_rare_species
from .registry import (
    BENCHMARKS,
    PUBLISHED,
    BenchmarkSpec,
    Loaded,
    Part,
    find_benchmarks,
    load_benchmark,
    load_parts,
    register,
    set_order,
)

# The ten species benchmarks, then the five beyond species, as BioCLIP 2's tables group
# them: the order of BENCHMARKS, of find_benchmarks and of the suite's result rows.
set_order(
    (
        "nabirds",
        "meta_album",
        "rare_species",
        "camera_trap",
        "newt",
        "fishnet",
        "awa2",
        "herbarium19",
        "plantdoc",
    )
)

__all__ = [
    "BENCHMARKS",
    "CAMERA_TRAP_COLUMNS",
    "CAMERA_TRAP_SETS",
    "FISHNET_ATTRIBUTES",
    "HERBARIUM_LABELLED_FRACTION",
    "HERBARIUM_SEED",
    "HERBARIUM_SPLITS_FILE",
    "IMAGE_SUFFIXES",
    "META_ALBUM_INFO_DEFAULTS",
    "META_ALBUM_SETS",
    "PUBLISHED",
    "RARE_SPECIES_CATALOG",
    "RARE_SPECIES_CATALOG_COLUMNS",
    "BenchmarkSpec",
    "Loaded",
    "Part",
    "camera_trap_sets",
    "find_benchmarks",
    "herbarium_labelled",
    "load_awa2",
    "load_benchmark",
    "load_camera_trap",
    "load_camera_trap_set",
    "load_fishnet",
    "load_herbarium19",
    "load_meta_album",
    "load_meta_album_set",
    "load_nabirds",
    "load_newt",
    "load_parts",
    "load_plantdoc",
    "load_rare_species",
    "nfc",
    "read_bioclip_csv",
    "register",
    "taxon_com",
]
