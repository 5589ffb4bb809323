"""``taxoclip curate``: raw records → resolved, filtered, deduplicated WebDataset shards.

Every stage is a Ray Data dataset persisted as Parquet parts under ``OUT/.work/<stage>/``;
the driver only plans, counts and renames. It never holds image bytes or a Python row per
record: what comes back to it are part names, per-block counts and per-bucket or per-shard
sizes. Stages, in order (each record leaves as kept, or rejected with a stage and reason):

1. ingest     one Ray task per source → ``ingest/s<k>-<n>.parquet`` record parts (and
              ``ingest-rejected/``)
2. names      the distinct (name, given ranks) queries by a group-by, materialised, then
              each resolved once by an actor pool holding the backbone → ``names/``
3. records    per ingest part: the resolution joined back (the names table is small — one
              row per distinct name — and read by each actor), the category, rejections of
              stages ``names``/``category`` → ``records/<part>``
4. images     per records part: fetch, decode checks, size, bomb guard, mode conversion,
              squash-resize, MD5, PDQ, optional model filter → ``images/<part>`` (bytes
              included). The unit of resumption: a killed run redoes only missing parts.
5. leak       evaluation PDQ hashes broadcast to a map over the image results → ``leak/``
6. exact      a group-by on MD5: most pixels, then smallest id kept → ``exact/``
7. pairs      PDQ multi-index hashing: radius + 1 bands, records equal on a band are
              candidates (a group-by per band key), verified by Hamming ≤ radius → ``pairs/``
8. near       the greedy keeper rule over the candidate graph (one task; only records with
              a near pair are in it) → ``near/``
9. final      image results ⋈ leak/dedup decisions, partitioned by a seeded order key into
              contiguous key ranges (buckets) → ``final/kept-<b>`` sorted by the key,
              ``final/rejected-<b>``
10. shards    contiguous ranks of that order, one Ray task per shard: ``shard-<n>.tar`` and
              its manifest part; the driver writes ``sizes.json``
11. ledger    every ledger row sorted by record id (Ray Data sort) and streamed into
              ``manifest.parquet`` and ``rejected.parquet`` by one task, counted as it
              passes; records in = kept + rejected is checked from those counts.

``.work/state.json`` records which whole stages are done; a stage that is redone clears the
stages after it. ``.work`` is removed after success unless ``--keep-work``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from taxoclip import __version__
from taxoclip.curate.config import CurateConfig, CurateResult, available_cores
from taxoclip.curate.records import GIVEN_RANKS, REJECT_STAGES
from taxoclip.curate.stages import ImageStage, NameStage, shard_key  # noqa: F401 - re-exported
from taxoclip.errors import InputError, TaxoclipError, UsageError
from taxoclip.files import write_text_atomic

log = logging.getLogger("taxoclip.curate")

WORK_DIR = ".work"
# Whole stages after the images, in order; each one redone clears those after it.
_GLOBAL_STAGES = ("eval", "exact", "pairs", "near", "final", "shards")
_PER_PART = ("records", "images")
_ORDER = ("ingest", "names", *_PER_PART, *_GLOBAL_STAGES)
_EXTRA_DIRS = {"ingest": ("ingest-rejected",), "shards": ("manifest", "shard-tmp")}
_BUCKET_ROWS = 8192  # kept records per order bucket (one group of the final join)
_GROUP_ROWS = 200_000  # rows per partition of the dedup group-bys


# --------------------------------------------------------------------------- running


@contextmanager
def ray_session(address: str | None, workers: int) -> Iterator[None]:
    """Connect to a cluster at ``address`` or start a local Ray with ``workers`` CPUs."""
    import ray
    import ray.data

    started = False
    if not ray.is_initialized():
        logging.getLogger("ray").setLevel(logging.WARNING)
        kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address:
            ray.init(address=address, **kwargs)
        else:
            # A Ray of our own on this machine: without address="local", ray.init() joins any
            # cluster `ray start` left running here (RAY_ADDRESS or /tmp/ray). Workers import
            # taxoclip from the same environment as the driver.
            # Ray runs its workers at nice 15 by default: on a busy machine they would starve
            # behind any other job, though the curation is the job here.
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(address="local", num_cpus=workers, **kwargs)
        started = True
    _quiet_ray_data()
    try:
        yield
    finally:
        if started:
            ray.shutdown()


class _DropRayNoise(logging.Filter):
    """Two Ray Data warnings that say nothing true about a run: the progress bars are off
    on purpose (tqdm shows ours), and "no available CPUs ... will hang" comes from a look
    at the resource view right after a task ended, ~0.1 s before its CPU shows as free
    again: with one CPU (``--workers 1``) it would come every run, though nothing hangs."""

    NOISE = ("Progress bars disabled", "Warning: The Ray cluster currently does not have any "
             "available CPUs")  # fmt: skip

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.NOISE)


_RAY_NOISE = _DropRayNoise()


def _quiet_ray_data() -> None:
    import ray.data
    from ray.data.context import ShuffleStrategy

    # Ray Data logs every dataset's start and finish at INFO; our own log says what matters
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    for name in ("ray.data.dataset", "ray.data._internal.progress"):  # a filter is per logger
        logging.getLogger(name).addFilter(_RAY_NOISE)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # Group-bys and the ledger sort shuffle with plain tasks: Ray 2.60's default hash
    # shuffle starts aggregator actors for every group-by (measured here: ~14 s per
    # group-by on a busy 2-core machine against ~2 s for the task-based shuffle).
    context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED


class _Work:
    """``OUT/.work``: stage folders and ``state.json`` (what is done, with its counts)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / "state.json"
        self.state: dict = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def dir(self, name: str) -> Path:
        return self.root / name

    def done(self, name: str) -> dict | None:
        return self.state.get(name)

    def mark(self, name: str, info: dict) -> None:
        self.state[name] = info
        write_text_atomic(self.path, json.dumps(self.state, indent=1, sort_keys=True) + "\n")

    def clear(self, names: tuple[str, ...]) -> None:
        for name in names:
            self.state.pop(name, None)
            shutil.rmtree(self.root / name, ignore_errors=True)

    def mark_all(self) -> None:
        write_text_atomic(self.path, json.dumps(self.state, indent=1, sort_keys=True) + "\n")

    def files(self, name: str, pattern: str = "*.parquet") -> list[str]:
        return sorted(str(p) for p in (self.root / name).glob(pattern))


