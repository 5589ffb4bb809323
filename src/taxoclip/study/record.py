"""study.json, typed: a study's design, its claims and trends, and every run it measured.

``taxoclip study scaling`` writes it (study/scaling.py); ``taxoclip demo`` writes a
one-seed form of it (``kind: "claims"``: claims, trends and runs only); ``taxoclip
report`` reads both through :meth:`StudyRecord.from_json`. Its JSON Schema is
``study.schema.json`` beside this file, and a produced study.json is checked against it
(tests/study/test_scaling.py). ``runs.json`` (the runs measured so far, for ``--resume``)
is the ``runs`` map alone.

Standard library only: the report reads this without the study's heavy imports.

Reading is lenient (a missing key takes its default) so hand-made and older files load;
writing gives each field as the schema has it: the ``ALWAYS`` fields of a class every
time, the others only when they are set.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

#: study.json's layout version (2: two-stage design, worlds, claims with every baseline).
FORMAT_VERSION = 2
SCHEMA_FILE = Path(__file__).with_name("study.schema.json")

#: What a run is: a stage-2 run (BioCLIP 2's recipe at one data size), one of its two
#: baselines at the largest size, the stage-1 general model, or the untrained twin.
RUN_KINDS = ("stage2", "flat", "no_replay", "general", "untrained")


def run_key(world: int, name: str, seed: int | None = None) -> str:
    """A run's key in study.json's ``runs``: ``w<world>/s<seed>/<name>`` for a model seed's
    run, ``w<world>/<name>`` for a model of the whole world (``general``)."""
    return f"w{world}/{name}" if seed is None else f"w{world}/s{seed}/{name}"


def _to_json(record: Any, always: tuple[str, ...]) -> dict[str, Any]:
    """A record's fields in order: those in ``always`` every time, the others when set."""
    out = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if value is None and f.name not in always:
            continue
        out[f.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``data`` that are fields of ``cls`` (others are ignored)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class Statistic:
    """One statistic of one model, beside its null where it has one, the species and
    images the metric used, and ``detectable``: the smallest difference from its
    comparators this one run could call a hold (analyze's one-seed rule, docs/analyze.md;
    written when the analysis gave one). ``value_sd``: the value's own sampling sd where
    the metric gives one (a bootstrap over species), which a one-replicate claim reads."""

    value: float | None = None
    value_sd: float | None = None
    null_mean: float | None = None
    null_sd: float | None = None
    n_species: int | None = None
    n_images: int | None = None
    detectable: float | None = None

    ALWAYS: ClassVar[tuple[str, ...]] = ("value", "null_mean", "null_sd", "n_species", "n_images")

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, self.ALWAYS)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Statistic:
        return cls(**_known(cls, data or {}))


@dataclass
class StudyRun:
    """One measured model of the study: a training run (its data, text, replay and how it
    trained) or a baseline model (general, untrained), with every statistic measured."""

    kind: str  # one of RUN_KINDS
    world: int | None = None  # the SynthToL world seed
    seed: int | None = None  # the model seed; None for the general model (one per world)
    fraction: float | None = None  # of each species' training images
    n_train: int | None = None  # training images; None for the general and untrained models
    text_type: str | None = None
    replay: bool | None = None
    lr: float | None = None  # stage 2's peak learning rate
    replay_ratio: float | None = None  # share of each step's images replayed (with replay)
    shards: str | None = None
    run: str | None = None  # the training run's folder
    model: str | None = None  # the model folder measured
    steps: int | None = None
    epochs: float | None = None
    final_loss: float | None = None
    values: dict[str, Statistic] = field(default_factory=dict)  # "<metric>.<statistic>" → it
    analysis: str | None = None  # the analysis folder (metrics.json)
    skipped: dict[str, str] | None = None  # metrics the analysis could not compute, and why
    seconds: dict[str, float] | None = None  # where the time went

    ALWAYS: ClassVar[tuple[str, ...]] = ("kind", "world", "seed", "n_train", "values")

    def value(self, statistic: str, part: str = "value") -> float | None:
        """``part`` (value, value_sd, null_mean, null_sd, n_species, n_images) of a
        statistic; None when not measured or not finite."""
        measured = self.values.get(statistic)
        number = getattr(measured, part, None) if measured is not None else None
        if number is None:
            return None
        number = float(number)
        return number if math.isfinite(number) else None

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, self.ALWAYS)

    @classmethod
    def from_json(cls, data: StudyRun | dict[str, Any]) -> StudyRun:
        if isinstance(data, StudyRun):
            return data
        known = _known(cls, data)
        values = known.pop("values", None) or {}
        return cls(**known, values={k: Statistic.from_json(v) for k, v in values.items()})


def runs_from_json(runs: dict[str, Any]) -> dict[str, StudyRun]:
    """study.json's (or runs.json's) ``runs`` map, typed (entries that are no object are
    left out)."""
    return {
        name: StudyRun.from_json(entry)
        for name, entry in runs.items()
        if isinstance(entry, dict | StudyRun)
    }


def _entries(items: Any) -> list[dict[str, Any]]:
    """The objects of a JSON list (anything else in it is left out)."""
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


@dataclass
class StudyWorld:
    """One SynthToL world of the study: where its data and general model are."""

    seed: int | None = None
    synth: str | None = None
    web: str | None = None  # its web corpus (two-stage recipe)
    general: str | None = None  # its stage-1 model (two-stage recipe)
    sizes: list[int] = field(default_factory=list)  # training images per data size

    ALWAYS: ClassVar[tuple[str, ...]] = ("seed", "synth", "web", "general", "sizes")

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, self.ALWAYS)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudyWorld:
        return cls(**_known(cls, data))


