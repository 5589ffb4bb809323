"""The work Ray runs for ``taxoclip curate``: the schemas and helpers every stage shares,
and the per-record stages (ingest, names, records, images).

Everything here runs in Ray worker processes (tests may call it directly). The per-part
functions read Parquet parts under ``OUT/.work`` and write their own parts there with
atomic renames (a part's name is what resumption rests on), returning only small typed
count rows to the driver. The leak and dedup stages' work is in
:mod:`taxoclip.curate.duplicates`, the final join, shards and ledger in
:mod:`taxoclip.curate.output`; the stages in order are :mod:`taxoclip.curate.plan`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from taxoclip.curate.records import (
    GIVEN_RANKS,
    REJECT_COLUMNS,
    STATUS_HIGHER_RANK,
    STATUS_UNRESOLVED,
)
from taxoclip.files import write_parquet_atomic
from taxoclip.taxonomy import RANK_NAMES

LINEAGE_COLUMNS = tuple(f"lineage_{r}" for r in RANK_NAMES)
RESOLUTION_COLUMNS = (
    "status",
    "taxon_id",
    "accepted_name",
    "common_name",
    "score",
    "note",
    "backbone_version",
    *LINEAGE_COLUMNS,
)
IMAGE_COLUMNS = pa.schema(
    [
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
IMAGE_RESULT_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        *IMAGE_COLUMNS,
    ]
)
# What the dedup stages carry per record: no image bytes, no metadata.
DEDUP_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("pixels", pa.int64()),
        ("md5", pa.string()),
        ("pdq", pa.binary()),
        ("stage", pa.string()),
        ("reason", pa.string()),
    ]
)
DECISION_SCHEMA = pa.schema(
    [("record_id", pa.string()), ("stage", pa.string()), ("reason", pa.string())]
)
EDGE_SCHEMA = pa.schema(
    [
        ("a", pa.string()),
        ("a_pixels", pa.int64()),
        ("b", pa.string()),
        ("b_pixels", pa.int64()),
        ("distance", pa.int32()),
    ]
)
MANIFEST_COLUMNS = (
    "record_id",
    "source",
    "url",
    "scientific_name",
    *RANK_NAMES,
    "common_name",
    "status",
    "taxon_id",
    "accepted_name",
    "backbone_version",
    "category",
    "width",
    "height",
    "md5",
    "pdq",
    "shard",
    "key",
)
# Columns a kept record carries from the final pass to the shard writers.
_KEPT_COLUMNS = (
    "record_id",
    "source",
    "url",
    "scientific_name",
    *LINEAGE_COLUMNS,
    "common_name",
    "vernacular_name",
    "status",
    "taxon_id",
    "accepted_name",
    "backbone_version",
    "category",
    "width",
    "height",
    "md5",
    "pdq",
    "jpeg",
    "order_key",
)


# --------------------------------------------------------------------------- helpers


def query_keys(batch: pa.Table) -> list[str]:
    """The name-resolution key of each row: its verbatim name and given ranks, as JSON."""
    columns = [batch.column(c).to_pylist() for c in ("scientific_name", *GIVEN_RANKS)]
    return [json.dumps(list(values), ensure_ascii=False) for values in zip(*columns, strict=True)]


def with_query(batch: pa.Table) -> pa.Table:
    return pa.table({"query": pa.array(query_keys(batch), type=pa.string())})


def order_key(seed: int, record_id: str) -> str:
    """The seeded sort key that fixes the order of samples in the shards (a shuffle that is
    the same in every run and on every cluster)."""
    return hashlib.sha1(f"{seed}:{record_id}".encode()).hexdigest()


def shard_key(record_id: str) -> str:
    """A stable sample key: the same record gets the same key in every run."""
    return hashlib.sha1(record_id.encode("utf-8")).hexdigest()[:20]


def bucket_of(order: list[str], buckets: int) -> np.ndarray:
    """Bucket of each order key: contiguous ranges of the key space, so bucket b's keys all
    sort before bucket b + 1's."""
    prefix = np.array([int(k[:8], 16) for k in order], dtype=np.uint64)
    return ((prefix * np.uint64(buckets)) >> np.uint64(32)).astype(np.int64)


