"""The work Ray runs for ``taxoclip curate``: per-part stages, group functions and tasks.

Everything here runs in Ray worker processes (tests may call it directly). Each function
reads Parquet parts under ``OUT/.work`` and writes its own parts there with atomic renames,
returning only small summary rows (part names, counts) to the driver; see
``taxoclip.curate.pipeline`` for the order of the stages and the layout of ``.work``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
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
from taxoclip.taxonomy import RANK_NAMES, Lineage

LINEAGE_COLUMNS = tuple(f"lineage_{r}" for r in RANK_NAMES)
RESOLUTION_COLUMNS = ("status", "taxon_id", "accepted_name", "common_name", "score", "note",
                      "backbone_version", *LINEAGE_COLUMNS)  # fmt: skip
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
    ]  # fmt: skip
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
    "record_id", "source", "url", "scientific_name", *RANK_NAMES, "common_name", "status",
    "taxon_id", "accepted_name", "backbone_version", "category", "width", "height", "md5",
    "pdq", "shard", "key",
)  # fmt: skip
# Columns a kept record carries from the final pass to the shard writers.
_KEPT_COLUMNS = ("record_id", "source", "url", "scientific_name", *LINEAGE_COLUMNS,
                 "common_name", "vernacular_name", "status", "taxon_id", "accepted_name",
                 "backbone_version", "category", "width", "height", "md5", "pdq", "jpeg",
                 "order_key")  # fmt: skip


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
        [int.from_bytes(hashlib.blake2b(v if isinstance(v, bytes) else v.encode(),
                                        digest_size=8).digest(), "little") % buckets
         for v in values], dtype=np.int64)  # fmt: skip


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
    return to_ledger_rows(table) if to_ledger else table


# --------------------------------------------------------------------------- ingest


def ingest_source(
    index: int, path: str, kind: str, label: str, columns: dict | None, work: str, *,
    most: int, least: int, workers: int,
) -> dict:  # fmt: skip
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
                write_parquet_atomic(parts / f"s{index:04d}-{n:06d}.parquet",
                                     _to_table(records[:part_rows]))  # fmt: skip
                records, n = records[part_rows:], n + 1
            if len(rejected) >= most:
                write_parquet_atomic(rejects / f"s{index:04d}-{r:06d}.parquet",
                                     _reject_table(rejected))  # fmt: skip
                rejected, r = [], r + 1
    except TaxoclipError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    finally:
        shutil.rmtree(root / "sources" / label / "spill", ignore_errors=True)
    if records or n == 0:  # every source writes at least one (maybe empty) part
        write_parquet_atomic(parts / f"s{index:04d}-{n:06d}.parquet",
                             _to_table(records) if records else RECORD_SCHEMA.empty_table())  # fmt: skip
        n += 1
    write_parquet_atomic(rejects / f"s{index:04d}-{r:06d}.parquet", _reject_table(rejected))
    return {**source.description(), "parts": n, "rows": source.records}


def _reject_table(rows: list[dict]) -> pa.Table:
    return pa.table({c: pa.array([r[c] for r in rows], type=pa.string()) for c in REJECT_COLUMNS})


# --------------------------------------------------------------------------- names


class NameStage:
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
        return pa.table({k: pa.array(v, type=pa.string()) if isinstance(v, list) else v
                         for k, v in out.items()})  # fmt: skip


class NameWriter(NameStage):
    """``NameStage`` that persists each batch it resolves (``write_names``): the actor
    pool is the last operator of its dataset, so no write task waits for a CPU it holds."""

    def __init__(self, backbone: str, out_dir: str) -> None:
        super().__init__(backbone)
        self.out_dir = out_dir

    def __call__(self, batch: pa.Table) -> pa.Table:
        return write_names(super().__call__(batch), self.out_dir)


# The names table as NameStage writes it: what ``records`` joins when ``names/`` is empty
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
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                   for p in Path(folder).glob("*.parquet"))  # fmt: skip
    return json.dumps([folder, files])


def attach_parts(
    batch: pa.Table, names_dir: str, out_dir: str, keep_higher_rank: bool,
    categories: list[str] | None,
) -> pa.Table:  # fmt: skip
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
        meta = zip(*(records.column(c).to_pylist()
                     for c in ("basis_of_record", "event_remarks", "publisher")), strict=True)  # fmt: skip
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


class ImagePartStage:
    """Records part → images part: every record of the part with its image results
    (bytes included); records rejected earlier pass through untouched. One part is the unit
    of resumption: a part file exists whole (atomic rename) or is redone."""

    def __init__(self, options: dict, out_dir: str, batch_size: int) -> None:
        self.stage = ImageStage(options)
        self.out = Path(out_dir)
        self.batch_size = batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.table(
            {"part": batch.column("part"), "rows": [self.process(p) for p in
                                                     batch.column("part").to_pylist()]}
        )  # fmt: skip

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
    return {"record_id": record_id, "stage": "", "reason": "", "width": 0, "height": 0,
            "mode": "", "md5": "", "pdq": b"", "jpeg": b"",
            "attempts": int(attempts), "cached": bool(cached)}  # fmt: skip


def _parse_bbox(text: str) -> tuple[int, int, int, int] | None:
    if not text:
        return None
    x, y, w, h = (int(v) for v in text.split(","))
    return x, y, w, h


# --------------------------------------------------------------------------- leak


def hash_eval_folder(index: int, folder: str, out_dir: str) -> dict:
    """PDQ codes of an evaluation folder (``--exclude-eval``), written to
    ``eval/e<index>.parquet`` for the leak stage's workers; returns what could not be read."""
    from taxoclip.curate.dedup import hash_folder

    codes, names, problems = hash_folder(Path(folder))
    table = pa.table({"pdq": pa.array([c.tobytes() for c in codes], pa.binary()),
                      "path": pa.array([str(Path(folder) / n) for n in names], pa.string())})  # fmt: skip
    write_parquet_atomic(Path(out_dir) / f"e{index:04d}.parquet", table)
    return {"images": len(names), "unreadable": [f"{folder}/{p}" for p in problems]}


