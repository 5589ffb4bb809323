"""taxoclip curate end to end on SynthToL's raw source, graded against its ground truth.

One Ray session and one curated run are shared by the module; a rerun, a killed-and-
resumed run (real processes, SIGKILL) and an HTTP source are compared with it.
"""

from __future__ import annotations

import csv
import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from taxoclip.curate import CurateConfig, curate
from taxoclip.curate.pipeline import CheckImages, ray_session
from taxoclip.data import read_shards
from taxoclip.synth import SynthConfig, generate
from tests.helpers import saved_model

IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("curate") / "synth"
    config = SynthConfig(species=40, images_per_species=10, seed=3, raw_source=True)
    generate(root, config, progress=False)
    return root


@pytest.fixture(scope="module")
def truth(raw: Path) -> dict[str, dict]:
    with (raw / "raw" / "truth.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    # the record id curate gives a media row: <source label>:<gbifID>:<n-th image>
    return {f"{raw.name}:{r['gbifID']}:{r['media_index']}": r for r in rows}


@pytest.fixture(scope="module")
def ray_local():
    with ray_session(None, 2):
        yield


def config_for(raw: Path, out: Path, **overrides) -> CurateConfig:
    settings = dict(
        sources=[str(raw)],
        backbone=str(raw / "raw" / "backbone"),
        out=str(out),
        exclude_eval=[str(raw / "test")],
        image_size=IMAGE_SIZE,
        samples_per_shard=100,
        workers=2,
    )
    settings.update(overrides)
    return CurateConfig(**settings)


@pytest.fixture(scope="module")
def curated(raw: Path, ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("curated")
    result = curate(config_for(raw, out), progress=False)
    manifest = {r["record_id"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    rejected = {r["record_id"]: r for r in pq.read_table(out / "rejected.parquet").to_pylist()}
    return result, manifest, rejected


def run_cli(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``taxoclip ARGS`` in its own process group: a run still going after ``timeout``
    seconds is killed with its Ray processes and the test fails, rather than hanging."""
    command = [sys.executable, "-m", "taxoclip.cli", *args]
    process = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        pytest.fail(f"taxoclip {args[0]} still running after {timeout} s: {stderr[-2000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def faulty(truth: dict[str, dict], fault: str) -> list[str]:
    return [rid for rid, row in truth.items() if fault in row["faults"].split(";")]


def shard_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}


def test_every_record_leaves_once_as_kept_or_rejected_with_a_reason(curated, truth) -> None:
    result, manifest, rejected = curated
    assert set(manifest) | set(rejected) == set(truth)
    assert not set(manifest) & set(rejected)
    assert all(r["stage"] and r["reason"] for r in rejected.values())
    stats = result.stats
    assert stats["records_in"] == len(truth) == stats["kept"] + stats["rejected"]
    assert sum(stats["rejected_by_stage"].values()) == len(rejected)


def test_names_are_recovered(curated, truth, raw) -> None:
    _, manifest, _ = curated
    for fault in ("synonym", "misspelling"):
        ids = faulty(truth, fault)
        assert ids, fault
        right = sum(
            rid in manifest
            and f"{manifest[rid]['genus']} {manifest[rid]['species']}" == truth[rid]["true_name"]
            for rid in ids
        )
        assert right / len(ids) >= 0.99, (fault, right, len(ids))
    species = {r["species_id"]: r for r in csv.DictReader((raw / "species.csv").open())}
    for rid, row in manifest.items():
        expected = truth[rid]
        if expected["expected"] == "reject":
            continue  # label cards: kept without --model-filter, checked below
        assert row["status"] == expected["expected_status"], (rid, row["scientific_name"])
        assert row["category"] == expected["category"]
        if row["status"] == "higher_rank":
            assert row["species"] == "" and row["genus"] == expected["true_name"]
            continue
        true = species[expected["species_id"]]
        got = [row[r] for r in ("kingdom", "phylum", "class", "order", "family", "genus")]
        assert got == [true[r] for r in ("kingdom", "phylum", "class", "order", "family", "genus")]
        assert row["common_name"] == true["common_name"]


def test_junk_is_removed_and_no_clean_record_lost(curated, truth) -> None:
    _, manifest, rejected = curated
    for fault in ("exact_duplicate", "corrupt", "too_small", "bomb", "unresolvable"):
        ids = faulty(truth, fault)
        assert ids and all(rid in rejected for rid in ids), fault
    for fault, stage in (("near_duplicate", "dedup"), ("leak", "leak")):
        ids = faulty(truth, fault)
        caught = sum(rid in rejected and rejected[rid]["stage"] == stage for rid in ids)
        assert caught / len(ids) >= 0.95, (fault, caught, len(ids))
    assert all(rejected[rid]["stage"] in ("fetch", "image") for rid in faulty(truth, "corrupt"))
    clean = [rid for rid, r in truth.items() if r["expected"] == "keep"]
    lost = [(rid, rejected[rid]["reason"]) for rid in clean if rid not in manifest]
    assert not lost
    # unusual modes (CMYK, palette, 16-bit, alpha) are kept after conversion
    for fault in ("mode_cmyk", "mode_palette", "mode_16bit", "mode_alpha"):
        assert faulty(truth, fault) and all(rid in manifest for rid in faulty(truth, fault))
    # without --model-filter the non-organism label cards are the only junk left
    kept_junk = {truth[rid]["faults"] for rid in manifest if truth[rid]["expected"] == "reject"}
    assert kept_junk <= {"label"}


def test_shards_hold_the_kept_records_with_their_lineage(curated) -> None:
    result, manifest, _ = curated
    samples = list(read_shards(sorted(str(p) for p in result.out.glob("shard-*.tar"))))
    assert len(samples) == len(manifest)
    by_key = {row["key"]: row for row in manifest.values()}
    for sample in samples[:50]:
        row = by_key[sample["__key__"]]
        meta = sample["json"]
        assert meta["record_id"] == row["record_id"]
        assert sample["jpg"].size == (IMAGE_SIZE, IMAGE_SIZE)  # decoded by the reader
        if row["species"]:
            assert sample["sci.txt"] == f"a photo of {row['genus']} {row['species']}."
    assert not (result.out / ".work").exists()  # removed after success by default


def test_rerun_gives_identical_shards_and_ledgers(raw, curated, ray_local, tmp_path) -> None:
    result, manifest, rejected = curated
    again = curate(config_for(raw, tmp_path / "again", keep_work=True), progress=False)
    assert shard_digests(again.out) == shard_digests(result.out)
    assert (again.out / "sizes.json").read_text() == (result.out / "sizes.json").read_text()
    for name in ("manifest.parquet", "rejected.parquet"):
        assert pq.read_table(again.out / name).equals(pq.read_table(result.out / name))
    assert_kept_as_the_faiss_path_keeps(again.out / ".work" / "images", raw, manifest, rejected)


def test_one_worker_finishes_with_the_shards_of_two(raw, curated, tmp_path) -> None:
    """``--workers 1`` is a one-CPU local Ray: the names stage's actor pool once took the
    only CPU while the read and group-by tasks before it waited for one, forever."""
    result, _, _ = curated
    out = tmp_path / "one"
    done = run_cli(
        [
            "curate",
            str(raw),
            "--backbone",
            str(raw / "raw" / "backbone"),
            "--out",
            str(out),
            "--exclude-eval",
            str(raw / "test"),
            "--image-size",
            str(IMAGE_SIZE),
            "--samples-per-shard",
            "100",
            "--workers",
            "1",
            "-q",
        ],
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "will hang" not in done.stderr  # Ray Data's false alarm right after ingest
    assert shard_digests(out) == shard_digests(result.out) != {}
    assert (out / "sizes.json").read_text() == (result.out / "sizes.json").read_text()
    for name in ("manifest.parquet", "rejected.parquet"):
        assert pq.read_table(out / name).equals(pq.read_table(result.out / name))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["config"]["workers"] == 1 and stats["kept"] == result.stats["kept"]


def assert_kept_as_the_faiss_path_keeps(images: Path, raw: Path, manifest, rejected) -> None:
    """The records the image stage passed, deduplicated in memory as before the group-by
    pipeline (faiss multi-index hashing, leaks first, then exact, then near): the same
    kept set and the same reasons as the pipeline's group-bys."""
    import numpy as np

    from taxoclip.curate import dedup

    rows = pq.read_table(
        images, columns=["record_id", "stage", "width", "height", "md5", "pdq"]
    ).to_pylist()
    rows = sorted((r for r in rows if not r["stage"]), key=lambda r: r["record_id"])
    ids = [r["record_id"] for r in rows]
    codes = dedup.as_codes([r["pdq"] for r in rows])
    expected: dict[str, str] = {}
    eval_codes, names, _ = dedup.hash_folder(raw / "test")
    for index, eval_index in dedup.leaks(codes, eval_codes, radius=10).items():
        expected[ids[index]] = (
            f"near-duplicate of evaluation image {raw / 'test' / names[eval_index]}"
        )
    left = [i for i in range(len(rows)) if ids[i] not in expected]
    priority = [(-(rows[i]["width"] * rows[i]["height"]), ids[i]) for i in left]
    exact = dedup.exact_duplicates([rows[i]["md5"] for i in left], priority)
    for index, keeper in exact.items():
        expected[ids[left[index]]] = f"exact duplicate of {ids[left[keeper]]}"
    left2 = [i for j, i in enumerate(left) if j not in exact]
    near = dedup.near_duplicates(
        codes[left2], [p for j, p in enumerate(priority) if j not in exact]
    )
    for index, keeper in near.items():
        a, b = left2[index], left2[keeper]
        distance = int(np.unpackbits(codes[a] ^ codes[b]).sum())
        expected[ids[a]] = f"near duplicate of {ids[b]} (PDQ Hamming {distance})"
    assert exact and near and len(expected) > len(exact) + len(near)  # all three happen
    assert set(manifest) == set(ids) - set(expected)
    got = {rid: r["reason"] for rid, r in rejected.items() if r["stage"] in ("leak", "dedup")}
    assert got == expected


def test_killed_run_resumes_without_duplicates_or_losses(raw, curated, tmp_path) -> None:
    result, _, _ = curated
    out = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "taxoclip.cli",
        "curate",
        str(raw),
        "--backbone",
        str(raw / "raw" / "backbone"),
        "--out",
        str(out),
        "--exclude-eval",
        str(raw / "test"),
        "--image-size",
        str(IMAGE_SIZE),
        "--samples-per-shard",
        "100",
        "--workers",
        "2",
        "--batch-size",
        "8",
        "-q",
    ]
    first = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    parts = out / ".work" / "images"
    deadline = time.monotonic() + 300  # a hang guard: Ray starts slowly on a loaded machine
    while time.monotonic() < deadline and len(list(parts.glob("*.parquet"))) < 3:
        assert first.poll() is None, "the run finished before it could be killed"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and its Ray processes, mid-stage
    first.wait()
    done_before = len(list(parts.glob("*.parquet")))
    assert done_before >= 3 and not (out / "manifest.parquet").exists()

    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming" in second.stderr
    assert shard_digests(out) == shard_digests(result.out)
    for name in ("manifest.parquet", "rejected.parquet"):
        assert pq.read_table(out / name).equals(pq.read_table(result.out / name))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def test_http_source_with_failing_urls(raw, truth, ray_local, tmp_path) -> None:
    media = raw / "raw" / "dwca"

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(media), **kwargs)

        def do_GET(self):  # noqa: N802 - http.server API
            if self.path.startswith("/error"):
                self.send_error(500)
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        clean = [(rid, r) for rid, r in truth.items() if r["faults"] == ""][:12]
        rows = [
            {
                "record_id": rid.replace(":", "_"),
                "url": f"{base}/{r['file']}",
                "scientific_name": r["true_name"],
            }
            for rid, r in clean
        ] + [
            {
                "record_id": "missing",
                "url": f"{base}/media/nope.jpg",
                "scientific_name": clean[0][1]["true_name"],
            },
            {
                "record_id": "broken",
                "url": f"{base}/error/x.jpg",
                "scientific_name": clean[0][1]["true_name"],
            },
        ]
        manifest = tmp_path / "web.csv"
        with manifest.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        config = config_for(
            raw, tmp_path / "out", sources=[str(manifest)], exclude_eval=[], retries=2, timeout=5.0
        )
        result = curate(config, progress=False)
    finally:
        server.shutdown()
    rejected = {
        r["record_id"]: r for r in pq.read_table(result.out / "rejected.parquet").to_pylist()
    }
    assert rejected["web:missing"]["stage"] == "fetch"
    assert rejected["web:missing"]["reason"].startswith("http 404")
    assert rejected["web:broken"]["reason"] == "http 500 Internal Server Error after 2 attempts"
    assert result.stats["kept"] == 12


def test_model_filter_stage_drops_what_the_filter_rejects(raw, truth, tmp_path) -> None:
    model_dir = saved_model(tmp_path / "model")
    clean = [r["file"] for r in truth.values() if r["faults"] == ""][:4]
    files = [raw / "raw" / "dwca" / f for f in clean]
    import pyarrow as pa

    batch = pa.table(
        {"record_id": [f"r{i}" for i in range(4)], "url": [str(f) for f in files], "bbox": [""] * 4}
    )
    options = dict(
        cache_dir=None,
        per_host=2,
        retries=1,
        timeout=5.0,
        min_size=1,
        max_pixels=10**8,
        image_size=IMAGE_SIZE,
        jpeg_quality=90,
        model_filter=str(model_dir),
        filter_threshold=0.0,
    )
    dropped = CheckImages(options)(batch).to_pylist()
    assert {r["stage"] for r in dropped} == {"model_filter"}
    assert all(r["reason"].startswith("model_filter: not an organism photo") for r in dropped)
    kept = CheckImages({**options, "filter_threshold": 1.0})(batch).to_pylist()
    assert all(r["stage"] == "" and r["jpeg"] for r in kept)
