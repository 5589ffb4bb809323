"""``taxoclip curate``: raw records → resolved, filtered, deduplicated WebDataset shards.

Stages, in order (each record leaves as kept, or rejected with the stage and a reason):

1. ingest   read the sources into records (``curate.ingest``), on the driver
2. names    each distinct name resolved once against the backbone — Ray Data
3. category museum specimen / camera trap / citizen science from the metadata
4. images   fetch, decode checks, size, bomb guard, mode conversion, squash-resize, MD5,
            PDQ, optional model filter — Ray Data, the heavy stage; its results are
            persisted batch by batch under ``OUT/.work`` so a killed run resumes there
5. leak     near-duplicates of evaluation images (``--exclude-eval``) — faiss index
6. dedup    exact (MD5) then near (PDQ Hamming ≤ radius) duplicates within the data
7. shard    deterministic shuffle, WebDataset shards, ``manifest.parquet``,
            ``rejected.parquet``, ``stats.json``

The per-record stages are callable classes over Arrow batches (``NameStage``,
``ImageStage``): Ray Data runs them in worker processes, locally or on a cluster
(``ray_address``), and tests can call them directly. The global stages (dedup, shard)
run on the driver over compact columns (hashes, sizes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from taxoclip import __version__
from taxoclip.curate.config import CurateConfig, CurateResult, available_cores
from taxoclip.curate.ingest import ingest, parse_column_map
from taxoclip.curate.records import (
    GIVEN_RANKS,
    REJECT_COLUMNS,
    REJECT_STAGES,
    STATUS_HIGHER_RANK,
    STATUS_UNRESOLVED,
    rejection,
)
from taxoclip.errors import InputError, TaxoclipError, UsageError
from taxoclip.files import write_parquet_atomic, write_text_atomic
from taxoclip.taxonomy import RANK_NAMES, Lineage

log = logging.getLogger("taxoclip.curate")

WORK_DIR = ".work"
LINEAGE_COLUMNS = tuple(f"lineage_{r}" for r in RANK_NAMES)
_IMAGE_RESULT_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("mode", pa.string()),
        ("md5", pa.string()),
        ("pdq", pa.binary()),
        ("jpeg", pa.binary()),
        ("attempts", pa.int32()),
        ("cached", pa.bool_()),
    ]
)


# --------------------------------------------------------------------------- stages


class NameStage:
    """Resolve a batch of distinct (name, given ranks) queries; one backbone per worker."""

    def __init__(self, backbone: str) -> None:
        from taxoclip.curate.names import Backbone, NameResolver

        self.resolver = NameResolver(Backbone.load(Path(backbone)))

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        queries = [(r["scientific_name"], {k: r[k] for k in GIVEN_RANKS}) for r in rows]
        resolutions = self.resolver.resolve_many(queries)
        out = {
            "query": [r["query"] for r in rows],
            "status": [x.status for x in resolutions],
            "taxon_id": [x.taxon_id for x in resolutions],
            "accepted_name": [x.accepted_name for x in resolutions],
            "common_name": [x.common_name for x in resolutions],
            "score": [float(x.score) for x in resolutions],
            "note": [x.note for x in resolutions],
            "backbone_version": [x.backbone_version for x in resolutions],
        }
        for i, column in enumerate(LINEAGE_COLUMNS):
            out[column] = [x.lineage.ranks[i] for x in resolutions]
        return pa.table(out)


class ImageStage:
    """Fetch, check and hash a batch of records; shrink the good images for the shards."""

    def __init__(self, options: dict) -> None:
        from taxoclip.curate.fetch import Fetcher

        self.options = options
        cache = options.get("cache_dir")
        self.fetcher = Fetcher(
            Path(cache) if cache else None,
            per_host=options["per_host"],
            retries=options["retries"],
            timeout=options["timeout"],
        )
        self.model_filter = None
        if options.get("model_filter"):
            from taxoclip.curate.modelfilter import ZeroShotOrganismFilter

            self.model_filter = ZeroShotOrganismFilter.from_model(
                options["model_filter"], threshold=options["filter_threshold"]
            )

    def __call__(self, batch: pa.Table) -> pa.Table:
        from taxoclip.curate.images import inspect_image

        ids = batch.column("record_id").to_pylist()
        boxes = batch.column("bbox").to_pylist()
        fetched = self.fetcher.fetch_many(batch.column("url").to_pylist())
        rows = []
        for record_id, box, got in zip(ids, boxes, fetched, strict=True):
            row = _empty_image_row(record_id, got.attempts, got.cached)
            if got.error or got.data is None:
                row.update(stage="fetch", reason=got.error or "no data")
                rows.append(row)
                continue
            seen = inspect_image(
                got.data,
                min_size=self.options["min_size"],
                max_pixels=self.options["max_pixels"],
                out_size=self.options["image_size"],
                bbox=_parse_bbox(box),
                jpeg_quality=self.options["jpeg_quality"],
            )
            row.update(width=seen.width, height=seen.height, mode=seen.mode, md5=seen.md5)
            if seen.reason:
                row.update(stage="image", reason=seen.reason)
            else:
                row.update(pdq=seen.pdq, jpeg=seen.jpeg)
            rows.append(row)
        if self.model_filter is not None:
            self._apply_model_filter(rows)
        return pa.Table.from_pylist(rows, schema=_IMAGE_RESULT_SCHEMA)

    def _apply_model_filter(self, rows: list[dict]) -> None:
        import io

        from PIL import Image

        good = [r for r in rows if not r["stage"]]
        if not good:
            return
        images = [Image.open(io.BytesIO(r["jpeg"])).convert("RGB") for r in good]
        for row, reason in zip(good, self.model_filter(images), strict=True):
            if reason:
                row.update(stage="model_filter", reason=reason, jpeg=b"")


def _empty_image_row(record_id: str, attempts: int, cached: bool) -> dict:
    return {"record_id": record_id, "stage": "", "reason": "", "width": 0, "height": 0,
            "mode": "", "md5": "", "pdq": b"", "jpeg": b"",
            "attempts": int(attempts), "cached": bool(cached)}  # fmt: skip


def _parse_bbox(text: str) -> tuple[int, int, int, int] | None:
    if not text:
        return None
    x, y, w, h = (int(v) for v in text.split(","))
    return x, y, w, h


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
            # workers import taxoclip from the same environment as the driver
            ray.init(num_cpus=workers, **kwargs)
        started = True
    # Ray Data logs every dataset's start and finish at INFO; our own log says what matters
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    try:
        yield
    finally:
        if started:
            ray.shutdown()


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
    work = out / WORK_DIR
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 3)
        return now

    t = started
    ingested = ingest(config.sources, parse_column_map(config.columns), work / "sources")
    records = ingested.records
    rejected: list[dict] = list(ingested.rejected)
    n_in = records.num_rows + len(rejected)
    work.mkdir(parents=True, exist_ok=True)
    log.info("ingest: %d records from %d source(s), %d rejected", records.num_rows,
             len(ingested.sources), len(rejected))  # fmt: skip
    t = lap("ingest", t)

    with ray_session(config.ray_address, config.workers):
        names, names_info = _resolve_names(records, backbone, config)
        t = lap("names", t)
        records, names_rejected = _attach_names(records, names, config)
        rejected += names_rejected
        records, category_rejected = _attach_categories(records, config)
        rejected += category_rejected
        images = _run_image_stage(records, work, config, progress)
        t = lap("images", t)

    by_id = {row["record_id"]: row for row in records.to_pylist()}
    kept_ids: list[str] = []
    for record_id, result in images.items():
        if result["stage"]:
            row = by_id[record_id]
            rejected.append(_reject(row, result["stage"], result["reason"]))
        else:
            kept_ids.append(record_id)
    kept_ids.sort()
    kept_ids, dedup_rejected, dedup_info = _deduplicate(kept_ids, images, config)
    rejected += [_reject(by_id[rid], stage, reason) for rid, stage, reason in dedup_rejected]
    t = lap("dedup", t)

    shard_pattern, keys = _write_outputs(kept_ids, by_id, images, out, config, progress)
    t = lap("shard", t)
    stats = _stats(config, ingested.sources, n_in, kept_ids, by_id, rejected, names_info,
                   dedup_info, images, timings, time.perf_counter() - started)  # fmt: skip
    _write_ledgers(out, kept_ids, by_id, images, keys, rejected)
    write_text_atomic(out / "stats.json", json.dumps(stats, indent=2, sort_keys=True) + "\n")
    _check_invariant(n_in, kept_ids, rejected)
    if not config.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    if not kept_ids:
        raise TaxoclipError(
            f"curate: no record survived ({len(rejected)} rejected); see {out / 'rejected.parquet'}"
        )
    return CurateResult(out=out, stats=stats, shard_pattern=shard_pattern)


# --------------------------------------------------------------------------- names


def _query_key(row: dict) -> str:
    return json.dumps([row["scientific_name"], *(row[k] for k in GIVEN_RANKS)], ensure_ascii=False)


def _resolve_names(
    records: pa.Table, backbone: Path, config: CurateConfig
) -> tuple[dict[str, dict], dict]:
    """Each distinct (name, given ranks) once, on Ray Data; returns query key → resolution."""
    import ray.data

    columns = ["scientific_name", *GIVEN_RANKS]
    distinct: dict[str, dict] = {}
    for row in records.select(columns).to_pylist():
        distinct.setdefault(_query_key(row), row)
    if not distinct:
        return {}, {"distinct_names": 0, "names_per_second": 0.0}
    table = pa.Table.from_pylist([{"query": key, **row} for key, row in sorted(distinct.items())])
    started = time.perf_counter()
    ds = ray.data.from_arrow(_blocks(table, config.batch_size * 16, config.workers))
    ds = ds.map_batches(
        NameStage,
        fn_constructor_kwargs={"backbone": str(backbone)},
        batch_size=config.batch_size * 16,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=config.workers),
    )
    resolved = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in batch.to_pylist():
            resolved[row.pop("query")] = row
    seconds = time.perf_counter() - started
    statuses = Counter(r["status"] for r in resolved.values())
    log.info("names: %d distinct names resolved in %.1f s (%s)", len(resolved), seconds,
             ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))  # fmt: skip
    version = next((r["backbone_version"] for r in resolved.values()), "")
    return resolved, {
        "distinct_names": len(resolved),
        "names_seconds": round(seconds, 3),
        "backbone_version": version,
        "distinct_by_status": dict(sorted(statuses.items())),
    }


def _attach_names(
    records: pa.Table, resolved: dict[str, dict], config: CurateConfig
) -> tuple[pa.Table, list[dict]]:
    rows = records.to_pylist()
    keep, rejected = [], []
    for row in rows:
        res = resolved[_query_key(row)]
        if res["status"] == STATUS_UNRESOLVED:
            rejected.append(_reject(row, "names", f"unresolved: {res['note']}"))
            continue
        if res["status"] == STATUS_HIGHER_RANK and not config.keep_higher_rank:
            rejected.append(_reject(row, "names", f"higher rank only: {res['note']}"))
            continue
        row.update({k: res[k] for k in ("status", "taxon_id", "accepted_name", "common_name",
                                        "score", "note", "backbone_version", *LINEAGE_COLUMNS)})  # fmt: skip
        keep.append(row)
    return _table(keep, records.schema.names), rejected


def _attach_categories(records: pa.Table, config: CurateConfig) -> tuple[pa.Table, list[dict]]:
    from taxoclip.curate.images import category_of

    rows = records.to_pylist()
    keep, rejected = [], []
    for row in rows:
        row["category"] = category_of(
            row["basis_of_record"], row["event_remarks"], row["publisher"]
        )
        if config.categories and row["category"] not in config.categories:
            rejected.append(_reject(row, "category", f"category {row['category']} not asked for"))
        else:
            keep.append(row)
    return _table(keep, records.schema.names), rejected


# --------------------------------------------------------------------------- images


def _run_image_stage(
    records: pa.Table, work: Path, config: CurateConfig, progress: bool
) -> dict[str, dict]:
    """Image results for every record, reusing the batches an earlier run persisted."""
    import ray.data
    from tqdm import tqdm

    parts = work / "images"
    parts.mkdir(parents=True, exist_ok=True)
    done = _load_parts(parts)
    wanted = set(records.column("record_id").to_pylist())
    todo = records
    if done:
        todo = records.filter(
            pc.invert(pc.is_in(records.column("record_id"), pa.array(list(done))))
        )
    if done:
        log.info("images: resuming, %d records already done, %d to go", len(done), todo.num_rows)
    if todo.num_rows:
        options = {
            "cache_dir": str(work / "fetch-cache"),
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
        columns = todo.select(["record_id", "url", "bbox"])
        ds = ray.data.from_arrow(_blocks(columns, config.batch_size, config.workers))
        ds = ds.map_batches(
            ImageStage,
            fn_constructor_kwargs={"options": options},
            batch_size=config.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=config.workers),
        )
        next_part = _next_part_number(parts)
        with tqdm(total=todo.num_rows, unit="img", desc="images", disable=not progress) as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                write_parquet_atomic(parts / f"part-{next_part:06d}.parquet", batch)
                next_part += 1
                for row in batch.to_pylist():
                    done.setdefault(row["record_id"], row)
                bar.update(batch.num_rows)
    missing = wanted - done.keys()
    if missing:
        raise TaxoclipError(
            f"curate: image stage lost {len(missing)} records (bug): {sorted(missing)[:5]}"
        )
    return {rid: done[rid] for rid in sorted(wanted)}


def _load_parts(parts: Path) -> dict[str, dict]:
    """Results persisted by earlier runs; an unreadable part (a kill mid-write) is dropped."""
    done: dict[str, dict] = {}
    for path in sorted(parts.glob("part-*.parquet")):
        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - any damage means: redo those records
            log.warning("images: ignoring damaged %s (%s); its records are redone", path.name, exc)
            path.unlink(missing_ok=True)
            continue
        for row in table.to_pylist():
            done.setdefault(row["record_id"], row)
    return done


def _next_part_number(parts: Path) -> int:
    numbers = [int(p.stem.split("-")[1]) for p in parts.glob("part-*.parquet")]
    return max(numbers, default=-1) + 1


# --------------------------------------------------------------------------- dedup


def _deduplicate(
    kept_ids: list[str], images: dict[str, dict], config: CurateConfig
) -> tuple[list[str], list[tuple[str, str, str]], dict]:
    """Leaks against evaluation sets first, then exact and near duplicates within the data."""
    from taxoclip.curate import dedup

    rejected: list[tuple[str, str, str]] = []
    info: dict[str, object] = {}
    codes = dedup.as_codes([images[r]["pdq"] for r in kept_ids])

    def drop(removed: dict[int, int]) -> None:
        nonlocal kept_ids, codes
        keep = [i for i in range(len(kept_ids)) if i not in removed]
        kept_ids, codes = [kept_ids[i] for i in keep], codes[keep]

    if config.exclude_eval:
        leaked: dict[int, int] = {}
        eval_files, unreadable = 0, []
        for folder in config.exclude_eval:
            eval_codes, names, problems = dedup.hash_folder(Path(folder))
            eval_paths = [str(Path(folder) / name) for name in names]
            eval_files += len(eval_paths)
            unreadable += [f"{folder}/{p}" for p in problems]
            hits = dedup.leaks(codes, eval_codes, radius=config.radius)
            for index, eval_index in sorted(hits.items()):
                if index not in leaked:
                    leaked[index] = eval_index
                    rejected.append((kept_ids[index], "leak",
                                     f"near-duplicate of evaluation image {eval_paths[eval_index]}"))  # fmt: skip
        if unreadable:
            log.warning("--exclude-eval: %d evaluation files could not be hashed, e.g. %s",
                        len(unreadable), unreadable[0])  # fmt: skip
        info.update(eval_images=eval_files, eval_unreadable=unreadable, leaks=len(leaked))
        drop(leaked)

    priority = [(-(images[r]["width"] * images[r]["height"]), r) for r in kept_ids]
    exact = dedup.exact_duplicates([images[r]["md5"] for r in kept_ids], priority)
    for index, keeper in sorted(exact.items()):
        rejected.append((kept_ids[index], "dedup", f"exact duplicate of {kept_ids[keeper]}"))
    priority = [p for i, p in enumerate(priority) if i not in exact]
    drop(exact)

    near = dedup.near_duplicates(codes, priority, radius=config.radius)
    for index, keeper in sorted(near.items()):
        distance = int(np.unpackbits(codes[index] ^ codes[keeper]).sum())
        rejected.append((kept_ids[index], "dedup",
                         f"near duplicate of {kept_ids[keeper]} (PDQ Hamming {distance})"))  # fmt: skip
    drop(near)
    info.update(exact_duplicates=len(exact), near_duplicates=len(near))
    log.info("dedup: %d exact, %d near duplicates, %d leaks removed; %d kept", len(exact),
             len(near), info.get("leaks", 0), len(kept_ids))  # fmt: skip
    return kept_ids, rejected, info


# --------------------------------------------------------------------------- outputs


def shard_key(record_id: str) -> str:
    """A stable sample key: the same record gets the same key in every run."""
    return hashlib.sha1(record_id.encode("utf-8")).hexdigest()[:20]


def _write_outputs(
    kept_ids: list[str],
    by_id: dict[str, dict],
    images: dict[str, dict],
    out: Path,
    config: CurateConfig,
    progress: bool,
) -> tuple[str | None, dict[str, tuple[str, str]]]:
    from tqdm import tqdm

    from taxoclip.data import ShardSample, write_shards

    order = np.random.default_rng(config.seed).permutation(len(kept_ids))
    shuffled = [kept_ids[i] for i in order]
    if not shuffled:
        return None, {}

    def samples():
        for record_id in tqdm(shuffled, unit="img", desc="shards", disable=not progress):
            row = by_id[record_id]
            yield ShardSample(
                key=shard_key(record_id),
                jpg=images[record_id]["jpeg"],
                lineage=_lineage(row),
                common_name=row["common_name"] or row["vernacular_name"],
                meta={
                    "record_id": record_id,
                    "source": row["source"],
                    "status": row["status"],
                    "taxon_id": row["taxon_id"],
                    "category": row["category"],
                    "backbone_version": row["backbone_version"],
                },  # fmt: skip
            )

    shard_set = write_shards(samples(), out, samples_per_shard=config.samples_per_shard)
    keys: dict[str, tuple[str, str]] = {}
    position = 0
    for path, size in zip(shard_set.paths, shard_set.sizes, strict=True):
        for record_id in shuffled[position : position + size]:
            keys[record_id] = (Path(path).name, shard_key(record_id))
        position += size
    return shard_set.pattern, keys


def _lineage(row: dict) -> Lineage:
    return Lineage.from_ranks([row[c] for c in LINEAGE_COLUMNS])


def _write_ledgers(
    out: Path,
    kept_ids: list[str],
    by_id: dict[str, dict],
    images: dict[str, dict],
    keys: dict[str, tuple[str, str]],
    rejected: list[dict],
) -> None:
    kept_rows = []
    for record_id in kept_ids:
        row, image = by_id[record_id], images[record_id]
        shard, key = keys[record_id]
        kept_rows.append(
            {
                "record_id": record_id,
                "source": row["source"],
                "url": row["url"],
                "scientific_name": row["scientific_name"],
                **{c.removeprefix("lineage_"): row[c] for c in LINEAGE_COLUMNS},
                "common_name": row["common_name"],
                "status": row["status"],
                "taxon_id": row["taxon_id"],
                "accepted_name": row["accepted_name"],
                "backbone_version": row["backbone_version"],
                "category": row["category"],
                "width": image["width"],
                "height": image["height"],
                "md5": image["md5"],
                "pdq": image["pdq"].hex(),
                "shard": shard,
                "key": key,
            }  # fmt: skip
        )
    kept_rows.sort(key=lambda r: r["record_id"])
    _write_parquet(out / "manifest.parquet", kept_rows, _MANIFEST_COLUMNS)
    rows = sorted(({k: r[k] for k in REJECT_COLUMNS} for r in rejected),
                  key=lambda r: r["record_id"])  # fmt: skip
    _write_parquet(out / "rejected.parquet", rows, REJECT_COLUMNS)


_MANIFEST_COLUMNS = (
    "record_id", "source", "url", "scientific_name", *RANK_NAMES, "common_name", "status",
    "taxon_id", "accepted_name", "backbone_version", "category", "width", "height", "md5",
    "pdq", "shard", "key",
)  # fmt: skip


def _write_parquet(path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    table = (
        pa.Table.from_pylist(rows)
        if rows
        else pa.table({c: pa.array([], type=pa.string()) for c in columns})
    )
    write_parquet_atomic(path, table.select(list(columns)))


def _stats(
    config: CurateConfig,
    sources: list[dict],
    n_in: int,
    kept_ids: list[str],
    by_id: dict[str, dict],
    rejected: list[dict],
    names_info: dict,
    dedup_info: dict,
    images: dict[str, dict],
    timings: dict[str, float],
    seconds: float,
) -> dict:
    by_stage = Counter(r["stage"] for r in rejected)
    reasons = Counter(f"{r['stage']}: {_reason_kind(r['reason'])}" for r in rejected)
    kept_rows = [by_id[r] for r in kept_ids]
    fetched = list(images.values())
    return {
        "taxoclip_version": __version__,
        "config": config.parameters(),
        "sources": sources,
        "records_in": n_in,
        "kept": len(kept_ids),
        "rejected": len(rejected),
        "rejected_by_stage": {s: by_stage.get(s, 0) for s in REJECT_STAGES},
        "rejected_by_reason": dict(sorted(reasons.items())),
        "kept_by_status": dict(sorted(Counter(r["status"] for r in kept_rows).items())),
        "kept_by_category": dict(sorted(Counter(r["category"] for r in kept_rows).items())),
        "names": names_info,
        "dedup": dedup_info,
        "fetch": {
            "records": len(fetched),
            "from_cache": sum(bool(r["cached"]) for r in fetched),
            "retried": sum(r["attempts"] > 1 for r in fetched),
        },
        "seconds": round(seconds, 3),
        "stage_seconds": timings,
        "invariant": f"{n_in} in = {len(kept_ids)} kept + {len(rejected)} rejected",
    }


def _reason_kind(reason: str) -> str:
    """The reason's leading words (before details such as sizes or ids), for the histogram."""
    head = reason.split(":", 1)[0]
    for marker in (" of ", " (", " after "):
        head = head.split(marker, 1)[0]
    return head.strip()


