"""Long runs of predict and embed: rows and features streamed to disk, checkpoints, a real
process killed with SIGKILL and resumed to the bytes of an uninterrupted run, and resumes
against other inputs, another model or other flags refused with the difference named."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from taxoclip.errors import InputError, UsageError
from taxoclip.predict import EmbedConfig, PredictConfig
from taxoclip.predict.output import columns_of, write_embeddings, write_rows
from taxoclip.predict.run import run_embed, run_predict
from taxoclip.predict.stream import CHECKPOINT_FILE, Progress, sidecar_of
from tests.helpers import saved_model


def make_images(folder: Path, n: int, bad: tuple[int, ...] = (), seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        path = folder / f"im{i:04d}.png"
        if i in bad:
            path.write_bytes(b"not an image")
        else:
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(path)
    return folder


@pytest.fixture(scope="module")
def model_32(tmp_path_factory):
    return saved_model(tmp_path_factory.mktemp("models") / "t32", "taxoclip-vit-t32")


@pytest.fixture(scope="module")
def images_60(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("images") / "imgs", 60, bad=(7, 33))


# --------------------------------------------------------------------------- the writers


ROWS = [
    {"file_name": 'a, "quoted"\nname.jpg', "kingdom": "Animalia", "score": 0.5},
    {"file_name": "b.jpg", "error": "not a readable image"},
    {"file_name": "ç.jpg", "kingdom": "Plantae", "score": 1e-7},
]


def test_rows_are_written_as_the_one_shot_writers_wrote_them():
    as_json = io.StringIO()
    write_rows(lambda: iter(ROWS), "json", as_json)
    assert as_json.getvalue() == json.dumps(ROWS, indent=2, ensure_ascii=False) + "\n"
    empty = io.StringIO()
    write_rows([], "json", empty)
    assert empty.getvalue() == json.dumps([], indent=2) + "\n"
    as_csv, reference = io.StringIO(), io.StringIO()
    write_rows(lambda: iter(ROWS), "csv", as_csv)
    writer = csv.DictWriter(reference, fieldnames=columns_of(ROWS), lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(ROWS)
    assert as_csv.getvalue() == reference.getvalue()
    assert columns_of(ROWS) == ["file_name", "kingdom", "score", "error"]
    table = io.StringIO()
    write_rows(ROWS[1:], "table", table)  # a table for people: names without newlines
    lines = table.getvalue().splitlines()
    assert len({len(line) for line in lines}) == 1 and "not a readable image" in lines[3]


def test_embeddings_are_written_as_numpy_and_json_write_them(tmp_path):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(5, 3)).astype(np.float32)
    keys = ["a.jpg", "b.jpg", "ç.jpg", "d.jpg", "e.jpg"]
    write_embeddings(str(tmp_path / "e.npy"), "m", keys, features)
    reference = io.BytesIO()
    np.save(reference, features)
    assert (tmp_path / "e.npy").read_bytes() == reference.getvalue()
    assert (tmp_path / "e.files.txt").read_text() == "".join(k + "\n" for k in keys)
    write_embeddings(str(tmp_path / "e.json"), "m", keys, features)
    data = {
        "model": "m",
        "embeddings": {k: v.tolist() for k, v in zip(keys, features, strict=True)},
    }
    assert (tmp_path / "e.json").read_text() == json.dumps(data, indent=4)
    write_embeddings(str(tmp_path / "none.json"), "m", [], np.zeros((0, 3), np.float32))
    empty = json.dumps({"model": "m", "embeddings": {}}, indent=4)
    assert (tmp_path / "none.json").read_text() == empty
    write_embeddings(str(tmp_path / "e.parquet"), "m", keys, features)
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.column("file_name").to_pylist() == keys
    assert np.array_equal(
        np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), features
    )


# --------------------------------------------------------------------------- kill -9


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "taxoclip", *args, "-q"]


def test_predict_killed_with_sigkill_resumes_to_the_bytes_of_an_uninterrupted_run(
    model_224, index_224, tmp_path
):
    images = make_images(tmp_path / "imgs", 200, bad=(50, 131))
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
        "10",
        "--workers",
        "0",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    whole = tmp_path / "whole.csv"
    done = subprocess.run(
        cli("predict", *common, "--output", str(whole)),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 3, done.stderr  # two unreadable images: rows with an error

    out = tmp_path / "resumed.csv"
    args = cli("predict", *common, "--output", str(out), "--checkpoint-every", "20")
    process = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    checkpoint = sidecar_of(out) / CHECKPOINT_FILE
    deadline, seen = time.monotonic() + 240, 0
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoint.is_file():
            seen = json.loads(checkpoint.read_text())["images_done"]
            if seen >= 40:
                os.kill(process.pid, signal.SIGKILL)
                break
        time.sleep(0.005)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 40 <= seen < 200 and not out.exists()
    state = json.loads(checkpoint.read_text())
    body = sidecar_of(out) / "rows.jsonl"
    assert body.stat().st_size >= state["bytes"]["rows.jsonl"]  # maybe rows past the checkpoint

    resumed = subprocess.run(
        [*args, "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 3, resumed.stderr
    assert out.read_bytes() == whole.read_bytes()
    assert not sidecar_of(out).exists()
    names = [row["file_name"] for row in csv.DictReader(out.open())]
    assert len(set(names)) == 200 and len(names) == 2 * 1 + 198 * 3


# --------------------------------------------------------------------------- resume


class Crash(Exception):
    pass


def crash_after(monkeypatch, images: int) -> None:
    """Make the next run die (as a crash would) once ``images`` are written."""
    advance = Progress.advance

    def dying(self, done):
        advance(self, done)
        if done >= images:
            raise Crash(done)

    monkeypatch.setattr(Progress, "advance", dying)


@pytest.mark.parametrize("suffix", [".npy", ".parquet", ".json"])
def test_embed_resumed_after_a_crash_writes_the_files_of_an_uninterrupted_run(
    model_32, images_60, tmp_path, monkeypatch, suffix
):
    base = dict(
        images=[str(images_60)], model=str(model_32), runtime="torch", batch_size=8, progress=False
    )
    whole = run_embed(EmbedConfig(output=str(tmp_path / f"whole{suffix}"), **base))
    assert (whole.n_images, whole.n_ok) == (60, 58)
    config = EmbedConfig(output=str(tmp_path / f"cut{suffix}"), checkpoint_every=16, **base)
    crash_after(monkeypatch, 40)
    with pytest.raises(Crash):
        run_embed(config)
    monkeypatch.undo()
    state = json.loads((sidecar_of(config.output) / CHECKPOINT_FILE).read_text())
    assert state["images_done"] == 32  # the last boundary past 16 images: 16, then 32
    resumed = run_embed(EmbedConfig(**{**config.to_json(), "resume": True}))
    assert (resumed.n_ok, resumed.dim) == (58, whole.dim)
    for a, b in zip(whole.written, resumed.written, strict=True):
        assert Path(a).read_bytes() == Path(b).read_bytes(), b
    assert not sidecar_of(config.output).exists()


def test_a_resume_against_other_inputs_model_or_flags_is_refused_naming_it(
    model_32, images_60, tmp_path, monkeypatch
):
    out = tmp_path / "p.csv"
    base = dict(
        images=[str(images_60)],
        model=str(model_32),
        runtime="torch",
        cls="fish,bird",
        k=2,
        batch_size=8,
        output=str(out),
        progress=False,
        checkpoint_every=8,
    )
    crash_after(monkeypatch, 24)
    with pytest.raises(Crash):
        run_predict(PredictConfig(**base))
    monkeypatch.undo()

    fewer = sorted(str(p) for p in images_60.glob("*.png"))
    fewer.remove(str(images_60 / "im0010.png"))
    with pytest.raises(
        InputError,
        match=r"different inputs: 60 images then, 59 now; image #11 "
        r"was '.*im0010.png', is '.*im0011.png'",
    ):
        run_predict(PredictConfig(**{**base, "images": fewer, "resume": True}))
    other = saved_model(tmp_path / "other", "taxoclip-vit-t32", seed=1)
    with pytest.raises(InputError, match="a different model: weights [0-9a-f]+ then, "):
        run_predict(PredictConfig(**{**base, "model": str(other), "resume": True}))
    with pytest.raises(InputError, match="--k 2 then, 1 now"):
        run_predict(PredictConfig(**{**base, "k": 1, "resume": True}))
    with pytest.raises(InputError, match="--cls"):
        run_predict(PredictConfig(**{**base, "cls": "fish,cat", "resume": True}))

    resumed = run_predict(PredictConfig(**{**base, "resume": True, "keep_rows": True}))
    whole = tmp_path / "whole.csv"
    run_predict(PredictConfig(**{**base, "output": str(whole), "checkpoint_every": None}))
    assert out.read_bytes() == whole.read_bytes()
    assert len(resumed.rows) == 2 * 58 + 2 and resumed.exit_code == 3


def test_long_run_flags_are_checked():
    with pytest.raises(UsageError, match="need --output"):
        PredictConfig(images=["x"], checkpoint_every=10)
    with pytest.raises(UsageError, match="at least 1"):
        EmbedConfig(images=["x"], output="e.npy", checkpoint_every=0)
    with pytest.raises(UsageError, match="--ray-actors needs --ray-address"):
        EmbedConfig(images=["x"], output="e.npy", ray_actors=2)


def test_defaults_live_on_the_config():
    tree = PredictConfig(images=["x"])
    assert (tree.rank, tree.k, tree.top_k) == ("species", None, 5)
    assert PredictConfig(images=["x"], cls="a,b").top_k is None  # every label
    assert PredictConfig(images=["x"], bins="b.csv", k=2).top_k == 2
