"""The bookkeeping of a curation run, written once for every stage.

A :class:`Stage` names the folder it writes under ``OUT/.work`` (``name``, plus ``extra``
folders), says whether it resumes part by part (``per_part``) and has one ``run`` that
does its work on the open Ray session and returns its counts (its ``Counts`` dataclass).
:class:`Run` drives a list of them: a stage already done (``state.json``) is skipped and
its counts read back; otherwise it and every stage after it are cleared (a per-part stage
keeps its finished parts) and it is run and marked done with its counts. The stages
themselves, in order, are in :mod:`taxoclip.curate.plan`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from taxoclip.curate.config import CurateConfig
from taxoclip.errors import TaxoclipError
from taxoclip.files import write_text_atomic

log = logging.getLogger("taxoclip.curate")

BUCKET_ROWS = 8192  # kept records per order bucket (one group of the final join)
GROUP_ROWS = 200_000  # rows per partition of the dedup group-bys


class Work:
    """``OUT/.work``: stage folders and ``state.json`` (each done stage with its counts)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / "state.json"
        self.state: dict = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def dir(self, name: str) -> Path:
        return self.root / name

    def files(self, name: str, pattern: str = "*.parquet") -> list[str]:
        return sorted(str(p) for p in (self.root / name).glob(pattern))

    def save(self) -> None:
        write_text_atomic(self.path, json.dumps(self.state, indent=1, sort_keys=True) + "\n")


class Stage:
    """One step of the curation (see the module docstring)."""

    name: ClassVar[str]
    extra: ClassVar[tuple[str, ...]] = ()  # more folders it writes
    per_part: ClassVar[bool] = False  # resumed part by part (its finished parts are kept)

    @dataclass
    class Counts:
        pass

    def run(self, run: Run) -> Any:
        raise NotImplementedError


class Run:
    """One curation run over a list of stages, on the Ray session that is open."""

    def __init__(
        self,
        config: CurateConfig,
        work: Work,
        stages: list[Stage],
        progress: bool = False,
        **inputs: Any,
    ) -> None:
        import ray

        self.config = config
        self.work = work
        self.stages = stages
        self.progress = progress
        self.inputs = inputs  # what the first stages read: sources, column map, backbone
        self.counts: dict[str, Any] = {}
        self.seconds: dict[str, float] = {}
        cpus = int(ray.cluster_resources().get("CPU", config.workers or 1))
        self.pool = max(1, cpus if config.ray_address else min(cpus, config.workers or cpus))

    def all(self) -> dict[str, Any]:
        """Run (or resume) every stage; returns each stage's counts by name."""
        for stage in self.stages:
            self.stage(stage)
        return self.counts

    def stage(self, stage: Stage) -> Any:
        """The bookkeeping of every stage: done → its counts; else clear, run, mark."""
        done = self.work.state.get(stage.name)
        if done is not None:
            counts = stage.Counts(**done)
        else:
            started = time.perf_counter()
            self._clear_from(stage)
            self.work.dir(stage.name).mkdir(parents=True, exist_ok=True)
            counts = stage.run(self)
            self.seconds[stage.name] = round(time.perf_counter() - started, 3)
            self.work.state[stage.name] = dataclasses.asdict(counts)
            self.work.save()
        self.counts[stage.name] = counts
        return counts

    def _clear_from(self, stage: Stage) -> None:
        """``stage`` is about to run: it and every stage after it are cleared. A per-part
        stage keeps its finished parts (and so do the per-part stages after it, which are
        resumed the same way); a whole stage being redone clears them too."""
        import shutil

        names = [s.name for s in self.stages]
        for later in self.stages[names.index(stage.name) :]:
            self.work.state.pop(later.name, None)
            if later.per_part and stage.per_part:
                continue
            for folder in (later.name, *later.extra):
                shutil.rmtree(self.work.dir(folder), ignore_errors=True)
        self.work.save()

    # ----------------------------------------------------------------------- helpers

    def actors(self, work_items: int):
        """A fixed actor pool, as large as the cluster allows, over ``work_items`` batches of
        a finished input (a list of parts, or a materialised dataset) — never behind Ray
        tasks of the same dataset. An actor holds its CPU for the whole stage: a pool behind
        upstream tasks (read, group-by) that took every CPU starved them, and with one CPU
        (``--workers 1``) even a pool of one never let them run (a deadlock)."""
        import ray.data

        size = max(1, min(self.pool, work_items))
        return ray.data.ActorPoolStrategy(min_size=size, max_size=size)

    def partitions(self, rows: int) -> int:
        return max(self.pool, math.ceil(rows / GROUP_ROWS))

    def records(self) -> int:
        """Records read by ingest (the size every later stage is planned by)."""
        return self.counts["ingest"].records

    def per_part(self, stage: Stage, source: str, fn, kwargs: dict, actors: bool) -> int:
        """Run ``fn`` over every part of ``source`` that has no part in ``stage`` yet;
        returns the number of parts."""
        import ray.data
        from tqdm import tqdm

        target = self.work.dir(stage.name)
        parts = self.work.files(source)
        done = {Path(p).name for p in self.work.files(stage.name)}
        todo = [p for p in parts if Path(p).name not in done]
        if done and todo:
            log.info("%s: resuming, %d parts done, %d to go", stage.name, len(done), len(todo))
        if todo:
            kwargs = {**kwargs, "out_dir": str(target)}
            options: dict = {"batch_size": 1, "batch_format": "pyarrow"}
            if actors:
                options.update(fn_constructor_kwargs=kwargs, compute=self.actors(len(todo)))
            else:
                options.update(fn_kwargs=kwargs)
            ds = ray.data.from_items([{"part": p} for p in todo]).map_batches(fn, **options)
            disable = not self.progress or stage.name != "images"
            with tqdm(total=len(todo), unit="part", desc=stage.name, disable=disable) as bar:
                for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                    bar.update(batch.num_rows)
        missing = [p for p in parts if not (target / Path(p).name).is_file()]
        if missing:
            raise TaxoclipError(f"curate: {stage.name} stage lost {len(missing)} parts (bug)")
        return len(parts)


def collect(ds, schema: pa.Schema) -> pa.Table:
    """The small per-block count tables a dataset's blocks return, as one table."""
    blocks = [b for b in ds.iter_batches(batch_size=None, batch_format="pyarrow") if b.num_rows]
    return pa.concat_tables(blocks).cast(schema) if blocks else schema.empty_table()


# The typed counts Ray functions return, one small table per block (stages.write_names,
# stages.final_bucket), summed here.
NAME_COUNTS = pa.schema(
    [("status", pa.string()), ("backbone_version", pa.string()), ("n", pa.int64())]
)
BUCKET_COUNTS = pa.schema(
    [(c, pa.int64()) for c in ("bucket", "kept", "rejected", "records", "from_cache", "retried")]
)


def total(table: pa.Table, column: str) -> int:
    return int(sum(table.column(column).to_pylist())) if table.num_rows else 0


def read_parts(files: list[str], columns: list[str] | None = None):
    """A dataset of Parquet parts, one block per part (see ``stages.read_part``)."""
    import ray.data

    from taxoclip.curate.stages import read_part

    return ray.data.from_items([{"path": f} for f in files]).map_batches(
        read_part, fn_kwargs={"columns": columns}, batch_size=1, batch_format="pyarrow"
    )
