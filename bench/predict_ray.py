"""Images/s of ``taxoclip predict --ray-address`` as Ray workers grow (issue #20, part 7).

A Ray cluster of W one-CPU nodes on this machine (``ray.cluster_utils``, W = 1, 2, …),
a tiny random model (taxoclip-vit-t32), generated 16-px images; ``predict --cls`` with
one actor per node (``--ray-actors W``). Reported per W: the images/s of the whole job,
timed from the first batch back at the driver to the last (the actors' start-up — Ray,
torch, the model — is reported apart), and images/s per worker, with the load average.
On this 2-core machine, shared with other jobs, W stops at 2; docs/scale.md puts the rest
on paper.

    python bench/predict_ray.py [--images 2000] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("RAY_worker_niceness", "0")
    import numpy as np
    import ray
    from PIL import Image
    from ray.cluster_utils import Cluster

    from taxoclip.models import create_model, save_model
    from taxoclip.predict import PredictConfig, distributed

    with tempfile.TemporaryDirectory(prefix="predict-ray-") as tmp:
        folder = Path(tmp)
        loaded = create_model("taxoclip-vit-t32", seed=0)
        model = save_model(loaded.model, folder / "model", loaded.model_cfg, loaded.preprocess_cfg)
        rng = np.random.default_rng(0)
        (folder / "images").mkdir()
        paths = []
        for i in range(args.images):
            path = folder / "images" / f"im{i:06d}.png"
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
            paths.append(str(path))
        print(f"{args.images} images, batch {args.batch_size}; load average {os.getloadavg()}")
        print("| workers | start-up s | images/s | images/s per worker | load average (1 min) |")
        print("|---:|---:|---:|---:|---:|")
        for workers in [int(w) for w in args.workers.split(",")]:
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
            for _ in range(workers - 1):
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            config = PredictConfig(
                images=paths,
                model=str(model),
                runtime="torch",
                cls="fish,bird,lizard",
                batch_size=args.batch_size,
                ray_address=cluster.address,
                ray_actors=workers,
                progress=False,
            )
            started = time.perf_counter()
            first = None
            done = 0
            for position, groups in distributed.ray_predict_batches(config, paths, 0):
                if first is None:
                    first, first_n = time.perf_counter(), len(groups)
                done = position + len(groups)
            ended = time.perf_counter()
            assert done == len(paths)
            rate = (len(paths) - first_n) / (ended - first)
            print(
                f"| {workers} | {first - started:.1f} | {rate:.0f} | {rate / workers:.0f} | "
                f"{os.getloadavg()[0]:.2f} |",
                flush=True,
            )
            ray.shutdown()
            cluster.shutdown()


if __name__ == "__main__":
    main()