_EVAL_CACHE: dict[str, list[tuple[np.ndarray, list[str]]]] = {}


def _eval_folders(eval_dir: str) -> list[tuple[np.ndarray, list[str]]]:
    """The evaluation codes per folder, in the order given, read once per worker process
    (the broadcast of the evaluation hashes)."""
    from taxoclip.curate.dedup import as_codes

    key = _dir_key(eval_dir)
    if key not in _EVAL_CACHE:
        _EVAL_CACHE.clear()
        folders = []
        for path in sorted(Path(eval_dir).glob("e*.parquet")):
            table = pq.read_table(path)
            codes = table.column("pdq").to_pylist()
            folders.append((as_codes(codes) if codes else np.empty((0, 32), np.uint8),
                            table.column("path").to_pylist()))  # fmt: skip
        _EVAL_CACHE[key] = folders
    return _EVAL_CACHE[key]


def leak_rows(batch: pa.Table, eval_dir: str, radius: int) -> pa.Table:
    """Image results → dedup rows of the records still in; near-duplicates of evaluation
    images (``eval_dir``, read by every worker) get stage ``leak``. The first folder with
    a hit names the image, the nearest in it (ties: first by name)."""
    from taxoclip.curate.dedup import as_codes, nearest_within

    folders = _eval_folders(eval_dir)
    batch = batch.filter(pc.equal(batch.column("stage"), ""))
    n = batch.num_rows
    stage, reason = [""] * n, [""] * n
    if n and folders:
        codes = as_codes(batch.column("pdq").to_pylist())
        for eval_codes, paths in folders:
            if not len(eval_codes):
                continue
            hits, _ = nearest_within(codes, eval_codes, radius)
            for i in np.flatnonzero(hits >= 0).tolist():
                if not stage[i]:
                    stage[i] = "leak"
                    reason[i] = f"near-duplicate of evaluation image {paths[hits[i]]}"
    pixels = pc.multiply(pc.cast(batch.column("width"), pa.int64()),
                         pc.cast(batch.column("height"), pa.int64()))  # fmt: skip
    return pa.table(
        [batch.column("record_id"), pixels, batch.column("md5"), batch.column("pdq"),
         pa.array(stage, type=pa.string()), pa.array(reason, type=pa.string())],
        schema=DEDUP_SCHEMA,
    )  # fmt: skip