def _check_invariant(n_in: int, kept_ids: list[str], rejected: list[dict]) -> None:
    ids = kept_ids + [r["record_id"] for r in rejected]
    problems = []
    if len(ids) != n_in:
        problems.append(f"{n_in} records in but {len(kept_ids)} kept + {len(rejected)} rejected")
    if len(set(ids)) != len(ids):
        problems.append("a record left the pipeline twice")
    if any(not r["stage"] or not r["reason"] for r in rejected):
        problems.append("a rejection has no stage or reason")
    if problems:
        raise TaxoclipError("curate: ledger invariant broken (bug): " + "; ".join(problems))


# --------------------------------------------------------------------------- helpers


def _reject(row: dict, stage: str, reason: str) -> dict[str, str]:
    return rejection(row["record_id"], row["source"], row["url"], stage, reason)


def _table(rows: list[dict], base_columns: list[str]) -> pa.Table:
    if rows:
        return pa.Table.from_pylist(rows)
    return pa.table({c: pa.array([], type=pa.string()) for c in base_columns})


def _blocks(table: pa.Table, rows_per_block: int, workers: int) -> list[pa.Table]:
    """Split into blocks so Ray Data can run several in parallel."""
    n = max(1, min(-(-table.num_rows // rows_per_block), 4096))
    n = max(n, min(workers * 2, table.num_rows))
    size = -(-table.num_rows // n) if table.num_rows else 1
    return [table.slice(i, size) for i in range(0, max(table.num_rows, 1), size)]
