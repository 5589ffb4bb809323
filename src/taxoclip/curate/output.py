"""The work Ray runs for curation's last stages: the final join of image results with the
leak/dedup decisions (order buckets), the shard writer and the two ledgers.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from taxoclip.curate.records import REJECT_COLUMNS
from taxoclip.curate.stages import (
    _KEPT_COLUMNS,
    DECISION_SCHEMA,
    LINEAGE_COLUMNS,
    MANIFEST_COLUMNS,
    _strings,
    bucket_of,
    order_key,
    read_part,
    shard_key,
)
from taxoclip.files import write_parquet_atomic
from taxoclip.taxonomy import RANK_NAMES, Lineage


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
        elif field.name in batch.column_names and (
            not decided or field.name in DECISION_SCHEMA.names
        ):
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
    decided = dict(
        zip(
            decisions.column("record_id").to_pylist(),
            zip(
                decisions.column("stage").to_pylist(),
                decisions.column("reason").to_pylist(),
                strict=True,
            ),
            strict=True,
        )
    )
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
    counts = {
        "bucket": bucket,
        "kept": kept.num_rows,
        "rejected": rejected.num_rows,
        **fetch_counts(group),
    }
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
        sizes = [
            self.write(index, json.loads(pieces))
            for index, pieces in zip(
                batch.column("shard").to_pylist(), batch.column("pieces").to_pylist(), strict=True
            )
        ]
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
            **{
                c: [r[c] for r in records]
                for c in ("status", "taxon_id", "accepted_name", "backbone_version", "category")
            },
            "width": pa.array([r["width"] for r in records], type=pa.int32()),
            "height": pa.array([r["height"] for r in records], type=pa.int32()),
            "md5": [r["md5"] for r in records],
            "pdq": [r["pdq"].hex() for r in records],
            "shard": [name] * len(records),
            "key": [shard_key(r["record_id"]) for r in records],
        }
        table = pa.table(
            {
                k: v if isinstance(v, pa.Array) else pa.array(v, type=pa.string())
                for k, v in manifest.items()
            }
        )
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
        with (
            pq.ParquetWriter(m_tmp, manifest_schema) as m_out,
            pq.ParquetWriter(r_tmp, reject_schema) as r_out,
        ):
            ds = ray.data.from_items([{"path": f} for f in files]).map_batches(
                read_part, fn_kwargs={"to_ledger": True}, batch_size=1, batch_format="pyarrow"
            )
            for batch in ds.sort("record_id").iter_batches(
                batch_size=65_536, batch_format="pyarrow"
            ):
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
                counts["reason"].update(
                    f"{s}: {reason_kind(r)}" for s, r in zip(stages, reasons, strict=True)
                )
                missing_reason += sum(not r for r in reasons)
                if good.num_rows:
                    m_out.write_table(good.select(list(MANIFEST_COLUMNS)))
                if bad.num_rows:
                    r_out.write_table(bad.select(list(REJECT_COLUMNS)))
    return {
        "kept": kept,
        "rejected": rejected,
        "repeated": repeated,
        "missing_reason": missing_reason,
        **{k: dict(v) for k, v in counts.items()},
    }


# What stats.json's "fetch" says: records that reached fetch, read from the cache, retried.
FETCH_COUNTS = ("records", "from_cache", "retried")


def fetch_counts(group: pa.Table) -> dict[str, int]:
    """``FETCH_COUNTS`` of image results (records rejected before fetch do not count)."""
    reached = pc.invert(pc.is_in(group.column("stage"), pa.array(["names", "category"])))
    rows = group.filter(reached)
    return {
        "records": rows.num_rows,
        "from_cache": int(pc.sum(rows.column("cached")).as_py() or 0),
        "retried": int(pc.sum(pc.greater(rows.column("attempts"), 1)).as_py() or 0),
    }