def curate(config: CurateConfig, progress: bool | None = None) -> CurateResult:
    """Run every stage; resume from ``OUT/.work`` when an earlier run was cut short.

    ``progress`` None follows ``config.progress``. ``config.workers`` None becomes the
    number of cores here, and stats.json records that number.
    """
    progress = config.progress if progress is None else progress
    if config.workers is None:
        config = dataclasses.replace(config, workers=available_cores())
    backbone = Path(config.backbone)
    if not (backbone / "Taxon.tsv").is_file():
        raise InputError(f"--backbone {backbone}: no Taxon.tsv (a GBIF-format backbone folder)")
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    from taxoclip.curate.ingest import parse_column_map, source_labels

    columns = parse_column_map(config.columns)
    sources = source_labels(config.sources)  # bad sources fail here, before Ray starts
    work = _Work(out / WORK_DIR)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 3)
        return now

    t = started
    with ray_session(config.ray_address, config.workers):
        run = _Run(config, work, progress)
        ingested = run.ingest(sources, columns)
        t = lap("ingest", t)
        names_info = run.names(backbone)
        t = lap("names", t)
        run.records()
        run.images()
        t = lap("images", t)
        dedup_info = run.dedup()
        t = lap("dedup", t)
        shard_pattern = run.shards(out)
        ledger = run.ledger(out)
        t = lap("shard", t)
        fetch = run.fetch_counts()
    n_in = ingested["records_in"]
    stats = _stats(config, ingested["sources"], n_in, ledger, names_info, dedup_info, fetch,
                   timings, time.perf_counter() - started)  # fmt: skip
    write_text_atomic(out / "stats.json", json.dumps(stats, indent=2, sort_keys=True) + "\n")
    _check_invariant(n_in, ledger)
    if not config.keep_work:
        shutil.rmtree(work.root, ignore_errors=True)
    if not n_in:  # the ledger is written all the same: a run over nothing is recorded
        raise TaxoclipError(f"curate: no record survived: the sources hold no record; "
                            f"see {out / 'stats.json'}")  # fmt: skip
    if not ledger["kept"]:
        raise TaxoclipError(
            f"curate: no record survived ({ledger['rejected']} rejected); "
            f"see {out / 'rejected.parquet'}"
        )
    return CurateResult(out=out, stats=stats, shard_pattern=shard_pattern)