# --------------------------------------------------------------------------- dedup


def with_md5_bucket(batch: pa.Table, buckets: int) -> pa.Table:
    """Dedup rows with a hash partition of their MD5 (the exact group-by's key)."""
    return batch.append_column(
        "bucket", pa.array(_hash_bucket(batch.column("md5").to_pylist(), buckets), pa.int64())
    )


def exact_group(group: pa.Table) -> pa.Table:
    """One MD5 partition: in each run of equal MD5 among the records still in, the one
    with the most pixels, then the smallest id, is kept; the others are exact duplicates of
    it. Returns the partition's rows with their decision (leaks pass through)."""
    group = group.drop_columns(["bucket"])
    order = pc.sort_indices(
        group,
        sort_keys=[
            ("md5", "ascending"),
            ("pixels", "descending"),
            ("record_id", "ascending"),
        ],  # fmt: skip
    )
    group = group.take(order)
    md5 = group.column("md5").to_pylist()
    ids = group.column("record_id").to_pylist()
    stage = group.column("stage").to_pylist()
    reason = group.column("reason").to_pylist()
    keeper, last = "", None
    for i, (record_id, digest) in enumerate(zip(ids, md5, strict=True)):
        if stage[i]:
            continue  # a leak: decided already, keeps no one out
        if digest != last:
            keeper, last = record_id, digest
        else:
            stage[i], reason[i] = "dedup", f"exact duplicate of {keeper}"
    group = group.drop_columns(["stage", "reason"])
    return group.append_column("stage", pa.array(stage, type=pa.string())).append_column(
        "reason", pa.array(reason, type=pa.string())
    )


def band_rows(batch: pa.Table, radius: int, buckets: int) -> pa.Table:
    """Survivors → one row per (record, band): the band key and a hash partition of it."""
    from taxoclip.curate.dedup import band_keys

    batch = batch.filter(pc.equal(batch.column("stage"), ""))
    if not batch.num_rows:
        keys: list[bytes] = []
        take = np.empty(0, dtype=np.int64)
    else:
        per_band = band_keys(batch.column("pdq").to_pylist(), radius)
        keys = [k for band in per_band for k in band]
        take = np.tile(np.arange(batch.num_rows), len(per_band))
    rows = batch.select(["record_id", "pixels", "pdq"]).take(pa.array(take, type=pa.int64()))
    return rows.append_column("band_key", pa.array(keys, type=pa.binary())).append_column(
        "bucket", pa.array(_hash_bucket(keys, buckets), type=pa.int64())
    )


def pairs_group(group: pa.Table, radius: int) -> pa.Table:
    """One band-key partition → verified near pairs (Hamming ≤ radius), each pair once: on
    the first band the two codes agree on (``EDGE_SCHEMA`` rows)."""
    from taxoclip.curate.dedup import as_codes, band_keys, hamming

    members: dict[bytes, list[int]] = {}
    for i, key in enumerate(group.column("band_key").to_pylist()):
        members.setdefault(key, []).append(i)
    ids = group.column("record_id").to_pylist()
    pixels = group.column("pixels").to_pylist()
    pdq = group.column("pdq").to_pylist()
    out: dict[str, list] = {name: [] for name in EDGE_SCHEMA.names}
    for key, rows in members.items():
        if len(rows) < 2:
            continue
        band = key[0]
        codes = as_codes([pdq[i] for i in rows])
        keys = band_keys(codes, radius)[:band] if band else []
        for x in range(len(rows)):
            distances = hamming(codes[x][None, :], codes[x + 1 :])
            for offset in np.flatnonzero(distances <= radius).tolist():
                y = x + 1 + offset
                if any(k[x] == k[y] for k in keys):
                    continue  # reported by an earlier band
                a, b = rows[x], rows[y]
                for name, value in (("a", ids[a]), ("a_pixels", pixels[a]), ("b", ids[b]),
                                    ("b_pixels", pixels[b]),
                                    ("distance", int(distances[offset]))):  # fmt: skip
                    out[name].append(value)
    return pa.table(out, schema=EDGE_SCHEMA)


