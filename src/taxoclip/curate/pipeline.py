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
5. eval       each ``--exclude-eval`` folder's PDQ hashes, one Ray task each → ``eval/``
6. exact      leaks (the evaluation hashes broadcast to a map over the image results), then
              a group-by on MD5: most pixels, then smallest id kept → ``exact/``
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

Stages 1–10 are the objects of :mod:`taxoclip.curate.plan`, which also keeps the
bookkeeping: ``.work/state.json`` records which stages are done, with their counts; a
stage that is redone clears the stages after it. ``.work`` is removed after success unless
``--keep-work``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from taxoclip import __version__
from taxoclip.curate.config import CurateConfig, CurateResult, available_cores
from taxoclip.curate.driver import Run, Work
from taxoclip.curate.plan import stages
from taxoclip.curate.records import REJECT_STAGES
from taxoclip.curate.stages import CheckImages, ResolveNames, shard_key  # noqa: F401 - re-exported
from taxoclip.data import ShardSet
from taxoclip.errors import InputError, TaxoclipError, UsageError
from taxoclip.files import write_text_atomic

log = logging.getLogger("taxoclip.curate")

WORK_DIR = ".work"


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

    NOISE = (
        "Progress bars disabled",
        "Warning: The Ray cluster currently does not have any available CPUs",
    )

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
    started = time.perf_counter()
    with ray_session(config.ray_address, config.workers):
        run = Run(
            config,
            Work(out / WORK_DIR),
            stages(),
            progress,
            sources=sources,
            columns=columns,
            backbone=backbone,
        )
        counts = run.all()
        ledger = write_ledger(run.work, out)
    stats = _stats(config, counts, ledger, run.seconds, time.perf_counter() - started)
    write_text_atomic(out / "stats.json", json.dumps(stats, indent=2, sort_keys=True) + "\n")
    n_in = counts["ingest"].records_in
    _check_invariant(n_in, ledger)
    if not config.keep_work:
        shutil.rmtree(run.work.root, ignore_errors=True)
    sizes = counts["shards"].sizes
    if not n_in:  # the ledger is written all the same: a run over nothing is recorded
        raise TaxoclipError(
            f"curate: no record survived: the sources hold no record; see {out / 'stats.json'}"
        )
    if not ledger["kept"]:
        raise TaxoclipError(
            f"curate: no record survived ({ledger['rejected']} rejected); "
            f"see {out / 'rejected.parquet'}"
        )
    pattern = ShardSet(
        paths=[out / n for n in sorted(sizes)], sizes=[sizes[n] for n in sorted(sizes)]
    ).pattern
    return CurateResult(out=out, stats=stats, shard_pattern=pattern)


def write_ledger(work: Work, out: Path) -> dict:
    """Every kept and rejected row, sorted by record id, into the two ledgers (a Ray task
    drives the sort, so the driver holds no row); returns the counts met on the way."""
    import ray

    files = (
        work.files("manifest")
        + work.files("final", "rejected-*.parquet")
        + work.files("ingest-rejected")
    )
    task = ray.remote(num_cpus=0)(_ledger_task)  # no CPU: the sort's own tasks need them
    return ray.get(task.remote(files, str(out)))


def _ledger_task(files: list[str], out: str) -> dict:
    """Runs in a Ray worker: the ledger sort is driven from there, not from the driver."""
    _quiet_ray_data()
    from taxoclip.curate.output import write_ledgers

    return write_ledgers(files, out)


# --------------------------------------------------------------------------- stats


def _stats(
    config: CurateConfig,
    counts: dict,
    ledger: dict,
    stage_seconds: dict[str, float],
    seconds: float,
) -> dict:
    ingest, eval_, exact = counts["ingest"], counts["eval"], counts["exact"]
    dedup = {
        "exact_duplicates": exact.exact_duplicates,
        "near_duplicates": counts["near"].near_duplicates,
    }
    if config.exclude_eval:
        dedup.update(
            eval_images=eval_.eval_images, eval_unreadable=eval_.eval_unreadable, leaks=exact.leaks
        )
    n_in = ingest.records_in
    return {
        "taxoclip_version": __version__,
        "config": config.parameters(),
        "sources": ingest.sources,
        "records_in": n_in,
        "kept": ledger["kept"],
        "rejected": ledger["rejected"],
        "rejected_by_stage": {s: ledger["stage"].get(s, 0) for s in REJECT_STAGES},
        "rejected_by_reason": dict(sorted(ledger["reason"].items())),
        "kept_by_status": dict(sorted(ledger["status"].items())),
        "kept_by_category": dict(sorted(ledger["category"].items())),
        "names": dataclasses.asdict(counts["names"]),
        "dedup": dedup,
        "fetch": counts["final"].fetch,
        "seconds": round(seconds, 3),
        "stage_seconds": stage_seconds,
        "invariant": f"{n_in} in = {ledger['kept']} kept + {ledger['rejected']} rejected",
    }


def _check_invariant(n_in: int, ledger: dict) -> None:
    problems = []
    if ledger["kept"] + ledger["rejected"] != n_in:
        problems.append(
            f"{n_in} records in but {ledger['kept']} kept + {ledger['rejected']} rejected"
        )
    if ledger["repeated"]:
        problems.append(f"{ledger['repeated']} records left the pipeline twice")
    if ledger["missing_reason"] or "" in ledger["stage"]:
        problems.append("a rejection has no stage or reason")
    if problems:
        raise TaxoclipError("curate: ledger invariant broken (bug): " + "; ".join(problems))
