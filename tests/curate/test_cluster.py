"""taxoclip curate on a real two-node Ray cluster on this machine (``ray.cluster_utils``:
a head and a worker node, each its own raylet and object store), against a run on the
local default; and a Ray worker process killed (SIGKILL) in the middle of the image stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from taxoclip.curate import CurateConfig, curate
from taxoclip.curate.pipeline import ray_session
from taxoclip.synth import SynthConfig, generate
from tests.helpers import child_processes

IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cluster") / "synth"
    generate(
        root,
        SynthConfig(species=40, images_per_species=10, seed=3, raw_source=True),
        progress=False,
    )
    return root


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


def digests(out: Path) -> dict[str, str]:
    files = [*sorted(out.glob("*.tar")), out / "sizes.json"]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def ledgers(out: Path) -> dict[str, object]:
    return {name: pq.read_table(out / name) for name in ("manifest.parquet", "rejected.parquet")}


@pytest.fixture(scope="module")
def local(raw: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    with ray_session(None, 2):  # the local default, shut down before the cluster starts
        curate(config_for(raw, out), progress=False)
    return out


@pytest.fixture(scope="module")
def cluster(local):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_two_node_cluster_writes_the_shards_of_the_local_default(raw, local, cluster, tmp_path):
    import ray

    out = tmp_path / "out"
    result = curate(config_for(raw, out, ray_address=cluster.address), progress=False)
    with ray_session(cluster.address, 1):
        alive = [n for n in ray.nodes() if n["Alive"]]
        assert len(alive) == 2 and sum(n["Resources"].get("CPU", 0) for n in alive) == 2
    assert digests(out) == digests(local)
    for name, table in ledgers(out).items():
        assert table.equals(ledgers(local)[name]), name
    assert result.stats["records_in"] == result.stats["kept"] + result.stats["rejected"]


def test_a_ray_worker_killed_mid_run_leaves_an_exact_ledger(raw, local, cluster, tmp_path):
    out = tmp_path / "out"
    config = config_for(raw, out, ray_address=cluster.address, batch_size=8)
    killed: list[int] = []

    def kill_an_image_worker() -> None:
        deadline = time.monotonic() + 300  # a hang guard on a loaded machine
        parts = out / ".work" / "images"
        while time.monotonic() < deadline and not killed:
            workers = child_processes("CheckImagePart")
            if workers and len(list(parts.glob("*.parquet"))) >= 1:
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_an_image_worker, daemon=True)
    watcher.start()
    try:
        result = curate(config, progress=False)  # Ray restarts the actor and retries
        outcome = "finished"
    except Exception:  # noqa: BLE001 - the rerun below must then resume and finish
        result = curate(config, progress=False)
        outcome = "resumed"
    watcher.join(timeout=5)
    assert killed, "no image worker was found to kill"
    print(f"image worker {killed[0]} killed; the run {outcome}")  # shown with pytest -s
    stats = json.loads((out / "stats.json").read_text())
    assert stats["records_in"] == stats["kept"] + stats["rejected"], outcome
    assert digests(out) == digests(local), outcome
    for name, table in ledgers(out).items():
        assert table.equals(ledgers(local)[name]), (name, outcome)
    assert result.stats["kept"] == ledgers(local)["manifest.parquet"].num_rows