@dataclass
class ClaimResult:
    """One claim at the largest size: its statistic's mean ± sd over replicates, every
    baseline's, the verdict of study/claims.py's rule and the margin it had to clear."""

    claim: str
    statistic: str
    size: int | None = None
    mean: float | None = None
    sd: float | None = None
    n_seeds: int = 0
    higher_is_better: bool = True
    baselines: dict[str, float | None] = field(default_factory=dict)  # kind → mean
    baselines_sd: dict[str, float | None] = field(default_factory=dict)
    against: list[str] = field(default_factory=list)  # the comparators the verdict needs
    n_species: int | None = None
    n_images: int | None = None
    verdict: str = ""
    # "Replay keeps the general ability" only (claims.keep_verdict's facts):
    kept_share: float | None = None
    kept_share_sd: float | None = None
    no_replay_share: float | None = None
    no_replay_share_sd: float | None = None
    required_share: float | None = None
    detectable: float | None = None  # the largest margin the rule asked for

    ALWAYS: ClassVar[tuple[str, ...]] = (
        "claim",
        "statistic",
        "size",
        "mean",
        "sd",
        "n_seeds",
        "higher_is_better",
        "baselines",
        "baselines_sd",
        "against",
        "n_species",
        "n_images",
        "verdict",
        "detectable",
    )

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, self.ALWAYS)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClaimResult:
        return cls(**{"claim": "", "statistic": "", **_known(cls, data)})


@dataclass
class TrendResult:
    """Does a claim's statistic grow with data: the mean slope per doubling of the training
    images over replicates, its 95 % interval and the verdict."""

    claim: str
    statistic: str
    slope: float | None = None
    slope_sd: float | None = None
    n_seeds: int = 0
    ci_low: float | None = None
    ci_high: float | None = None
    verdict: str = ""

    ALWAYS: ClassVar[tuple[str, ...]] = (
        "claim",
        "statistic",
        "slope",
        "slope_sd",
        "n_seeds",
        "ci_low",
        "ci_high",
        "verdict",
    )

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, self.ALWAYS)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrendResult:
        return cls(**{"claim": "", "statistic": "", **_known(cls, data)})


@dataclass
class StatisticRow:
    """A statistic's mean ± sd over replicates for one kind of model and data size."""

    statistic: str
    kind: str
    size: int | None
    mean: float | None
    sd: float | None
    n: int

    ALWAYS: ClassVar[tuple[str, ...]] = ("statistic", "kind", "size", "mean", "sd", "n")

    def to_json(self) -> dict[str, Any]:
        return _to_json(self, self.ALWAYS)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StatisticRow:
        base = {"statistic": "", "kind": "", "size": None, "mean": None, "sd": None, "n": 0}
        return cls(**{**base, **_known(cls, data)})


@dataclass
class StudyRecord:
    """study.json: the design, the claims and trends, and every run's values."""

    kind: str  # "scaling" (taxoclip study scaling) or "claims" (the demo's one seed)
    claims: list[ClaimResult] = field(default_factory=list)
    trends: list[TrendResult] = field(default_factory=list)
    runs: dict[str, StudyRun] = field(default_factory=dict)  # run_key(...) → run
    format_version: int | None = None
    taxoclip_version: str | None = None
    recipe: str | None = None  # "two-stage" or "scratch"
    config: dict[str, Any] | None = None  # the ScalingConfig, sizes as fractions
    worlds: list[StudyWorld] = field(default_factory=list)
    model_seeds: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # training images per size (world 0)
    subset_rule: str | None = None
    budget: str | None = None  # "steps" or "epochs" (the demo: "one run")
    budget_why: str | None = None
    steps_per_run: int | None = None  # with the steps budget
    text: dict[str, str] | None = None  # the text each kind of run trained on
    replay_ratio: float | None = None  # two-stage only
    zero_shot_protocol: str | None = None
    verdict_rule: str | None = None
    statistics: list[StatisticRow] = field(default_factory=list)
    seconds: dict[str, float] | None = None
    note: str | None = None  # a caveat the report shows in bold (the demo's)

    #: What ``taxoclip study scaling`` always writes (``note`` only when set).
    ALWAYS: ClassVar[tuple[str, ...]] = (
        "format_version",
        "kind",
        "taxoclip_version",
        "recipe",
        "config",
        "worlds",
        "model_seeds",
        "sizes",
        "subset_rule",
        "budget",
        "budget_why",
        "steps_per_run",
        "text",
        "replay_ratio",
        "zero_shot_protocol",
        "verdict_rule",
        "claims",
        "trends",
        "statistics",
        "runs",
        "seconds",
    )

    def to_json(self) -> dict[str, Any]:
        """The file's JSON, in the order of ALWAYS (the design first, the runs last)."""
        written = _to_json(self, self.ALWAYS)
        return {k: written[k] for k in (*self.ALWAYS, "note") if k in written}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudyRecord:
        known = _known(cls, data)
        parsed = {
            "claims": [ClaimResult.from_json(c) for c in _entries(known.pop("claims", None))],
            "trends": [TrendResult.from_json(t) for t in _entries(known.pop("trends", None))],
            "runs": runs_from_json(known.pop("runs", None) or {}),
            "worlds": [StudyWorld.from_json(w) for w in _entries(known.pop("worlds", None))],
            "statistics": [
                StatisticRow.from_json(s) for s in _entries(known.pop("statistics", None))
            ],
        }
        return cls(**{"kind": "", **known, **parsed})

    @classmethod
    def read(cls, path: Path) -> StudyRecord:
        """A study.json from disk (``OSError`` / ``ValueError`` when unreadable)."""
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