def _hash_bucket(values: list[bytes] | list[str], buckets: int) -> np.ndarray:
    return np.array(
        [
            int.from_bytes(
                hashlib.blake2b(v if isinstance(v, bytes) else v.encode(), digest_size=8).digest(),
                "little",
            )
            % buckets
            for v in values
        ],
        dtype=np.int64,
    )


def _strings(n: int, value: str = "") -> pa.Array:
    return pa.array([value] * n, type=pa.string())


def concat_parts(paths: list[str], columns: list[str] | None = None) -> pa.Table:
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in paths])


def read_part(
    batch: pa.Table, columns: list[str] | None = None, to_ledger: bool = False
) -> pa.Table:
    """``{"path": [file]}`` → the file's rows. Parts are read by their own map rather than
    ``ray.data.read_parquet``, whose threaded path listing trips over a partially imported
    optional module (fsspec's http without aiohttp) in Ray 2.60."""
    (path,) = batch.column("path").to_pylist()
    table = pq.read_table(path, columns=columns)
    if to_ledger:
        from taxoclip.curate.output import to_ledger_rows

        return to_ledger_rows(table)
    return table


# --------------------------------------------------------------------------- ingest


def ingest_source(
    index: int,
    path: str,
    kind: str,
    label: str,
    columns: dict | None,
    work: str,
    *,
    most: int,
    least: int,
    workers: int,
) -> dict:
    """Read one source and write it as record parts ``ingest/s<index>-<n>.parquet`` and
    rejection parts ``ingest-rejected/s<index>-<n>.parquet`` as its chunks come (an
    archive is never held whole); returns its description (or the error raised)."""
    from taxoclip.curate.ingest import _to_table, read_source
    from taxoclip.curate.records import RECORD_SCHEMA
    from taxoclip.errors import TaxoclipError

    root = Path(work)
    parts, rejects = root / "ingest", root / "ingest-rejected"
    parts.mkdir(parents=True, exist_ok=True)
    rejects.mkdir(parents=True, exist_ok=True)
    try:
        source = read_source(Path(path), kind, label, columns, root / "sources" / label)
        # parts sized from the upper bound of the records: ~4 per worker, within bounds
        part_rows = max(least, min(most, -(-source.estimate // (4 * workers))))
        records: list[dict] = []
        rejected: list[dict] = []
        n = r = 0
        for chunk, bad in source.chunks():
            records.extend(chunk)
            rejected.extend(bad)
            while len(records) >= part_rows:
                write_parquet_atomic(
                    parts / f"s{index:04d}-{n:06d}.parquet", _to_table(records[:part_rows])
                )
                records, n = records[part_rows:], n + 1
            if len(rejected) >= most:
                write_parquet_atomic(
                    rejects / f"s{index:04d}-{r:06d}.parquet", _reject_table(rejected)
                )
                rejected, r = [], r + 1
    except TaxoclipError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    finally:
        shutil.rmtree(root / "sources" / label / "spill", ignore_errors=True)
    if records or n == 0:  # every source writes at least one (maybe empty) part
        write_parquet_atomic(
            parts / f"s{index:04d}-{n:06d}.parquet",
            _to_table(records) if records else RECORD_SCHEMA.empty_table(),
        )
        n += 1
    write_parquet_atomic(rejects / f"s{index:04d}-{r:06d}.parquet", _reject_table(rejected))
    return {**source.description(), "parts": n, "rows": source.records}


def _reject_table(rows: list[dict]) -> pa.Table:
    return pa.table({c: pa.array([r[c] for r in rows], type=pa.string()) for c in REJECT_COLUMNS})


# --------------------------------------------------------------------------- names


class ResolveNames:
    """Resolve a batch of distinct queries (``query`` column, see ``query_keys``); one
    backbone per worker."""

    def __init__(self, backbone: str) -> None:
        from taxoclip.curate.names import Backbone, NameResolver

        self.resolver = NameResolver(Backbone.load(Path(backbone)))

    def __call__(self, batch: pa.Table) -> pa.Table:
        keys = batch.column("query").to_pylist()
        queries = []
        for key in keys:
            name, *ranks = json.loads(key)
            queries.append((name, dict(zip(GIVEN_RANKS, ranks, strict=True))))
        resolutions = self.resolver.resolve_many(queries)
        out = {
            "query": pa.array(keys, type=pa.string()),
            "status": [x.status for x in resolutions],
            "taxon_id": pa.array([x.taxon_id for x in resolutions], type=pa.string()),
            "accepted_name": [x.accepted_name for x in resolutions],
            "common_name": [x.common_name for x in resolutions],
            "score": pa.array([float(x.score) for x in resolutions], type=pa.float64()),
            "note": [x.note for x in resolutions],
            "backbone_version": [x.backbone_version for x in resolutions],
        }
        for i, column in enumerate(LINEAGE_COLUMNS):
            out[column] = [x.lineage.ranks[i] for x in resolutions]
        return pa.table(
            {k: pa.array(v, type=pa.string()) if isinstance(v, list) else v for k, v in out.items()}
        )


class ResolveAndWriteNames(ResolveNames):
    """``ResolveNames`` that persists each batch it resolves (``write_names``): the actor
    pool is the last operator of its dataset, so no write task waits for a CPU it holds."""

    def __init__(self, backbone: str, out_dir: str) -> None:
        super().__init__(backbone)
        self.out_dir = out_dir

    def __call__(self, batch: pa.Table) -> pa.Table:
        return write_names(super().__call__(batch), self.out_dir)


# The names table as ResolveNames writes it: what ``records`` joins when ``names/`` is empty
# (no record left after ingest), so an empty run takes the same path as any other.
NAMES_SCHEMA = pa.schema(
    [("query", pa.string())]
    + [(c, pa.float64() if c == "score" else pa.string()) for c in RESOLUTION_COLUMNS]
)

_NAMES_CACHE: dict[str, tuple[pa.Table, dict[str, int]]] = {}  # one entry per process


def _names_table(names_dir: str) -> tuple[pa.Table, dict[str, int]]:
    """The resolution table of ``names/`` (one row per distinct query), read once per
    worker process: a broadcast through the file system."""
    key = _dir_key(names_dir)
    if key not in _NAMES_CACHE:
        _NAMES_CACHE.clear()
        files = sorted(str(p) for p in Path(names_dir).glob("*.parquet"))
        names = concat_parts(files) if files else NAMES_SCHEMA.empty_table()
        row_of = {q: i for i, q in enumerate(names.column("query").to_pylist())}
        _NAMES_CACHE[key] = (names, row_of)
    return _NAMES_CACHE[key]


def _dir_key(folder: str) -> str:
    """A folder and the names, sizes and times of its files: a cache key that changes when
    a later run (in the same worker process) rewrites the folder."""
    files = sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).glob("*.parquet")
    )
    return json.dumps([folder, files])


def attach_parts(
    batch: pa.Table,
    names_dir: str,
    out_dir: str,
    keep_higher_rank: bool,
    categories: list[str] | None,
) -> pa.Table:
    """Ingest parts (``part`` column) → records parts: each record with its resolution
    (joined back from the distinct-name table), its category and, for those rejected here,
    ``stage``/``reason`` (``names`` or ``category``)."""
    from taxoclip.curate.images import category_of

    names, row_of = _names_table(names_dir)
    names = names.select(list(RESOLUTION_COLUMNS))
    wanted = set(categories) if categories else None
    sizes = []
    for path in batch.column("part").to_pylist():
        records = pq.read_table(path)
        resolved = names.take(pa.array([row_of[q] for q in query_keys(records)], pa.int64()))
        stage, reason, category = [], [], []
        meta = zip(
            *(
                records.column(c).to_pylist()
                for c in ("basis_of_record", "event_remarks", "publisher")
            ),
            strict=True,
        )
        statuses = resolved.column("status").to_pylist()
        notes = resolved.column("note").to_pylist()
        for status, note, (basis, remarks, publisher) in zip(statuses, notes, meta, strict=True):
            kind = category_of(basis, remarks, publisher)
            category.append(kind)
            if status == STATUS_UNRESOLVED:
                stage.append("names"), reason.append(f"unresolved: {note}")
            elif status == STATUS_HIGHER_RANK and not keep_higher_rank:
                stage.append("names"), reason.append(f"higher rank only: {note}")
            elif wanted is not None and kind not in wanted:
                stage.append("category"), reason.append(f"category {kind} not asked for")
            else:
                stage.append(""), reason.append("")
        out = records
        for name in RESOLUTION_COLUMNS:
            out = out.append_column(name, resolved.column(name))
        for name, values in (("category", category), ("stage", stage), ("reason", reason)):
            out = out.append_column(name, pa.array(values, type=pa.string()))
        write_parquet_atomic(Path(out_dir) / Path(path).name, out)
        sizes.append(out.num_rows)
    return pa.table({"part": batch.column("part"), "rows": pa.array(sizes, pa.int64())})


def write_names(batch: pa.Table, out_dir: str) -> pa.Table:
    """Persist one block of resolved names (a file named by its content); returns its
    counts: distinct names ``n`` per ``status`` and ``backbone_version``."""
    digest = hashlib.sha1("\n".join(batch.column("query").to_pylist()).encode()).hexdigest()
    write_parquet_atomic(Path(out_dir) / f"names-{digest[:16]}.parquet", batch)
    counts = batch.group_by(["status", "backbone_version"]).aggregate([("query", "count")])
    return counts.rename_columns(["status", "backbone_version", "n"])


# --------------------------------------------------------------------------- images


class CheckImages:
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
        return pa.Table.from_pylist(rows, schema=IMAGE_RESULT_SCHEMA)

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


class CheckImagePart:
    """Records part → images part: every record of the part with its image results
    (bytes included); records rejected earlier pass through untouched. One part is the unit
    of resumption: a part file exists whole (atomic rename) or is redone."""

    def __init__(self, options: dict, out_dir: str, batch_size: int) -> None:
        self.stage = CheckImages(options)
        self.out = Path(out_dir)
        self.batch_size = batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.table(
            {
                "part": batch.column("part"),
                "rows": [self.process(p) for p in batch.column("part").to_pylist()],
            }
        )

    def process(self, path: str) -> int:
        records = pq.read_table(path)
        todo = np.flatnonzero(np.asarray(pc.equal(records.column("stage"), "")))
        results = {}
        for start in range(0, len(todo), self.batch_size):
            rows = records.take(pa.array(todo[start : start + self.batch_size]))
            for row in self.stage(rows.select(["record_id", "url", "bbox"])).to_pylist():
                results[row["record_id"]] = row
        image_rows, stage, reason = [], [], []
        for record_id, old_stage, old_reason in zip(
            *(records.column(c).to_pylist() for c in ("record_id", "stage", "reason")),
            strict=True,
        ):
            row = results.get(record_id) or _empty_image_row(record_id, 0, False)
            image_rows.append(row)
            stage.append(old_stage or row["stage"])
            reason.append(old_reason or row["reason"])
        images = pa.Table.from_pylist(image_rows, schema=IMAGE_RESULT_SCHEMA)
        out = records.drop_columns(["stage", "reason"])
        for field in IMAGE_COLUMNS:
            out = out.append_column(field, images.column(field.name))
        out = out.append_column("stage", pa.array(stage, type=pa.string()))
        out = out.append_column("reason", pa.array(reason, type=pa.string()))
        write_parquet_atomic(self.out / Path(path).name, out)
        return out.num_rows


def _empty_image_row(record_id: str, attempts: int, cached: bool) -> dict:
    return {
        "record_id": record_id,
        "stage": "",
        "reason": "",
        "width": 0,
        "height": 0,
        "mode": "",
        "md5": "",
        "pdq": b"",
        "jpeg": b"",
        "attempts": int(attempts),
        "cached": bool(cached),
    }


def _parse_bbox(text: str) -> tuple[int, int, int, int] | None:
    if not text:
        return None
    x, y, w, h = (int(v) for v in text.split(","))
    return x, y, w, h
