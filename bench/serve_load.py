"""Load test of ``taxoclip serve``: latency, throughput, errors and memory, on 127.0.0.1.

What it does, bounded and local only:

1. builds a model folder (a fresh open_clip model, ``--model`` config name; or an existing
   model folder / run dir), an index of ``--taxa`` taxa (random unit columns: speed does
   not depend on their values) and ``--images`` SynthToL photos;
2. times the model's own forward pass on one image (``taxoclip.runtime`` encoder, the
   call the server makes, preprocessing included): the yardstick for latency;
3. starts ``taxoclip serve --port 0`` as a subprocess (the port it prints is used);
4. one client, ``--single`` sequential requests: p50 latency against the forward time
   (target: within 2×: what HTTP, multipart, decoding and JSON add);
5. ``--clients`` concurrent clients × ``--requests`` single-image requests each: p50/p95
   latency, throughput, errors (must be 0), forward passes and their mean size, the
   server's RSS before and after; then stops the server with SIGINT.

Run: ``python bench/serve_load.py`` (tiny 224-px model: about a minute on 2 cores);
``--model ViT-B-16 --requests 25`` for BioCLIP's architecture (random weights).
Numbers on a shared machine move with whatever else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from machine import describe  # bench/ is on sys.path when a script here runs


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def prepare(args, work: Path) -> tuple[Path, Path, list[bytes]]:
    from taxoclip.models import create_model, save_model
    from taxoclip.synth import SynthConfig, generate

    model = Path(args.model)
    if not model.exists():
        loaded = create_model(args.model, seed=0)
        model = save_model(loaded.model, work / "model", loaded.model_cfg, loaded.preprocess_cfg)
        dim = loaded.embed_dim
    else:
        from taxoclip.models import load_model

        dim = load_model(model).embed_dim
    rng = np.random.default_rng(0)
    columns = rng.standard_normal((dim, args.taxa)).astype(np.float32)
    columns /= np.linalg.norm(columns, axis=0, keepdims=True)
    index = work / "index"
    index.mkdir()
    np.save(index / "txt_emb_species.npy", columns)
    names = [
        [
            [
                f"K{i % 3}",
                f"P{i % 7}",
                f"C{i % 13}",
                f"O{i % 29}",
                f"F{i % 61}",
                f"G{i % 251}",
                f"s{i}",
            ],
            f"common {i}",
        ]
        for i in range(args.taxa)
    ]
    (index / "txt_emb_species.json").write_text(json.dumps(names))
    synth = work / "synth"
    per_species = max(2, -(-args.images // 10) + 1)
    generate(
        synth,
        SynthConfig(species=10, images_per_species=per_species, image_size=args.image_size, seed=1),
        progress=False,
    )
    photos = sorted((synth / "test" / "images").rglob("*.jpg"))
    photos += sorted((synth / "train" / "images").rglob("*.jpg"))
    return model, index, [p.read_bytes() for p in photos[: args.images]]


def forward_time(model: Path, runtime: str, photo: bytes, repeats: int) -> tuple[float, float]:
    """(median, best) seconds of the server's model call on one image (preprocessing
    included); on a busy machine the best is the closer to the model's own cost."""
    import io

    from PIL import Image

    from taxoclip.runtime import open_encoder

    encoder = open_encoder(str(model), runtime, squash=True)
    image = Image.open(io.BytesIO(photo)).convert("RGB")
    for _ in range(3):
        encoder.encode([image], normalize=False)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        encoder.encode([image], normalize=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def start_server(args, model: Path, index: Path) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable,
        "-m",
        "taxoclip",
        "serve",
        "--model",
        str(model),
        "--index",
        str(index),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--runtime",
        args.runtime,
        "--max-batch",
        str(args.max_batch),
        "--batch-wait-ms",
        str(args.batch_wait_ms),
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    line = process.stdout.readline()
    if not line.startswith("taxoclip serve: http://127.0.0.1:"):
        process.kill()
        raise SystemExit(f"the server did not start: {line}{process.stderr.read()}")
    return process, line.split()[2].rstrip("/")


def run_clients(url: str, photos: list[bytes], clients: int, requests: int, k: int):
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(number: int) -> None:
        mine, bad = [], []
        with httpx.Client(base_url=url, timeout=300) as http:
            barrier.wait()
            for i in range(requests):
                photo = photos[(number * requests + i) % len(photos)]
                start = time.perf_counter()
                try:
                    answer = http.post(
                        "/predict",
                        files=[("files", (f"c{number}-{i}.jpg", photo))],
                        data={"k": str(k)},
                    )
                    elapsed = time.perf_counter() - start
                    if answer.status_code != 200:
                        bad.append(f"HTTP {answer.status_code}: {answer.text[:200]}")
                    elif any("error" in row for row in answer.json()):
                        bad.append(f"error row: {answer.json()[0]}")
                    else:
                        mine.append(elapsed)
                except httpx.HTTPError as exc:
                    bad.append(f"{type(exc).__name__}: {exc}")
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="taxoclip-vit-t224",
        help="open_clip config name (fresh weights) or a model folder",
    )
    parser.add_argument("--runtime", default="auto", help="auto, torch, onnx, onnx-int8")
    parser.add_argument("--taxa", type=int, default=2000)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=224, help="SynthToL photo size")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="per client")
    parser.add_argument("--single", type=int, default=50, help="sequential one-client requests")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        model, index, photos = prepare(args, Path(tmp))
        load_before = os.getloadavg()[0]
        forward, forward_best = forward_time(model, args.runtime, photos[0], repeats=30)
        process, url = start_server(args, model, index)
        try:
            with httpx.Client(base_url=url, timeout=300) as http:
                for photo in photos[:5]:  # warm-up: first requests pay one-time costs
                    http.post("/predict", files=[("files", ("warm.jpg", photo))]).raise_for_status()
                health = http.get("/healthz").json()
            rss_before = rss_mb(process.pid)
            start = httpx.get(url + "/healthz").json()["batching"]
            single, single_errors, single_wall = run_clients(url, photos, 1, args.single, args.k)
            before = httpx.get(url + "/healthz").json()["batching"]
            latencies, errors, wall = run_clients(url, photos, args.clients, args.requests, args.k)
            after = httpx.get(url + "/healthz").json()["batching"]
            rss_after = rss_mb(process.pid)
            load_after = os.getloadavg()[0]
        finally:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=120)

    n_total = args.clients * args.requests
    passes = after["forward_passes"] - before["forward_passes"]
    ms = 1000.0
    single_p50 = statistics.median(single) if single else float("nan")
    # the model call inside the server, one image per pass, under the same machine load
    in_server = (before["encode_s_total"] - start["encode_s_total"]) / max(
        1, before["forward_passes"] - start["forward_passes"]
    )
    scoring = (before["score_s_total"] - start["score_s_total"]) / max(1, args.single)
    lines = [
        f"`python bench/serve_load.py {' '.join(sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"Machine: {describe()} (shared with other work while measured).",
        f"Model {args.model} ({health['runtime']}, D={health['embed_dim']}), index "
        f"{health['index_size']} taxa, SynthToL photos {args.image_size} px, k={args.k}; "
        f"server --max-batch {args.max_batch} --batch-wait-ms {args.batch_wait_ms:g}. "
        f"Load average (1 min) {load_before:.1f} before, {load_after:.1f} after.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| model forward, one image (median of 30, preprocessing included) | "
        f"{forward * ms:.1f} ms (best {forward_best * ms:.1f} ms) |",
        f"| the same forward inside the server during the 1-client run (mean per pass) | "
        f"{in_server * ms:.1f} ms (+ {scoring * ms:.1f} ms scoring per request) |",
        f"| 1 client × {args.single} requests: p50 latency | {single_p50 * ms:.1f} ms "
        f"(**{single_p50 / in_server:.2f}×** the in-server forward; "
        f"{single_p50 / forward:.2f}× the standalone median; target ≤ 2×) |",
        f"| 1 client: p95 latency | {percentile(single, 95) * ms:.1f} ms |"
        if single
        else "| 1 client | no successful request |",
        f"| {args.clients} clients × {args.requests} requests: p50 latency | "
        f"{statistics.median(latencies) * ms:.1f} ms |"
        if latencies
        else "| load | no successes |",
        f"| {args.clients} clients: p95 latency | {percentile(latencies, 95) * ms:.1f} ms |"
        if latencies
        else "",
        f"| {args.clients} clients: throughput | {n_total / wall:.1f} requests/s "
        f"({n_total} in {wall:.1f} s) |",
        f"| {args.clients} clients: forward passes | {passes} (mean {n_total / max(passes, 1):.2f} "
        f"images each, largest {after['largest_batch']}) |",
        f"| errors | {len(errors) + len(single_errors)} of {n_total + args.single} |",
        f"| server RSS before → after the load | {rss_before:.0f} MB → {rss_after:.0f} MB |",
        f"| one client's throughput, for comparison | {args.single / single_wall:.1f} requests/s |",
    ]
    text = "\n".join(line for line in lines if line is not None) + "\n"
    print(text)
    for message in (errors + single_errors)[:5]:
        print("error:", message)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    if errors or single_errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
