"""The benchmark registry: what a benchmark is, how one is registered, found and loaded.

Each benchmark module registers its loader where it defines it (:func:`register`, a
decorator), and the entry carries everything about that benchmark: its folder, the
layouts it reads, the protocols it is scored with, how to tell it is absent and, for a
suite of several sets, how to load the sets one by one. Nothing here names a benchmark.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from taxoclip.errors import InputError
from taxoclip.evaluate import published_numbers
from taxoclip.evaluate.dataset import EvalSet

Loaded = EvalSet | list[EvalSet]
#: One separately loadable piece of a benchmark: (set name, load it).
Part = tuple[str, Callable[[], EvalSet]]

#: The protocols of the ten species benchmarks (BioCLIP 2's zero- and few-shot table).
SPECIES_PROTOCOLS = ("zero_shot", "few_shot")


@dataclass(frozen=True)
class BenchmarkSpec:
    """One published benchmark: where it lives under a root and how to read it."""

    name: str  # also its folder under the benchmarks root
    loader: Callable[[Path], Loaded]  # reads the benchmark's folder
    protocols: tuple[str, ...]
    layout: str  # the files the loader expects, and whose layout that is
    #: Files or folders (relative to the benchmark's folder), any one of which marks a
    #: layout the loader reads; the first is the one named when none is there.
    markers: tuple[str, ...] = ()
    #: How BioCLIP 2 describes the classes to the text tower for this benchmark
    #: (``slurm/eval.sh`` ``--text_type``): ``taxon_com`` or the class name as given.
    text_type: str = "as-given"
    #: Why the benchmark's folder does not hold it, when markers cannot say (a suite of
    #: sets: none of its sets is there); None when it is there.
    absent: Callable[[Path], str | None] | None = None
    #: A suite of several sets: the sets present in the folder, each loaded on its own so
    #: that one unreadable set is reported while the others run.
    sets: Callable[[Path], list[Part]] | None = None

    @property
    def directory(self) -> str:
        """The benchmark's folder, relative to the benchmarks root."""
        return self.name

    def absent_reason(self, root: Path) -> str | None:
        """Why ``root`` does not hold this benchmark (None: it does)."""
        folder = root / self.directory
        if not folder.is_dir():
            return f"{self.name}: no folder {folder}"
        if self.absent is not None:
            reason = self.absent(folder)
            return None if reason is None else f"{self.name}: {folder} {reason}"
        if self.markers and not any((folder / marker).exists() for marker in self.markers):
            return f"{self.name}: {folder} has no {self.markers[0]}"
        return None

    def load(self, root: Path) -> Loaded:
        folder = root / self.directory
        if not folder.is_dir():
            raise InputError(f"{self.name}: no folder {folder}")
        return self.loader(folder)

    def parts(self, root: Path) -> list[Part]:
        """The sets of a suite, or the whole benchmark as one part."""
        if self.sets is not None:
            return self.sets(root / self.directory)
        return [(self.name, lambda: self.load(root))]  # type: ignore[list-item]


#: Every registered benchmark by name, in the order the package imports their modules.
BENCHMARKS: dict[str, BenchmarkSpec] = {}


def register(
    name: str,
    *,
    protocols: tuple[str, ...],
    layout: str,
    markers: tuple[str, ...] = (),
    text_type: str = "as-given",
    absent: Callable[[Path], str | None] | None = None,
    sets: Callable[[Path], list[Part]] | None = None,
) -> Callable[[Callable[[Path], Loaded]], Callable[[Path], Loaded]]:
    """Register the decorated loader as benchmark ``name`` (see :class:`BenchmarkSpec`)."""

    def add(loader: Callable[[Path], Loaded]) -> Callable[[Path], Loaded]:
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} is registered twice")
        BENCHMARKS[name] = BenchmarkSpec(
            name=name,
            loader=loader,
            protocols=protocols,
            layout=layout,
            markers=markers,
            text_type=text_type,
            absent=absent,
            sets=sets,
        )
        return loader

    return add


def _spec(name: str) -> BenchmarkSpec:
    if name not in BENCHMARKS:
        raise InputError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def find_benchmarks(root: str | Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Which registered benchmarks exist under ``root``: (found names, [(name, reason)])."""
    root = Path(root)
    found, skipped = [], []
    for name, spec in BENCHMARKS.items():
        reason = spec.absent_reason(root)
        if reason is None:
            found.append(name)
        else:
            skipped.append((name, reason))
    return found, skipped


def load_benchmark(name: str, root: str | Path) -> Loaded:
    """Load benchmark ``name`` from ``root/<its directory>``.

    Raises :class:`InputError` for an unknown name, a missing folder or a malformed layout.
    """
    return _spec(name).load(Path(root))


def load_parts(name: str, root: str | Path) -> list[Part]:
    """Benchmark ``name`` as separately loadable parts ``(set name, load)``: one per set for
    the suites of several sets (camera traps, Meta-Album), so that one unreadable set is
    reported while the others run; a single part otherwise."""
    return _spec(name).parts(Path(root))


#: BioCLIP 2's two published means (percent); every published number, per benchmark and
#: model, is in :mod:`taxoclip.evaluate.published_numbers`.
PUBLISHED: dict[str, float] = {
    "zero_shot_species_mean_10": published_numbers.ZERO_SHOT["BioCLIP 2"][-1],
    "beyond_species_mean": published_numbers.BEYOND["BioCLIP 2"][-1],
}


def set_order(names: tuple[str, ...]) -> None:
    """Put :data:`BENCHMARKS` in the order of ``names``, which must name each benchmark
    once (imports are sorted by name; the order of the registry is a decision)."""
    if sorted(names) != sorted(BENCHMARKS):
        raise ValueError(f"the order {names} does not name each of {sorted(BENCHMARKS)} once")
    for name in names:
        BENCHMARKS[name] = BENCHMARKS.pop(name)