class _Run:
    """The stages of one run, on the Ray session that is open."""

    def __init__(self, config: CurateConfig, work: _Work, progress: bool) -> None:
        import ray

        self.config = config
        self.work = work
        self.progress = progress
        cpus = int(ray.cluster_resources().get("CPU", config.workers or 1))
        self.pool = max(1, cpus if config.ray_address else min(cpus, config.workers or cpus))

    # ----------------------------------------------------------------------- helpers

    def _actors(self, work_items: int):
        """A fixed actor pool, as large as the cluster allows, over ``work_items`` batches of
        a finished input (a list of parts, or a materialised dataset) — never behind Ray
        tasks of the same dataset. An actor holds its CPU for the whole stage: a pool behind
        upstream tasks (read, group-by) that took every CPU starved them, and with one CPU
        (``--workers 1``) even a pool of one never let them run (a deadlock)."""
        import ray.data

        size = max(1, min(self.pool, work_items))
        return ray.data.ActorPoolStrategy(min_size=size, max_size=size)

    def _partitions(self, rows: int) -> int:
        return max(self.pool, math.ceil(rows / _GROUP_ROWS))

    def _redo(self, name: str) -> None:
        """``name`` is about to be computed: it and every stage after it are cleared. A
        per-part stage being resumed keeps its finished parts (and so do the per-part
        stages after it); a whole stage being redone clears them too."""
        whole = name not in _PER_PART
        for stage in _ORDER[_ORDER.index(name) :]:
            if stage in _PER_PART and not whole:
                self.work.state.pop(stage, None)
                continue
            self.work.clear((stage, *_EXTRA_DIRS.get(stage, ())))
        self.work.mark_all()

    def _sum(self, ds) -> Counter:
        """Sum the per-block counts (``counts`` column, JSON) a dataset's blocks return."""
        total: Counter = Counter()
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for text in batch.column("counts").to_pylist():
                total.update(json.loads(text))
        return total

    def _per_part(self, stage: str, source: str, fn, kwargs: dict, actors: bool) -> None:
        """Run ``fn`` over every part of ``source`` that has no part in ``stage`` yet."""
        import ray.data
        from tqdm import tqdm

        target = self.work.dir(stage)
        target.mkdir(parents=True, exist_ok=True)
        parts = self.work.files(source)
        done = {Path(p).name for p in self.work.files(stage)}
        todo = [p for p in parts if Path(p).name not in done]
        if done and todo:
            log.info("%s: resuming, %d parts already done, %d to go", stage, len(done), len(todo))
        if todo:
            kwargs = {**kwargs, "out_dir": str(target)}
            options: dict = {"batch_size": 1, "batch_format": "pyarrow"}
            if actors:
                options.update(fn_constructor_kwargs=kwargs, compute=self._actors(len(todo)))
            else:
                options.update(fn_kwargs=kwargs)
            ds = ray.data.from_items([{"part": p} for p in todo]).map_batches(fn, **options)
            disable = not self.progress or stage != "images"
            with tqdm(total=len(todo), unit="part", desc=stage, disable=disable) as bar:
                for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                    bar.update(batch.num_rows)
        missing = [p for p in parts if not (target / Path(p).name).is_file()]
        if missing:
            raise TaxoclipError(f"curate: {stage} stage lost {len(missing)} parts (bug)")
        self.work.mark(stage, {"parts": len(parts)})

    def _fresh(self, name: str) -> Path:
        """An empty folder for whole stage ``name`` (which, and all after it, is redone)."""
        self._redo(name)
        target = self.work.dir(name)
        target.mkdir(parents=True)
        return target

    # ----------------------------------------------------------------------- stages

    def ingest(self, sources: list[tuple[Path, str, str]], columns: dict | None) -> dict:
        import ray

        from taxoclip.curate.stages import ingest_source

        done = self.work.done("ingest")
        if done:
            log.info("ingest: resuming, %d records already read", done["records_in"])
            return done
        self._redo("ingest")
        workers = self.config.workers or 1
        # a part is the unit of work and of resumption of the image stage: several per
        # worker, from one batch up to 64 batches (4,096 records by default) each: the
        # driver's Ray Data bookkeeping grows with the number of parts (~1 MB a part
        # measured), not with the records
        sizing = {"most": self.config.batch_size * 64, "least": self.config.batch_size,
                  "workers": max(workers, self.pool)}  # fmt: skip
        task = ray.remote(num_cpus=1)(ingest_source)
        refs = [
            task.remote(i, str(path), kind, label, columns, str(self.work.root), **sizing)
            for i, (path, kind, label) in enumerate(sources)
        ]
        described = ray.get(refs)
        for item in described:
            if "error" in item:
                raise (UsageError if item["error"] == "UsageError" else InputError)(item["message"])
        records = sum(d["rows"] for d in described)
        rejected = sum(d["rejected"] + d["records"] - d["rows"] for d in described)
        descriptions = [{k: d[k] for k in ("source", "path", "kind", "records", "rejected")}
                        for d in described]  # fmt: skip
        info = {"records_in": records + rejected, "records": records, "sources": descriptions}
        log.info("ingest: %d records from %d source(s), %d rejected", records,
                 len(sources), rejected)  # fmt: skip
        self.work.mark("ingest", info)
        return info

    def names(self, backbone: Path) -> dict:
        done = self.work.done("names")
        if done:
            return done
        started = time.perf_counter()
        target = self._fresh("names")
        rows = self.work.done("ingest")["records"]
        counts: Counter = Counter()
        if rows:  # ingest left no record: nothing to resolve, no backbone to load
            counts = self._resolve(self._distinct_queries(rows), backbone, target)
        seconds = time.perf_counter() - started
        statuses = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("status:")}
        versions = sorted(k.split(":", 1)[1] for k in counts if k.startswith("version:"))
        info = {
            "distinct_names": counts["distinct"],
            "names_seconds": round(seconds, 3),
            "backbone_version": versions[0] if versions else "",
            "distinct_by_status": dict(sorted(statuses.items())),
        }
        log.info("names: %d distinct names resolved in %.1f s (%s)", counts["distinct"], seconds,
                 ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))  # fmt: skip
        self.work.mark("names", info)
        return info

    def _distinct_queries(self, rows: int):
        """The distinct (name, given ranks) queries of the ingest parts, materialised: the
        actor pool that resolves them then starts over a finished input (see _actors).
        One row per distinct name, in the object store, not on the driver."""
        from taxoclip.curate.stages import with_query

        return (
            read_parts(self.work.files("ingest"), columns=["scientific_name", *GIVEN_RANKS])
            .map_batches(with_query, batch_format="pyarrow")
            .groupby("query", num_partitions=self._partitions(rows))
            .count()
            .select_columns(["query"])
            .materialize()
        )

    def _resolve(self, queries, backbone: Path, target: Path) -> Counter:
        """Resolve and persist the queries (an actor pool, one backbone per actor); the
        actors write the names parts themselves, so no task waits behind the pool."""
        from taxoclip.curate.stages import NameWriter

        distinct = queries.count()
        if not distinct:
            return Counter()
        batch = self.config.batch_size * 16
        kwargs = {"backbone": str(backbone), "out_dir": str(target)}
        return self._sum(
            queries.map_batches(NameWriter, fn_constructor_kwargs=kwargs, batch_size=batch,
                                batch_format="pyarrow",
                                compute=self._actors(math.ceil(distinct / batch)))
        )  # fmt: skip

    def records(self) -> None:
        from taxoclip.curate.stages import attach_parts

        if self.work.done("records"):
            return
        self._redo("records")
        kwargs = {
            "names_dir": str(self.work.dir("names")),
            "keep_higher_rank": self.config.keep_higher_rank,
            "categories": self.config.categories,
        }
        self._per_part("records", "ingest", attach_parts, kwargs, actors=False)

    def images(self) -> None:
        from taxoclip.curate.stages import ImagePartStage

        if self.work.done("images"):
            return
        self._redo("images")
        config = self.config
        options = {
            "cache_dir": str(self.work.dir("fetch-cache")),
            "per_host": config.per_host,
            "retries": config.retries,
            "timeout": config.timeout,
            "min_size": config.min_size,
            "max_pixels": config.max_pixels,
            "image_size": config.image_size,
            "jpeg_quality": config.jpeg_quality,
            "model_filter": config.model_filter,
            "filter_threshold": config.filter_threshold,
        }
        kwargs = {"options": options, "batch_size": config.batch_size}
        self._per_part("images", "records", ImagePartStage, kwargs, actors=True)

    def dedup(self) -> dict:
        """Leaks, exact and near duplicates: maps and group-bys over compact columns."""
        import ray

        from taxoclip.curate import dedup, stages

        config = self.config
        if not self.work.done("exact"):  # leaks (a map) and exact duplicates (a group-by)
            info: dict = {}
            eval_dir = self._fresh("eval")
            task = ray.remote(num_cpus=1)(stages.hash_eval_folder)
            hashed = ray.get([task.remote(i, str(folder), str(eval_dir))
                              for i, folder in enumerate(config.exclude_eval)])  # fmt: skip
            eval_files = sum(h["images"] for h in hashed)
            unreadable = [u for h in hashed for u in h["unreadable"]]
            if unreadable:
                log.warning("--exclude-eval: %d evaluation files could not be hashed, e.g. %s",
                            len(unreadable), unreadable[0])  # fmt: skip
            target = self._fresh("exact")
            rows = self.work.done("ingest")["records"]
            parts = self._partitions(rows)
            columns = ["record_id", "stage", "width", "height", "md5", "pdq"]
            ds = (
                read_parts(self.work.files("images"), columns=columns)
                .map_batches(stages.leak_rows, fn_kwargs={"eval_dir": str(eval_dir),
                                                          "radius": config.radius},
                             batch_format="pyarrow")
                .map_batches(stages.with_md5_bucket, fn_kwargs={"buckets": parts},
                             batch_format="pyarrow")
                .groupby("bucket", num_partitions=parts)
                .map_groups(stages.exact_group, fn_kwargs={"out_dir": str(target)},
                            batch_format="pyarrow")
            )  # fmt: skip
            counts = self._sum(ds)
            if config.exclude_eval:
                info.update(eval_images=eval_files, eval_unreadable=unreadable,
                            leaks=counts["leak"])  # fmt: skip
            info["exact_duplicates"] = counts["dedup"]
            self.work.mark("exact", {"info": info, "left": counts[""]})
        exact = self.work.done("exact")
        info = dict(exact["info"])
        left = exact["left"]

        if not self.work.done("pairs"):  # candidate pairs: a group-by per band key
            target = self._fresh("pairs")
            bands = len(dedup.band_bounds(config.radius))
            parts = self._partitions(left * bands)
            if left:
                ds = (
                    read_parts(self.work.files("exact"), columns=list(stages.DEDUP_SCHEMA.names))
                    .map_batches(stages.band_rows, fn_kwargs={"radius": config.radius,
                                                              "buckets": parts},
                                 batch_format="pyarrow")
                    .groupby("bucket", num_partitions=parts)
                    .map_groups(stages.pairs_group, fn_kwargs={"radius": config.radius,
                                                               "out_dir": str(target)},
                                batch_format="pyarrow")
                )  # fmt: skip
                pairs = self._sum(ds)["pairs"]
            else:
                pairs = 0
            self.work.mark("pairs", {"pairs": pairs})

        if not self.work.done("near"):  # the greedy keeper rule over the candidate graph
            target = self._fresh("near")
            task = ray.remote(num_cpus=1)(stages.resolve_near)
            n = ray.get(task.remote(self.work.files("pairs"), str(target / "near.parquet")))
            self.work.mark("near", {"dedup": n})
        info["near_duplicates"] = self.work.done("near")["dedup"]
        log.info("dedup: %d exact, %d near duplicates, %d leaks removed; %d candidate pairs",
                 info["exact_duplicates"], info["near_duplicates"], info.get("leaks", 0),
                 self.work.done("pairs")["pairs"])  # fmt: skip
        return info

    def shards(self, out: Path) -> str | None:
        import ray.data

        from taxoclip.curate import stages
        from taxoclip.data import ShardSet

        config = self.config
        if not self.work.done("final"):
            kept_per_bucket, fetch = self._final(self._fresh("final"))
            self.work.mark("final", {"kept_per_bucket": kept_per_bucket, "fetch": dict(fetch)})
        final = self.work.done("final")
        kept_per_bucket = {int(b): k for b, k in final["kept_per_bucket"].items()}

        done = self.work.done("shards")
        if not done:
            self._fresh("shards")
            (self.work.dir("manifest")).mkdir(parents=True, exist_ok=True)
            plan = _shard_plan(kept_per_bucket, self.work.dir("final"), config.samples_per_shard)
            names = [f"shard-{i:06d}.tar" for i in range(len(plan))]
            if plan:
                from tqdm import tqdm

                ds = ray.data.from_items(
                    [{"shard": i, "pieces": json.dumps(p)} for i, p in enumerate(plan)]
                ).map_batches(stages.write_shard_rows, batch_size=1, batch_format="pyarrow",
                              fn_kwargs={"out_dir": str(out), "work_dir": str(self.work.root)})  # fmt: skip
                with tqdm(total=len(plan), unit="shard", desc="shards",
                          disable=not self.progress) as bar:  # fmt: skip
                    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                        bar.update(batch.num_rows)
            sizes = {name: sum(stop - start for _, start, stop in p)
                     for name, p in zip(names, plan, strict=True)}  # fmt: skip
            for stale in out.glob("shard-*.tar"):
                if stale.name not in sizes:
                    stale.unlink()
            if sizes:
                text = json.dumps(dict(sorted(sizes.items())), indent=1) + "\n"
                write_text_atomic(out / "sizes.json", text)
            self.work.mark("shards", {"sizes": sizes})
            done = self.work.done("shards")
        sizes = done["sizes"]
        if not sizes:
            return None
        return ShardSet(paths=[out / n for n in sorted(sizes)],
                        sizes=[sizes[n] for n in sorted(sizes)]).pattern  # fmt: skip

    def _final(self, target: Path) -> tuple[dict[str, int], Counter]:
        """Image results ⋈ leak/dedup decisions by order bucket (``final/``): the kept
        records per bucket and the fetch counts."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from taxoclip.curate import stages

        kept_per_bucket: dict[str, int] = {}
        fetch: Counter = Counter()
        images = self.work.files("images")
        if not images:  # no ingest part: nothing reached the per-part stages
            return kept_per_bucket, fetch
        buckets = max(self.pool, math.ceil(self.work.done("exact")["left"] / _BUCKET_ROWS))
        base = pq.read_schema(images[0])
        schema = pa.schema([*base, pa.field("order_key", pa.string()),
                            pa.field("bucket", pa.int64()), pa.field("decided", pa.bool_())])  # fmt: skip
        kwargs = {"seed": self.config.seed, "buckets": buckets, "schema": schema}
        decisions = self.work.files("exact") + self.work.files("near")
        ds = read_parts(images).map_batches(stages.with_order, fn_kwargs=kwargs,
                                            batch_format="pyarrow")  # fmt: skip
        ds = ds.union(read_parts(decisions, columns=["record_id", "stage", "reason"])
                      .map_batches(stages.with_order, fn_kwargs=kwargs,
                                   batch_format="pyarrow"))  # fmt: skip
        ds = ds.groupby("bucket", num_partitions=min(buckets, 2 * self.pool)).map_groups(
            stages.final_bucket, fn_kwargs={"out_dir": str(target)}, batch_format="pyarrow"
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for text in batch.column("counts").to_pylist():  # one row per bucket
                counts = json.loads(text)
                kept_per_bucket[str(counts.pop("bucket"))] = counts.pop("kept")
                fetch.update({k: counts.get(k, 0) for k in ("records", "from_cache", "retried")})
        return kept_per_bucket, fetch

    def ledger(self, out: Path) -> dict:
        import ray

        files = (self.work.files("manifest") + self.work.files("final", "rejected-*.parquet")
                 + self.work.files("ingest-rejected"))  # fmt: skip
        task = ray.remote(num_cpus=0)(_ledger_task)
        return ray.get(task.remote(files, str(out)))

    def fetch_counts(self) -> dict:
        fetch = self.work.done("final")["fetch"]
        return {k: fetch.get(k, 0) for k in ("records", "from_cache", "retried")}


def read_parts(files: list[str], columns: list[str] | None = None):
    """A dataset of Parquet parts, one block per part (see ``stages.read_part``)."""
    import ray.data

    from taxoclip.curate.stages import read_part

    return ray.data.from_items([{"path": f} for f in files]).map_batches(
        read_part, fn_kwargs={"columns": columns}, batch_size=1, batch_format="pyarrow"
    )


def _ledger_task(files: list[str], out: str) -> dict:
    """Runs in a Ray worker: the ledger sort is driven from there, not from the driver."""
    _quiet_ray_data()
    from taxoclip.curate.stages import write_ledgers

    return write_ledgers(files, out)


def _shard_plan(kept_per_bucket: dict[int, int], final: Path, per_shard: int) -> list[list]:
    """Shard i holds ranks [i·per_shard, (i+1)·per_shard) of the order: pieces
    ``[bucket file, start, stop]`` from the bucket files, which are sorted and in key order."""
    pieces: list[tuple[str, int]] = [
        (str(final / f"kept-{b:06d}.parquet"), n) for b, n in sorted(kept_per_bucket.items()) if n
    ]
    plan: list[list] = []
    current: list = []
    room = per_shard
    for path, n in pieces:
        start = 0
        while start < n:
            take = min(room, n - start)
            current.append([path, start, start + take])
            start += take
            room -= take
            if room == 0:
                plan.append(current)
                current, room = [], per_shard
    if current:
        plan.append(current)
    return plan


# --------------------------------------------------------------------------- stats


def _stats(
    config: CurateConfig,
    sources: list[dict],
    n_in: int,
    ledger: dict,
    names_info: dict,
    dedup_info: dict,
    fetch: dict,
    timings: dict[str, float],
    seconds: float,
) -> dict:
    return {
        "taxoclip_version": __version__,
        "config": config.parameters(),
        "sources": sources,
        "records_in": n_in,
        "kept": ledger["kept"],
        "rejected": ledger["rejected"],
        "rejected_by_stage": {s: ledger["stage"].get(s, 0) for s in REJECT_STAGES},
        "rejected_by_reason": dict(sorted(ledger["reason"].items())),
        "kept_by_status": dict(sorted(ledger["status"].items())),
        "kept_by_category": dict(sorted(ledger["category"].items())),
        "names": names_info,
        "dedup": dedup_info,
        "fetch": fetch,
        "seconds": round(seconds, 3),
        "stage_seconds": timings,
        "invariant": f"{n_in} in = {ledger['kept']} kept + {ledger['rejected']} rejected",
    }


def _check_invariant(n_in: int, ledger: dict) -> None:
    problems = []
    if ledger["kept"] + ledger["rejected"] != n_in:
        problems.append(f"{n_in} records in but {ledger['kept']} kept + "
                        f"{ledger['rejected']} rejected")  # fmt: skip
    if ledger["repeated"]:
        problems.append(f"{ledger['repeated']} records left the pipeline twice")
    if ledger["missing_reason"] or "" in ledger["stage"]:
        problems.append("a rejection has no stage or reason")
    if problems:
        raise TaxoclipError("curate: ledger invariant broken (bug): " + "; ".join(problems))
