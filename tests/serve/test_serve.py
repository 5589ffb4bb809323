"""taxoclip serve against a real uvicorn server on 127.0.0.1 (httpx clients, real images)."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import pytest
from PIL import Image

from taxoclip.serve.uploads import Limits

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")


def files_of(paths, names=None):
    return [
        ("files", (names[i] if names else Path(p).name, Path(p).read_bytes(), "image/jpeg"))
        for i, p in enumerate(paths)
    ]


def renamed(rows, names):
    """Library rows (keys are paths) with file_name as the upload's name."""
    return [{**row, "file_name": names[row["file_name"]]} for row in rows]


def assert_rows_equal(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert list(g) == list(w)  # same keys, same order: the CLI's JSON rows
        for key in w:
            if key == "score":
                assert g[key] == pytest.approx(w[key], abs=2e-5)
            else:
                assert g[key] == w[key], (key, g, w)


def bomb_png(width=100_000, height=100_000) -> bytes:
    """A tiny PNG whose header claims width × height pixels (PIL refuses it at open)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------------ rows


def test_predict_rows_equal_the_library_rows(serve, images, serve_model, serve_index):
    from taxoclip.predict import CustomLabelsClassifier, Rank, TreeOfLifeClassifier

    server = serve()
    paths = [str(p) for p in images[:3]]
    names = {p: f"img{i}.jpg" for i, p in enumerate(paths)}
    upload = [names[p] for p in paths]
    tree = TreeOfLifeClassifier(model_str=str(serve_model), index=str(serve_index))
    with httpx.Client(base_url=server.url, timeout=120) as client:
        got = client.post("/predict", files=files_of(paths, upload))
        assert got.status_code == 200, got.text
        assert_rows_equal(got.json(), renamed(tree.predict(paths, "species", k=5), names))

        got = client.post(
            "/predict", files=files_of(paths, upload), data={"rank": "family", "k": "3"}
        )
        assert_rows_equal(got.json(), renamed(tree.predict(paths, "family", k=3), names))

        genera = sorted({entry[0][5] for entry in tree.index.names})[:3]
        got = client.post(
            "/predict",
            files=files_of(paths, upload),
            data={"subset": "genus\n" + "\n".join(genera), "k": "2"},
        )
        tree.apply_filter(tree.create_taxa_filter(Rank.GENUS, genera))
        assert_rows_equal(got.json(), renamed(tree.predict(paths, "species", k=2), names))
        assert {row["genus"] for row in got.json()} <= set(genera)
        csv_file = ("subset", ("genera.csv", ("genus\n" + "\n".join(genera)).encode(), "text/csv"))
        as_file = client.post(
            "/predict", files=[*files_of(paths, upload), csv_file], data={"k": "2"}
        )
        assert as_file.json() == got.json()  # the same subset, uploaded as a CSV file

        labels = ["a red flower", "a small bird", "a beetle"]
        got = client.post("/predict", files=files_of(paths, upload), data={"cls": ",".join(labels)})
        custom = CustomLabelsClassifier(labels, model_str=str(serve_model))
        assert_rows_equal(got.json(), renamed(custom.predict(paths), names))
        assert list(got.json()[0]) == ["file_name", "classification", "score"]


def test_embed_returns_the_models_features(serve, images, serve_model):
    import numpy as np

    from taxoclip.predict import BaseClassifier, encode_images

    server = serve()
    paths = [str(p) for p in images[:2]]
    with httpx.Client(base_url=server.url, timeout=120) as client:
        answer = client.post("/embed", files=files_of(paths)).json()
    base = BaseClassifier(model_str=str(serve_model))
    want = encode_images(base.encoder, paths, normalize=False).features
    np.testing.assert_allclose(
        base.create_image_features([Image.open(p) for p in paths], normalize=False).numpy(),
        want,
        atol=1e-5,
    )
    got = np.array([row["embedding"] for row in answer["rows"]])
    assert answer["dim"] == want.shape[1] and answer["normalized"] is False
    assert [row["file_name"] for row in answer["rows"]] == [Path(p).name for p in paths]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_an_exported_folder_serves_with_onnx_runtime(
    serve, images, serve_model, serve_index, tmp_path
):
    pytest.importorskip("onnxruntime", reason="the ONNX runtime needs the [onnx] extra")
    from taxoclip.predict import TreeOfLifeClassifier
    from taxoclip.runtime.config import ExportOnnxConfig
    from taxoclip.runtime.export import export_onnx
    from taxoclip.serve.engine import Engine

    exported = tmp_path / "exported"
    export_onnx(ExportOnnxConfig(model=str(serve_model), out=str(exported), int8=True, text=False))
    paths = [str(p) for p in images[:2]]
    want = TreeOfLifeClassifier(model_str=str(serve_model), index=str(serve_index))
    want = want.predict(paths, "species", k=3)
    for runtime, tolerance in (("auto", 1e-4), ("onnx-int8", None)):
        server = serve(Engine(str(exported), str(serve_index), runtime=runtime))
        with httpx.Client(base_url=server.url, timeout=120) as http:
            health = http.get("/healthz").json()
            assert health["runtime"] == ("onnx" if runtime == "auto" else runtime)
            got = http.post("/predict", files=files_of(paths), data={"k": "3"}).json()
            labels = http.post("/predict", files=files_of(paths), data={"cls": "a,b"})
        assert labels.status_code == 200 and len(labels.json()) == 4  # text tower: torch's
        assert [list(row) for row in got] == [list(row) for row in want]
        if tolerance:  # fp32 ONNX: the torch model's rows
            assert [row["species"] for row in got] == [row["species"] for row in want]
            assert [row["score"] for row in got] == pytest.approx(
                [row["score"] for row in want], abs=tolerance
            )


def test_a_plain_folder_serves_on_onnx_through_the_export_cache(
    engine, images, serve_model, serve_index, tmp_path, monkeypatch
):
    """auto on a model folder that was never exported: the cache's export, both
    preprocessings (tree of life squashed, embeddings cropped) equal to torch's."""
    pytest.importorskip("onnxruntime", reason="the ONNX runtime needs the [onnx] extra")
    import numpy as np
    from PIL import Image

    from taxoclip.serve.engine import PLAIN, TREE, Engine

    monkeypatch.setenv("TAXOCLIP_CACHE", str(tmp_path / "cache"))
    onnx = Engine(str(serve_model), str(serve_index))
    assert onnx.runtime == "onnx" and engine.runtime == "torch"
    assert str(tmp_path / "cache" / "onnx") in str(onnx._encoders[TREE].path)
    pictures = [Image.open(p).convert("RGB") for p in images[:3]]
    for kind in (TREE, PLAIN):
        np.testing.assert_allclose(
            onnx.encode(pictures, kind), engine.encode(pictures, kind), atol=1e-4
        )
    assert onnx._encoders[PLAIN].squash is False
    assert onnx._encoders[PLAIN].weights == serve_model / "open_clip_model.safetensors"


def test_serve_on_onnx_imports_no_torch(serve_model, serve_index, images, tmp_path):
    """A real process serves an exported folder — tree of life, a subset, custom labels
    (the exported text tower), embeddings — and never imports torch."""
    pytest.importorskip("onnxruntime", reason="the ONNX runtime needs the [onnx] extra")
    from taxoclip.predict import TreeOfLifeClassifier
    from taxoclip.runtime.config import ExportOnnxConfig
    from taxoclip.runtime.export import export_onnx

    exported = tmp_path / "exported"
    export_onnx(ExportOnnxConfig(model=str(serve_model), out=str(exported)))
    genus = TreeOfLifeClassifier(model_str=str(serve_model), index=str(serve_index))
    genus = genus.index.names[0][0][5]
    paths = [str(p) for p in images[:2]]
    code = f"""
import json, sys
from pathlib import Path
from starlette.testclient import TestClient
from taxoclip.serve.app import create_app
from taxoclip.serve.engine import Engine

files = [("files", (Path(p).name, Path(p).read_bytes(), "image/jpeg")) for p in {paths!r}]
engine = Engine({str(exported)!r}, {str(serve_index)!r})
with TestClient(create_app(engine)) as client:
    answers = [
        client.post("/predict", files=files, data={{"k": "2"}}),
        client.post("/predict", files=files, data={{"subset": "genus\\n{genus}"}}),
        client.post("/predict", files=files, data={{"cls": "a bird,a fish"}}),
        client.post("/embed", files=files),
    ]
    runtime = client.get("/healthz").json()["runtime"]
heavy = sorted(m for m in ("torch", "torchvision", "open_clip") if m in sys.modules)
print(json.dumps({{"codes": [a.status_code for a in answers], "runtime": runtime,
                  "rows": [len(answers[0].json()), len(answers[2].json())],
                  "genera": sorted({{row["genus"] for row in answers[1].json()}}),
                  "heavy": heavy}}))
"""
    env = {"HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": "/usr/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {
        "codes": [200] * 4,
        "runtime": "onnx",
        "rows": [4, 4],
        "genera": [genus],
        "heavy": [],
    }


# ------------------------------------------------------------------------ batching


def test_concurrent_requests_share_one_forward_pass(serve, images):
    server = serve(batch_wait_ms=0, max_batch=16)
    batcher = server.app.state.batcher
    n = 4
    answers: dict[int, httpx.Response] = {}

    def client(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            answers[i] = http.post("/predict", files=files_of([images[i]]), data={"k": "3"})

    batcher.pause()  # a barrier: all four are queued before the worker takes any
    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for _ in range(12_000):
        if batcher.pending == n:
            break
        time.sleep(0.01)
    assert batcher.pending == n
    batcher.resume()
    for thread in threads:
        thread.join(timeout=120)
    stats = batcher.stats
    assert stats.most_requests == n and stats.largest == n and stats.batches == 1
    alone = serve()  # the same images one request each: the same rows
    with httpx.Client(base_url=alone.url, timeout=120) as http:
        for i in range(n):
            assert answers[i].status_code == 200
            single = http.post("/predict", files=files_of([images[i]]), data={"k": "3"}).json()
            assert_rows_equal(answers[i].json(), single)


def test_a_slow_upload_does_not_hold_the_model(serve, images):
    server = serve()
    host, port = server.url.removeprefix("http://").split(":")
    photo = images[0].read_bytes()
    body = (
        b'--XX\r\nContent-Disposition: form-data; name="files"; filename="slow.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + photo + b"\r\n--XX--\r\n"
    )
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: multipart/form-data; boundary=XX\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port))) as slow:
        slow.sendall(head + body[: len(body) // 2])  # ... and the rest much later
        with httpx.Client(base_url=server.url, timeout=120) as http:
            for _ in range(3):  # others are served meanwhile
                assert http.post("/predict", files=files_of(images[1:2])).status_code == 200
        slow.sendall(body[len(body) // 2 :])
        answer = slow.makefile("rb").readline()
    assert answer.startswith(b"HTTP/1.1 200")


def test_a_request_the_model_cannot_reach_in_time_gets_503(serve, images):
    server = serve(queue_timeout=0.5)
    batcher = server.app.state.batcher
    batcher.pause()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            answer = http.post("/predict", files=files_of(images[:1]))
        assert answer.status_code == 503
        assert "server busy" in answer.json()["detail"]
    finally:
        batcher.resume()
    with httpx.Client(base_url=server.url, timeout=120) as http:
        assert http.post("/predict", files=files_of(images[:1])).status_code == 200
    assert batcher.stats.abandoned == 1


# ------------------------------------------------------------------------ bad input


def test_bad_uploads_are_per_file_errors(serve, images):
    server = serve(limits=Limits(max_pixels=100_000))
    good = images[0].read_bytes()
    buffer = io.BytesIO()
    Image.new("RGB", (400, 300), "green").save(buffer, "PNG")
    uploads = [
        ("good.jpg", good),
        ("corrupt.jpg", b"\xff\xd8\xff\xe0" + os.urandom(600)),
        ("truncated.jpg", good[: len(good) // 2]),
        ("empty.jpg", b""),
        ("notes.txt", b"these are field notes, not a photo\n"),
        ("bomb.png", bomb_png()),
        ("big.png", buffer.getvalue()),  # 120,000 pixels: over this server's --max-pixels
    ]
    with httpx.Client(base_url=server.url, timeout=120) as http:
        answer = http.post("/predict", files=[("files", u) for u in uploads], data={"k": "2"})
    assert answer.status_code == 200, answer.text
    rows = answer.json()
    assert [r["file_name"] for r in rows] == ["good.jpg", "good.jpg", *[u[0] for u in uploads[1:]]]
    assert "error" not in rows[0] and rows[0]["score"] > 0
    reasons = {r["file_name"]: r["error"] for r in rows[2:]}
    assert set(reasons) == {u[0] for u in uploads[1:]}
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["notes.txt"] == "not a readable image"
    assert reasons["corrupt.jpg"]  # a reason, whatever PIL calls it
    assert "truncated" in reasons["truncated.jpg"]
    assert "decompression bomb" in reasons["bomb.png"].lower()
    assert "400×300 = 120,000 pixels" in reasons["big.png"]
    assert all(list(r) == ["file_name", "error"] for r in rows[2:])


def test_upload_limits_answer_413_with_a_message(serve, images):
    server = serve(limits=Limits(max_upload_bytes=3_000, max_files=2, form_slack=10_000))
    small = images[0].read_bytes()
    assert len(small) < 3_000
    with httpx.Client(base_url=server.url, timeout=120) as http:
        answer = http.post("/predict", files=[("files", (f"{i}.jpg", small)) for i in range(3)])
        assert answer.status_code == 413
        assert "3 files in one request; the limit is 2" in answer.json()["detail"]

        answer = http.post("/predict", files=[("files", ("big.jpg", b"\xff" * 5_000))])
        assert answer.status_code == 413
        assert (
            "big.jpg is 5,000 bytes; the limit is 3,000 bytes per file" in answer.json()["detail"]
        )

        answer = http.post("/predict", files=[("files", ("huge.jpg", b"\xff" * 200_000))])
        assert answer.status_code == 413
        assert "over the limit of 16,000 bytes" in answer.json()["detail"]

        assert http.post("/predict", files=[("files", ("ok.jpg", small))]).status_code == 200


def test_bad_fields_are_400_with_the_reason(serve, images):
    server = serve()
    one = files_of(images[:1])
    with httpx.Client(base_url=server.url, timeout=120) as http:
        cases = [
            ({"rank": "tribe"}, "rank must be one of"),
            ({"k": "0"}, "k must be at least 1"),
            ({"k": "many"}, "k must be a whole number"),
            ({"rank": "genus", "cls": "a,b"}, "not both"),
            ({"subset": "genus\nNotAGenus"}, "Unknown genus received: NotAGenus"),
            ({"subset": "tribe\nX"}, "must be one of"),
        ]
        for data, message in cases:
            answer = http.post("/predict", files=one, data=data)
            assert answer.status_code == 400, (data, answer.text)
            assert message in answer.json()["detail"], (data, answer.text)
        answer = http.post("/predict", data={"rank": "genus"})  # not even multipart
        assert answer.status_code == 400 and "multipart/form-data" in answer.json()["detail"]
        answer = http.post("/predict", files=[("photo", ("a.jpg", b"x"))])
        assert answer.status_code == 400 and "'files'" in answer.json()["detail"]


# ------------------------------------------------------------------------ the rest


def test_healthz_openapi_and_pages_use_nothing_external(serve):
    server = serve()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        health = http.get("/healthz").json()
        assert health["status"] == "ok" and health["runtime"] == "torch"
        assert health["index_size"] == 12 and health["embed_dim"] > 0
        assert health["uptime_s"] >= 0 and "batching" in health
        schema = http.get("/openapi.json").json()
        assert {"/predict", "/embed", "/healthz"} <= set(schema["paths"])
        fields = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
        assert {"files", "rank", "k", "cls", "subset"} <= set(
            fields["multipart/form-data"]["schema"]["properties"]
        )
        for path in ("/", "/docs", "/static/app.js", "/static/style.css"):
            answer = http.get(path)
            assert answer.status_code == 200
            assert "default-src 'self'" in answer.headers["content-security-policy"]
            text = answer.text.lower()
            assert "http://" not in text and "https://" not in text and "//cdn" not in text, path
        assert "/predict" in http.get("/docs").text
        assert http.get("/redoc").status_code == 404


def test_port_taken_is_a_clear_error_and_exit_1(serve_model, serve_index):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from taxoclip.cli import main; sys.exit(main(sys.argv[1:]))",
                "serve",
                "--model",
                str(serve_model),
                "--index",
                str(serve_index),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "already in use" in done.stderr


def test_the_command_serves_until_interrupted(serve_model, serve_index, images):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taxoclip",
            "serve",
            "--model",
            str(serve_model),
            "--index",
            str(serve_index),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("taxoclip serve: http://127.0.0.1:"), line + process.stderr.read()
        url = line.split()[2].rstrip("/")
        with httpx.Client(base_url=url, timeout=120) as http:
            assert http.get("/healthz").json()["index_size"] == 12
            assert http.post("/predict", files=files_of(images[:1])).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "served 1 requests (1 images in 1 forward passes)" in out