def resolve_near(pair_files: list[str], out_file: str) -> int:
    """The greedy keeper rule over the candidate graph (only records that have a near pair
    are in it): writes the near-duplicate rejections, returns how many."""
    from taxoclip.curate.dedup import greedy_keepers

    edges = concat_parts(pair_files) if pair_files else EDGE_SCHEMA.empty_table()
    priority: dict[str, tuple[int, str]] = {}
    triples = []
    for a, pa_, b, pb, d in zip(*(edges.column(c).to_pylist() for c in EDGE_SCHEMA.names),
                                strict=True):  # fmt: skip
        priority[a], priority[b] = (-pa_, a), (-pb, b)
        triples.append((a, b, d))
    dropped = greedy_keepers(priority, triples)
    ids = sorted(dropped)
    table = pa.table(
        {
            "record_id": pa.array(ids, type=pa.string()),
            "stage": _strings(len(ids), "dedup"),
            "reason": pa.array(
                [f"near duplicate of {dropped[r][0]} (PDQ Hamming {dropped[r][1]})" for r in ids],
                type=pa.string(),
            ),
        }
    )
    write_parquet_atomic(Path(out_file), table)
    return len(ids)


def with_order(batch: pa.Table, seed: int, buckets: int, schema: pa.Schema) -> pa.Table:
    """Image results or leak/dedup decisions → rows of one schema (``schema``: the image
    results' own, plus ``order_key``, ``bucket`` and ``decided``), so both sides of the
    final join go through one group-by on the order bucket."""
    decided = "jpeg" not in batch.column_names
    if decided:
        batch = batch.filter(pc.not_equal(batch.column("stage"), ""))
    order = [order_key(seed, r) for r in batch.column("record_id").to_pylist()]
    extra = {
        "order_key": pa.array(order, type=pa.string()),
        "bucket": pa.array(bucket_of(order, buckets), type=pa.int64()),
        "decided": pa.array([decided] * batch.num_rows, type=pa.bool_()),
    }
    columns = []
    for field in schema:
        if field.name in extra:
            columns.append(extra[field.name])
        elif field.name in batch.column_names and (not decided or field.name in
                                                     DECISION_SCHEMA.names):  # fmt: skip
            columns.append(batch.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(batch.num_rows, type=field.type))
    return pa.table(columns, schema=schema)


def final_bucket(group: pa.Table, out_dir: str) -> pa.Table:
    """One order bucket: image results ⋈ the leak/dedup decisions of the same records (the
    rows with ``decided``). Writes the kept records sorted by order key
    (``kept-<b>.parquet``, bytes included) and the rejected ones (``rejected-<b>.parquet``);
    returns one row of counts: the bucket, kept and rejected, and ``FETCH_COUNTS``."""
    bucket = int(group.column("bucket")[0].as_py())
    is_decision = np.asarray(group.column("decided"))
    decisions = group.filter(pa.array(is_decision))
    decided = dict(zip(decisions.column("record_id").to_pylist(),
                       zip(decisions.column("stage").to_pylist(),
                           decisions.column("reason").to_pylist(), strict=True), strict=True))  # fmt: skip
    group = group.filter(pa.array(~is_decision))
    ids = group.column("record_id").to_pylist()
    stage = group.column("stage").to_pylist()
    reason = group.column("reason").to_pylist()
    for i, rid in enumerate(ids):
        if not stage[i] and rid in decided:
            stage[i], reason[i] = decided[rid]
    kept_mask = np.array([not s for s in stage], dtype=bool)
    kept = group.filter(pa.array(kept_mask)).select(list(_KEPT_COLUMNS))
    kept = kept.take(pc.sort_indices(kept, sort_keys=[("order_key", "ascending")]))
    gone = np.flatnonzero(~kept_mask)
    rejected = group.select(["record_id", "source", "url"]).take(pa.array(gone, pa.int64()))
    rejected = rejected.append_column(
        "stage", pa.array([stage[i] for i in gone], type=pa.string())
    ).append_column("reason", pa.array([reason[i] for i in gone], type=pa.string()))
    write_parquet_atomic(Path(out_dir) / f"kept-{bucket:06d}.parquet", kept)
    write_parquet_atomic(Path(out_dir) / f"rejected-{bucket:06d}.parquet", rejected)
    counts = {"bucket": bucket, "kept": kept.num_rows, "rejected": rejected.num_rows,
              **fetch_counts(group)}  # fmt: skip
    return pa.table({k: pa.array([v], pa.int64()) for k, v in counts.items()})


