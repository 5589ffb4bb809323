"""predict and embed with --ray-address on a real two-node Ray cluster on this machine
(``ray.cluster_utils``: a head and a worker node, each its own raylet), one actor killed
with SIGKILL mid-run: every image once, the rows of a local run, in input order."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from taxoclip.predict import EmbedConfig, PredictConfig
from taxoclip.predict.run import run_embed, run_predict
from taxoclip.predict.stream import sidecar_of
from tests.helpers import child_processes
from tests.predict.test_long_runs import make_images

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("ray") / "imgs", 120, bad=(13,))


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def local_run(*args: str) -> subprocess.CompletedProcess:
    """The same command without Ray, with the actors' one compute thread."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "taxoclip", *args, "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_two_node_run_with_an_actor_killed_writes_the_local_rows(
    model_224, index_224, images, cluster, tmp_path
):
    common = [
        str(images),
        "--model",
        str(model_224),
        "--index",
        str(index_224),
        "--runtime",
        "torch",
        "--rank",
        "genus",
        "--k",
        "3",
        "--batch-size",
        "8",
    ]
    local = tmp_path / "local.csv"
    done = local_run("predict", *common, "--output", str(local))
    assert done.returncode == 3, done.stderr

    out = tmp_path / "ray.csv"
    body = sidecar_of(out) / "rows.jsonl"
    killed: list[int] = []

    def kill_an_actor() -> None:
        deadline = time.monotonic() + 300  # a hang guard on a loaded machine
        while time.monotonic() < deadline and not killed:
            actors = child_processes("BatchActor")
            if len(actors) == 2 and body.is_file() and body.stat().st_size > 0:
                os.kill(actors[0], signal.SIGKILL)
                killed.append(actors[0])
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_an_actor, daemon=True)
    watcher.start()
    config = PredictConfig(
        images=[str(images)],
        model=str(model_224),
        index=str(index_224),
        runtime="torch",
        rank="genus",
        k=3,
        batch_size=8,
        output=str(out),
        ray_address=cluster.address,
        progress=False,
    )
    result = run_predict(config)
    watcher.join(timeout=5)
    assert killed, "no actor was found to kill"
    assert result.n_images == 120 and len(result.failed) == 1
    assert out.read_bytes() == local.read_bytes()
    names = [row["file_name"] for row in csv.DictReader(out.open())]
    assert len(names) == 119 * 3 + 1 and len(set(names)) == 120  # each image once
    assert names == sorted(names)  # the order rule: input order (here sorted paths)


def test_embed_on_two_nodes_writes_the_local_embeddings(model_224, images, cluster, tmp_path):
    local = tmp_path / "local.npy"
    done = local_run(
        "embed",
        str(images),
        "--model",
        str(model_224),
        "--runtime",
        "torch",
        "--batch-size",
        "16",
        "--output",
        str(local),
    )
    assert done.returncode == 3, done.stderr
    out = tmp_path / "ray.npy"
    result = run_embed(
        EmbedConfig(
            images=[str(images)],
            model=str(model_224),
            runtime="torch",
            batch_size=16,
            output=str(out),
            ray_address=cluster.address,
            ray_actors=2,
            progress=False,
        )
    )
    assert (result.n_images, result.n_ok) == (120, 119)
    assert out.read_bytes() == local.read_bytes()
    assert (
        out.with_suffix(".files.txt").read_bytes() == local.with_suffix(".files.txt").read_bytes()
    )
