"""The work Ray runs for curation's leak and dedup stages (``eval``, ``exact``, ``pairs``,
``near``): evaluation hashes, leaks, exact duplicates by MD5, near-duplicate candidate
pairs by PDQ bands and the greedy keeper rule. The algorithms themselves (PDQ, bands,
Hamming, keepers) are :mod:`taxoclip.curate.dedup`; ``exact_group`` and ``pairs_group``
are pure (Ray Data writes what they return).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from taxoclip.curate.stages import (
    DEDUP_SCHEMA,
    EDGE_SCHEMA,
    _dir_key,
    _hash_bucket,
    _strings,
    concat_parts,
)
from taxoclip.files import write_parquet_atomic

# --------------------------------------------------------------------------- leak


def hash_eval_folder(index: int, folder: str, out_dir: str) -> dict:
    """PDQ codes of an evaluation folder (``--exclude-eval``), written to
    ``eval/e<index>.parquet`` for the leak stage's workers; returns what could not be read."""
    from taxoclip.curate.dedup import hash_folder

    codes, names, problems = hash_folder(Path(folder))
    table = pa.table(
        {
            "pdq": pa.array([c.tobytes() for c in codes], pa.binary()),
            "path": pa.array([str(Path(folder) / n) for n in names], pa.string()),
        }
    )
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
            folders.append(
                (
                    as_codes(codes) if codes else np.empty((0, 32), np.uint8),
                    table.column("path").to_pylist(),
                )
            )
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
    pixels = pc.multiply(
        pc.cast(batch.column("width"), pa.int64()), pc.cast(batch.column("height"), pa.int64())
    )
    return pa.table(
        [
            batch.column("record_id"),
            pixels,
            batch.column("md5"),
            batch.column("pdq"),
            pa.array(stage, type=pa.string()),
            pa.array(reason, type=pa.string()),
        ],
        schema=DEDUP_SCHEMA,
    )


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
        ],
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
                for name, value in (
                    ("a", ids[a]),
                    ("a_pixels", pixels[a]),
                    ("b", ids[b]),
                    ("b_pixels", pixels[b]),
                    ("distance", int(distances[offset])),
                ):
                    out[name].append(value)
    return pa.table(out, schema=EDGE_SCHEMA)


def resolve_near(pair_files: list[str], out_file: str) -> int:
    """The greedy keeper rule over the candidate graph (only records that have a near pair
    are in it): writes the near-duplicate rejections, returns how many."""
    from taxoclip.curate.dedup import greedy_keepers

    edges = concat_parts(pair_files) if pair_files else EDGE_SCHEMA.empty_table()
    priority: dict[str, tuple[int, str]] = {}
    triples = []
    for a, pa_, b, pb, d in zip(
        *(edges.column(c).to_pylist() for c in EDGE_SCHEMA.names), strict=True
    ):
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