def write_shard_rows(batch: pa.Table, out_dir: str, work_dir: str) -> pa.Table:
    """Shard plans (``shard``, ``pieces``) → the shards written; see ``ShardWriter``."""
    writer = ShardWriter(out_dir, work_dir)
    return writer(batch)


class ShardWriter:
    """One shard: contiguous ranks of the order, read from the kept bucket files; writes
    ``shard-<n>.tar`` (deterministic bytes) and its manifest part; returns its size."""

    def __init__(self, out_dir: str, work_dir: str) -> None:
        self.out = Path(out_dir)
        self.work = Path(work_dir)

    def __call__(self, batch: pa.Table) -> pa.Table:
        sizes = [self.write(index, json.loads(pieces)) for index, pieces in
                 zip(batch.column("shard").to_pylist(), batch.column("pieces").to_pylist(),
                     strict=True)]  # fmt: skip
        return pa.table({"shard": batch.column("shard"), "samples": sizes})

    def write(self, index: int, pieces: list[list]) -> int:
        from taxoclip.data import ShardSample, write_shards

        rows = pa.concat_tables(
            [pq.read_table(path).slice(start, stop - start) for path, start, stop in pieces]
        )
        name = f"shard-{index:06d}.tar"
        records = rows.drop_columns(["jpeg"]).to_pylist()
        jpegs = rows.column("jpeg")

        def samples():
            for i, row in enumerate(records):
                yield ShardSample(
                    key=shard_key(row["record_id"]),
                    jpg=jpegs[i].as_py(),
                    lineage=Lineage.from_ranks([row[c] for c in LINEAGE_COLUMNS]),
                    common_name=row["common_name"] or row["vernacular_name"],
                    meta={
                        "record_id": row["record_id"],
                        "source": row["source"],
                        "status": row["status"],
                        "taxon_id": row["taxon_id"],
                        "category": row["category"],
                        "backbone_version": row["backbone_version"],
                    },
                )

        scratch = self.work / "shard-tmp" / name
        shutil.rmtree(scratch, ignore_errors=True)
        written = write_shards(samples(), scratch, samples_per_shard=len(records) + 1)
        Path(written.paths[0]).replace(self.out / name)
        shutil.rmtree(scratch, ignore_errors=True)
        manifest = {
            "record_id": [r["record_id"] for r in records],
            "source": [r["source"] for r in records],
            "url": [r["url"] for r in records],
            "scientific_name": [r["scientific_name"] for r in records],
            **{rank: [r[f"lineage_{rank}"] for r in records] for rank in RANK_NAMES},
            "common_name": [r["common_name"] for r in records],
            **{c: [r[c] for r in records] for c in ("status", "taxon_id", "accepted_name",
                                                      "backbone_version", "category")},
            "width": pa.array([r["width"] for r in records], type=pa.int32()),
            "height": pa.array([r["height"] for r in records], type=pa.int32()),
            "md5": [r["md5"] for r in records],
            "pdq": [r["pdq"].hex() for r in records],
            "shard": [name] * len(records),
            "key": [shard_key(r["record_id"]) for r in records],
        }  # fmt: skip
        table = pa.table({k: v if isinstance(v, pa.Array) else pa.array(v, type=pa.string())
                          for k, v in manifest.items()})  # fmt: skip
        write_parquet_atomic(self.work / "manifest" / f"m-{index:06d}.parquet", table)
        return len(records)


# --------------------------------------------------------------------------- ledger


LEDGER_SCHEMA = pa.schema(
    [(c, pa.int32() if c in ("width", "height") else pa.string()) for c in MANIFEST_COLUMNS]
    + [("stage", pa.string()), ("reason", pa.string())]
)


