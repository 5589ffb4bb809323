"""The curation plan: its stages as objects, in order (:func:`stages`).

Each stage has its inputs (the folders of earlier stages under ``OUT/.work``), its output
folder, its typed ``Counts`` and one ``run``; the bookkeeping around them (done, cleared,
resumed, marked) is :class:`taxoclip.curate.driver.Run`'s. The work Ray runs is in
:mod:`taxoclip.curate.stages`; the order and the layout of ``.work`` are in
:mod:`taxoclip.curate.pipeline`'s docstring.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from taxoclip.curate.driver import (
    BUCKET_COUNTS,
    BUCKET_ROWS,
    NAME_COUNTS,
    Run,
    Stage,
    collect,
    read_parts,
    total,
)
from taxoclip.curate.records import GIVEN_RANKS
from taxoclip.errors import InputError, UsageError
from taxoclip.files import write_text_atomic

log = logging.getLogger("taxoclip.curate")


# --------------------------------------------------------------------------- the stages


class Ingest(Stage):
    """One Ray task per source → record parts ``ingest/s<k>-<n>`` and ``ingest-rejected/``."""

    name = "ingest"
    extra = ("ingest-rejected", "sources")

    @dataclass
    class Counts:
        records_in: int = 0  # read + rejected at ingest
        records: int = 0  # read
        sources: list[dict] = field(default_factory=list)

    def run(self, run: Run) -> Counts:
        import ray

        from taxoclip.curate.stages import ingest_source

        config, sources = run.config, run.inputs["sources"]
        # a part is the unit of work and of resumption of the image stage: several per
        # worker, from one batch up to 64 batches (4,096 records by default) each: the
        # driver's Ray Data bookkeeping grows with the number of parts (~1 MB a part
        # measured), not with the records
        sizing = {
            "most": config.batch_size * 64,
            "least": config.batch_size,
            "workers": max(config.workers or 1, run.pool),
        }
        task = ray.remote(num_cpus=1)(ingest_source)
        refs = [
            task.remote(
                i, str(path), kind, label, run.inputs["columns"], str(run.work.root), **sizing
            )
            for i, (path, kind, label) in enumerate(sources)
        ]
        described = ray.get(refs)
        for item in described:
            if "error" in item:
                raise (UsageError if item["error"] == "UsageError" else InputError)(item["message"])
        read = sum(d["rows"] for d in described)
        rejected = sum(d["rejected"] + d["records"] - d["rows"] for d in described)
        keys = ("source", "path", "kind", "records", "rejected")
        log.info("ingest: %d records from %d source(s), %d rejected", read, len(sources), rejected)
        return self.Counts(
            records_in=read + rejected,
            records=read,
            sources=[{k: d[k] for k in keys} for d in described],
        )


class Names(Stage):
    """The distinct (name, given ranks) queries by a group-by, materialised; an actor pool,
    one backbone per actor, resolves each once and writes it → ``names/``."""

    name = "names"

    @dataclass
    class Counts:
        distinct_names: int = 0
        names_seconds: float = 0.0
        backbone_version: str = ""
        distinct_by_status: dict[str, int] = field(default_factory=dict)

    def run(self, run: Run) -> Counts:
        from taxoclip.curate.stages import ResolveAndWriteNames, with_query

        started = time.perf_counter()
        counts = self.Counts()
        if run.records():  # ingest left no record: nothing to resolve, no backbone to load
            queries = (
                read_parts(run.work.files("ingest"), columns=["scientific_name", *GIVEN_RANKS])
                .map_batches(with_query, batch_format="pyarrow")
                .groupby("query", num_partitions=run.partitions(run.records()))
                .count()
                .select_columns(["query"])
                .materialize()  # the pool then starts over a finished input (Run.actors)
            )
            distinct = queries.count()
            batch = run.config.batch_size * 16
            kwargs = {
                "backbone": str(run.inputs["backbone"]),
                "out_dir": str(run.work.dir(self.name)),
            }
            resolved = collect(
                queries.map_batches(
                    ResolveAndWriteNames,
                    fn_constructor_kwargs=kwargs,
                    batch_size=batch,
                    batch_format="pyarrow",
                    compute=run.actors(math.ceil(distinct / batch)),
                ),
                NAME_COUNTS,
            )
            by_status: dict[str, int] = {}
            for status, n in zip(
                *(resolved.column(c).to_pylist() for c in ("status", "n")), strict=True
            ):
                by_status[status] = by_status.get(status, 0) + n
            versions = sorted(set(resolved.column("backbone_version").to_pylist()))
            counts = self.Counts(
                distinct_names=total(resolved, "n"),
                backbone_version=versions[0] if versions else "",
                distinct_by_status=dict(sorted(by_status.items())),
            )
        counts.names_seconds = round(time.perf_counter() - started, 3)
        log.info(
            "names: %d distinct names resolved in %.1f s (%s)",
            counts.distinct_names,
            counts.names_seconds,
            ", ".join(f"{k} {v}" for k, v in counts.distinct_by_status.items()),
        )
        return counts


class Records(Stage):
    """Per ingest part: the resolution joined back, the category, the ``names``/``category``
    rejections → ``records/<part>``."""

    name = "records"
    per_part = True

    @dataclass
    class Counts:
        parts: int = 0

    def run(self, run: Run) -> Counts:
        from taxoclip.curate.stages import attach_parts

        kwargs = {
            "names_dir": str(run.work.dir("names")),
            "keep_higher_rank": run.config.keep_higher_rank,
            "categories": run.config.categories,
        }
        return self.Counts(run.per_part(self, "ingest", attach_parts, kwargs, actors=False))


class Images(Stage):
    """Per records part, an actor pool: fetch, checks, convert, squash-resize, MD5, PDQ,
    model filter → ``images/<part>`` (bytes included)."""

    name = "images"
    per_part = True

    @dataclass
    class Counts:
        parts: int = 0

    def run(self, run: Run) -> Counts:
        from taxoclip.curate.stages import CheckImagePart

        c = run.config
        options = {
            "cache_dir": str(run.work.dir("fetch-cache")),
            "per_host": c.per_host,
            "retries": c.retries,
            "timeout": c.timeout,
            "min_size": c.min_size,
            "max_pixels": c.max_pixels,
            "image_size": c.image_size,
            "jpeg_quality": c.jpeg_quality,
            "model_filter": c.model_filter,
            "filter_threshold": c.filter_threshold,
        }
        kwargs = {"options": options, "batch_size": c.batch_size}
        return self.Counts(run.per_part(self, "records", CheckImagePart, kwargs, actors=True))


class Eval(Stage):
    """Each ``--exclude-eval`` folder hashed by one Ray task → ``eval/e<k>.parquet``."""

    name = "eval"

    @dataclass
    class Counts:
        eval_images: int = 0
        eval_unreadable: list[str] = field(default_factory=list)

    def run(self, run: Run) -> Counts:
        import ray

        from taxoclip.curate.duplicates import hash_eval_folder

        task = ray.remote(num_cpus=1)(hash_eval_folder)
        target = str(run.work.dir(self.name))
        hashed = ray.get(
            [
                task.remote(i, str(folder), target)
                for i, folder in enumerate(run.config.exclude_eval)
            ]
        )
        unreadable = [u for h in hashed for u in h["unreadable"]]
        if unreadable:
            log.warning(
                "--exclude-eval: %d evaluation files could not be hashed, e.g. %s",
                len(unreadable),
                unreadable[0],
            )
        return self.Counts(sum(h["images"] for h in hashed), unreadable)


class Exact(Stage):
    """Leaks (a map against the broadcast evaluation hashes) and exact duplicates (a
    group-by on MD5) → ``exact/`` (id, pixels, MD5, PDQ, decision), written by Ray Data."""

    name = "exact"

    @dataclass
    class Counts:
        leaks: int = 0
        exact_duplicates: int = 0
        left: int = 0  # records still in

    def run(self, run: Run) -> Counts:
        from taxoclip.curate import duplicates

        if not run.work.files("images"):  # no ingest part: nothing reached the images
            return self.Counts()
        parts = run.partitions(run.records())
        columns = ["record_id", "stage", "width", "height", "md5", "pdq"]
        leak_kwargs = {"eval_dir": str(run.work.dir("eval")), "radius": run.config.radius}
        decided = (
            read_parts(run.work.files("images"), columns=columns)
            .map_batches(duplicates.leak_rows, fn_kwargs=leak_kwargs, batch_format="pyarrow")
            .map_batches(
                duplicates.with_md5_bucket, fn_kwargs={"buckets": parts}, batch_format="pyarrow"
            )
            .groupby("bucket", num_partitions=parts)
            .map_groups(duplicates.exact_group, batch_format="pyarrow")
            .materialize()
        )
        decided.write_parquet(str(run.work.dir(self.name)))
        by_stage = stage_counts(decided)
        return self.Counts(by_stage.get("leak", 0), by_stage.get("dedup", 0), by_stage.get("", 0))


class Pairs(Stage):
    """PDQ multi-index hashing: one row per (record, band), a group-by on the band key,
    candidates verified by Hamming ≤ radius → ``pairs/`` (edges), written by Ray Data."""

    name = "pairs"

    @dataclass
    class Counts:
        pairs: int = 0

    def run(self, run: Run) -> Counts:
        from taxoclip.curate import dedup, duplicates, stages

        radius, left = run.config.radius, run.counts["exact"].left
        if not left:
            return self.Counts()
        parts = run.partitions(left * len(dedup.band_bounds(radius)))
        edges = (
            read_parts(run.work.files("exact"), columns=list(stages.DEDUP_SCHEMA.names))
            .map_batches(
                duplicates.band_rows,
                fn_kwargs={"radius": radius, "buckets": parts},
                batch_format="pyarrow",
            )
            .groupby("bucket", num_partitions=parts)
            .map_groups(
                duplicates.pairs_group, fn_kwargs={"radius": radius}, batch_format="pyarrow"
            )
            .materialize()
        )
        edges.write_parquet(str(run.work.dir(self.name)))
        return self.Counts(edges.count())


class Near(Stage):
    """The greedy keeper rule over the candidate graph, in one task → ``near/near.parquet``."""

    name = "near"

    @dataclass
    class Counts:
        near_duplicates: int = 0

    def run(self, run: Run) -> Counts:
        import ray

        from taxoclip.curate.duplicates import resolve_near

        task = ray.remote(num_cpus=1)(resolve_near)
        out = str(run.work.dir(self.name) / "near.parquet")
        counts = self.Counts(ray.get(task.remote(run.work.files("pairs"), out)))
        log.info(
            "dedup: %d exact, %d near duplicates, %d leaks removed; %d candidate pairs",
            run.counts["exact"].exact_duplicates,
            counts.near_duplicates,
            run.counts["exact"].leaks,
            run.counts["pairs"].pairs,
        )
        return counts


class Final(Stage):
    """Image results ⋈ leak/dedup decisions through one group-by on a bucket of a seeded
    order key → ``final/kept-<b>`` (sorted by the key) and ``final/rejected-<b>``."""

    name = "final"

    @dataclass
    class Counts:
        kept_per_bucket: dict[str, int] = field(default_factory=dict)
        fetch: dict[str, int] = field(default_factory=dict)

    def run(self, run: Run) -> Counts:
        import pyarrow.parquet as pq

        from taxoclip.curate import output

        images = run.work.files("images")
        if not images:  # no ingest part: nothing reached the per-part stages
            return self.Counts(fetch={k: 0 for k in output.FETCH_COUNTS})
        buckets = max(run.pool, math.ceil(run.counts["exact"].left / BUCKET_ROWS))
        base = pq.read_schema(images[0])
        schema = pa.schema(
            [
                *base,
                pa.field("order_key", pa.string()),
                pa.field("bucket", pa.int64()),
                pa.field("decided", pa.bool_()),
            ]
        )
        kwargs = {"seed": run.config.seed, "buckets": buckets, "schema": schema}
        decisions = run.work.files("exact") + run.work.files("near")
        ds = read_parts(images).map_batches(
            output.with_order, fn_kwargs=kwargs, batch_format="pyarrow"
        )
        ds = ds.union(
            read_parts(decisions, columns=["record_id", "stage", "reason"]).map_batches(
                output.with_order, fn_kwargs=kwargs, batch_format="pyarrow"
            )
        )
        ds = ds.groupby("bucket", num_partitions=min(buckets, 2 * run.pool)).map_groups(
            output.final_bucket,
            fn_kwargs={"out_dir": str(run.work.dir(self.name))},
            batch_format="pyarrow",
        )
        table = collect(ds, BUCKET_COUNTS)  # one row per bucket
        kept = dict(
            zip(
                map(str, table.column("bucket").to_pylist()),
                table.column("kept").to_pylist(),
                strict=True,
            )
        )
        return self.Counts(kept, {k: total(table, k) for k in output.FETCH_COUNTS})


class Shards(Stage):
    """Shard i = ranks ``[i·N, (i+1)·N)`` of the order, cut from the bucket files; one Ray
    task per shard writes ``OUT/shard-<i>.tar`` and its manifest part; ``sizes.json``."""

    name = "shards"
    extra = ("manifest", "shard-tmp")

    @dataclass
    class Counts:
        sizes: dict[str, int] = field(default_factory=dict)

    def run(self, run: Run) -> Counts:
        import ray.data
        from tqdm import tqdm

        from taxoclip.curate import output

        out = Path(run.config.out)
        run.work.dir("manifest").mkdir(parents=True, exist_ok=True)
        kept = {int(b): n for b, n in run.counts["final"].kept_per_bucket.items()}
        plan = shard_plan(kept, run.work.dir("final"), run.config.samples_per_shard)
        if plan:
            ds = ray.data.from_items(
                [{"shard": i, "pieces": json.dumps(p)} for i, p in enumerate(plan)]
            ).map_batches(
                output.write_shard_rows,
                batch_size=1,
                batch_format="pyarrow",
                fn_kwargs={"out_dir": str(out), "work_dir": str(run.work.root)},
            )
            with tqdm(
                total=len(plan), unit="shard", desc="shards", disable=not run.progress
            ) as bar:
                for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                    bar.update(batch.num_rows)
        sizes = {
            f"shard-{i:06d}.tar": sum(stop - start for _, start, stop in p)
            for i, p in enumerate(plan)
        }
        for stale in out.glob("shard-*.tar"):
            if stale.name not in sizes:
                stale.unlink()
        if sizes:
            write_text_atomic(
                out / "sizes.json", json.dumps(dict(sorted(sizes.items())), indent=1) + "\n"
            )
        return self.Counts(sizes)


def stage_counts(ds) -> dict[str, int]:
    """Rows per ``stage`` value of a (materialised) dataset; "" is still in."""
    schema = pa.schema([("stage", pa.string()), ("count()", pa.int64())])
    table = collect(ds.groupby("stage").count(), schema)
    return dict(
        zip(table.column("stage").to_pylist(), table.column("count()").to_pylist(), strict=True)
    )


def shard_plan(kept_per_bucket: dict[int, int], final: Path, per_shard: int) -> list[list]:
    """Shard i holds ranks [i·per_shard, (i+1)·per_shard) of the order: pieces
    ``[bucket file, start, stop]`` from the bucket files, which are sorted and in key order."""
    pieces = [
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


def stages() -> list[Stage]:
    """The curation plan, in order."""
    return [
        Ingest(),
        Names(),
        Records(),
        Images(),
        Eval(),
        Exact(),
        Pairs(),
        Near(),
        Final(),
        Shards(),
    ]