def to_ledger_rows(batch: pa.Table) -> pa.Table:
    """Manifest or rejection rows in one schema, so one sort orders (and checks) both."""
    n = batch.num_rows
    columns = []
    for field in LEDGER_SCHEMA:
        if field.name in batch.column_names:
            columns.append(batch.column(field.name).cast(field.type))
        elif field.name in ("stage", "reason"):
            columns.append(_strings(n))
        else:
            columns.append(pa.nulls(n, type=field.type))
    return pa.table(columns, schema=LEDGER_SCHEMA)


def reason_kind(reason: str) -> str:
    """The reason's leading words (before details such as sizes or ids), for the histogram."""
    head = reason.split(":", 1)[0]
    for marker in (" of ", " (", " after "):
        head = head.split(marker, 1)[0]
    return head.strip()


def write_ledgers(files: list[str], out_dir: str) -> dict:
    """Sort every ledger row by record id (Ray Data, on the cluster) and stream the sorted
    rows into ``manifest.parquet`` (kept) and ``rejected.parquet``, counting as they pass:
    kept, rejected by stage and reason, kept by status and category, and ids seen twice."""
    import ray.data

    from taxoclip.files import replacing_files

    out = Path(out_dir)
    counts: dict[str, Counter] = {k: Counter() for k in ("stage", "reason", "status", "category")}
    kept = rejected = repeated = missing_reason = 0
    last = None
    manifest_schema = pa.schema([LEDGER_SCHEMA.field(c) for c in MANIFEST_COLUMNS])
    reject_schema = pa.schema([LEDGER_SCHEMA.field(c) for c in REJECT_COLUMNS])
    with replacing_files() as temp_for:
        m_tmp, r_tmp = temp_for(out / "manifest.parquet"), temp_for(out / "rejected.parquet")
        with pq.ParquetWriter(m_tmp, manifest_schema) as m_out, \
                pq.ParquetWriter(r_tmp, reject_schema) as r_out:  # fmt: skip
            ds = ray.data.from_items([{"path": f} for f in files]).map_batches(
                read_part, fn_kwargs={"to_ledger": True}, batch_size=1, batch_format="pyarrow"
            )
            for batch in ds.sort("record_id").iter_batches(batch_size=65_536,
                                                           batch_format="pyarrow"):  # fmt: skip
                ids = batch.column("record_id").to_pylist()
                previous = [last, *ids[:-1]]
                repeated += sum(a == b for a, b in zip(ids, previous, strict=True))
                last = ids[-1] if ids else last
                is_kept = pc.equal(batch.column("stage"), "")
                good, bad = batch.filter(is_kept), batch.filter(pc.invert(is_kept))
                kept += good.num_rows
                rejected += bad.num_rows
                counts["status"].update(good.column("status").to_pylist())
                counts["category"].update(good.column("category").to_pylist())
                stages = bad.column("stage").to_pylist()
                reasons = bad.column("reason").to_pylist()
                counts["stage"].update(stages)
                counts["reason"].update(f"{s}: {reason_kind(r)}" for s, r in zip(stages, reasons,
                                                                                  strict=True))  # fmt: skip
                missing_reason += sum(not r for r in reasons)
                if good.num_rows:
                    m_out.write_table(good.select(list(MANIFEST_COLUMNS)))
                if bad.num_rows:
                    r_out.write_table(bad.select(list(REJECT_COLUMNS)))
    return {"kept": kept, "rejected": rejected, "repeated": repeated,
            "missing_reason": missing_reason, **{k: dict(v) for k, v in counts.items()}}  # fmt: skip


# What stats.json's "fetch" says: records that reached fetch, read from the cache, retried.
FETCH_COUNTS = ("records", "from_cache", "retried")


def fetch_counts(group: pa.Table) -> dict[str, int]:
    """``FETCH_COUNTS`` of image results (records rejected before fetch do not count)."""
    reached = pc.invert(pc.is_in(group.column("stage"), pa.array(["names", "category"])))
    rows = group.filter(reached)
    return {"records": rows.num_rows,
            "from_cache": int(pc.sum(rows.column("cached")).as_py() or 0),
            "retried": int(pc.sum(pc.greater(rows.column("attempts"), 1)).as_py() or 0)}  # fmt: skip
