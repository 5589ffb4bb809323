"""The ONNX export cache behind ``--runtime auto``: made once, reused without torch, shared
between processes, verified, rebuilt when corrupt, and torch with one line where it cannot be.

Every run here is a real ``taxoclip embed`` process on the tiny model folder with its own
cache folder (``TAXOCLIP_CACHE``); what it printed, what it imported and what it left in
the cache are checked."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from taxoclip.runtime import cache
from taxoclip.runtime.export import sample_images

pytest.importorskip("onnxruntime", reason="the ONNX runtime needs the [onnx] extra")

# One process: `taxoclip embed` through the CLI's main, then what it imported.
SCRIPT = """
import json, sys
from taxoclip.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "torchvision", "open_clip") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("cache-images")
    paths = []
    for i, image in enumerate(sample_images(4, seed=7)):
        image.save(folder / f"{i}.png")
        paths.append(str(folder / f"{i}.png"))
    return paths


def embed(
    model,
    images,
    out: Path,
    cache_dir: Path,
    *extra: str,
    wait: bool = True,
    prefix: tuple[str, ...] = (),
):
    """``taxoclip embed`` in a fresh process with its own cache; (result, stderr lines)."""
    env = {**os.environ, "TAXOCLIP_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    argv = [
        *prefix,
        sys.executable,
        "-c",
        SCRIPT,
        "embed",
        *images,
        "--model",
        str(model),
        "--output",
        str(out),
        "-q",
        *extra,
    ]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    if not wait:
        return process
    return finished(process)


def finished(process) -> tuple[dict, list[str]]:
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    return json.loads(stdout.strip().splitlines()[-1]), stderr.strip().splitlines()


def entries(cache_dir: Path) -> list[Path]:
    root = cache_dir / "onnx"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def exported_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "exported" in line and "once" in line]


@pytest.fixture(scope="module")
def warm(model_t32, images, tmp_path_factory):
    """A cache after one first run (and that run's output and stderr)."""
    folder = tmp_path_factory.mktemp("warm")
    result, lines = embed(model_t32, images, folder / "first.npy", folder / "cache")
    return folder / "cache", folder / "first.npy", result, lines


@pytest.fixture(scope="module")
def torch_features(model_t32, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("torch") / "torch.npy"
    result, lines = embed(model_t32, images, out, out.parent / "cache", "--runtime", "torch")
    assert result == {"code": 0, "heavy": ["open_clip", "torch", "torchvision"]}
    assert lines == []  # --runtime torch: no export, nothing said
    assert not (out.parent / "cache" / "onnx").exists()
    return np.load(out)


def test_first_run_exports_checks_and_records(warm, torch_features, model_t32):
    cache_dir, first, result, lines = warm
    assert result["code"] == 0
    assert len(lines) == 2, lines  # what is about to happen, then what it cost
    assert "exporting it once" in lines[0] and str(model_t32) in lines[0]
    (cost,) = exported_lines(lines)
    assert " s, once" in cost and "min cosine 1.0000" in cost
    (entry,) = entries(cache_dir)
    record = json.loads((entry / "export.json").read_text())
    for mode in ("crop", "squash"):
        assert record["agreement"][f"image_fp32_{mode}"]["min_cosine"] > 0.99999
        assert record["agreement"][f"image_fp32_{mode}"]["n_images"] == 16
    assert record["agreement"]["text_fp32_min_cosine"] > 0.99999
    assert record["opset"] == cache.OPSET and record["quantization"] is None
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["source"] == str(model_t32)
    assert manifest["made_of"]["versions"]["torch"] == record["torch"].split("+")[0]
    assert sorted(manifest["files"]) == [
        "export.json",
        "image_encoder.onnx",
        "open_clip_config.json",
        "text_encoder.onnx",
        "text_step.onnx",
        "tokenizer.json",
    ]
    assert not (entry / "open_clip_model.safetensors").exists()  # no copy of the weights
    np.testing.assert_allclose(np.load(first), torch_features, atol=1e-4)


def test_second_run_hits_the_cache_without_torch(warm, torch_features, model_t32, images, tmp_path):
    cache_dir, first, _, _ = warm
    before = {p.name: p.stat().st_mtime_ns for p in entries(cache_dir)[0].iterdir()}
    started = time.perf_counter()
    result, lines = embed(model_t32, images, tmp_path / "second.npy", cache_dir)
    elapsed = time.perf_counter() - started
    assert result == {"code": 0, "heavy": []}
    assert lines == []  # nothing to say: the export is there
    np.testing.assert_array_equal(np.load(tmp_path / "second.npy"), np.load(first))
    after = {p.name: p.stat().st_mtime_ns for p in entries(cache_dir)[0].iterdir()}
    assert before == after  # read, not rewritten
    assert elapsed < 60
    # custom labels too: the cached export's text tower, no torch
    env = {**os.environ, "TAXOCLIP_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    argv = [
        sys.executable,
        "-c",
        SCRIPT,
        "predict",
        *images,
        "--model",
        str(model_t32),
        "--cls",
        "fox,owl",
        "--output",
        str(tmp_path / "p.csv"),
        "-q",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"code": 0, "heavy": []}
    assert done.stderr == ""


def test_the_same_weights_under_another_spec_share_the_export(model_t32, tmp_path):
    """A run dir, the weights file itself and the folder placed in a Hugging Face cache
    as hf-hub: all name the same files, so one key (no torch needed to find it)."""
    from taxoclip.models.hubcache import place_model_folder

    run = tmp_path / "run"
    shutil.copytree(model_t32, run / "model")
    hf_home = tmp_path / "hf"
    place_model_folder(hf_home, "someone/tiny", model_t32)
    keys = {
        cache.cache_key(cache.resolve_source(spec), False)[0]
        for spec in (model_t32, run, run / "model" / "open_clip_model.safetensors")
    }
    assert len(keys) == 1
    code = """
import json, os, sys
from taxoclip.runtime import cache
print(cache.cache_key(cache.resolve_source("hf-hub:someone/tiny"), False)[0])
print("torch" in sys.modules)
"""
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [keys.pop(), "False"]
    for spec, why in (("ViT-B-16", "random weights"), (str(tmp_path / "nowhere"), "no such")):
        with pytest.raises(cache.Unavailable, match=why):
            cache.resolve_source(spec)
    with pytest.raises(cache.Unavailable, match="pretrained tag 'openai'"):
        cache.resolve_source("ViT-B-16", "openai")


def test_two_processes_at_once_export_once(model_t32, images, tmp_path):
    cache_dir = tmp_path / "cache"
    processes = [
        embed(model_t32, images, tmp_path / f"{i}.npy", cache_dir, wait=False) for i in range(2)
    ]
    results = [finished(process) for process in processes]
    assert [result["code"] for result, _ in results] == [0, 0]
    assert sum(len(exported_lines(lines)) for _, lines in results) == 1
    waited = [line for _, lines in results for line in lines if "waiting for another" in line]
    assert len(waited) == 1  # the second found the first exporting, waited, then reused it
    assert len(entries(cache_dir)) == 1
    assert [p.name for p in (cache_dir / "onnx").iterdir() if p.name.startswith(".")] == []
    np.testing.assert_array_equal(np.load(tmp_path / "0.npy"), np.load(tmp_path / "1.npy"))


def test_a_corrupt_export_is_detected_and_rebuilt(warm, model_t32, images, tmp_path):
    cache_dir = tmp_path / "cache"
    shutil.copytree(warm[0], cache_dir)
    (entry,) = entries(cache_dir)
    onnx_file = entry / "image_encoder.onnx"
    good = onnx_file.read_bytes()
    with onnx_file.open("r+b") as handle:  # one flipped byte: same size, same name
        handle.seek(len(good) // 2)
        handle.write(bytes([good[len(good) // 2] ^ 0xFF]))
    assert cache.problem(entry) == "image_encoder.onnx does not match its SHA-256"
    result, lines = embed(model_t32, images, tmp_path / "out.npy", cache_dir)
    assert result["code"] == 0
    assert len([line for line in lines if "is corrupt" in line]) == 1
    assert "does not match its SHA-256" in lines[0] and "rebuilding" in lines[0]
    assert len(exported_lines(lines)) == 1
    assert onnx_file.read_bytes() == good  # rebuilt: the same export, whole
    assert cache.problem(entry) is None
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), np.load(warm[1]))
    # a truncated file is caught by its size, without hashing
    onnx_file.write_bytes(good[:100])
    assert cache.problem(entry) == f"image_encoder.onnx has 100 bytes, not {len(good)}"


def test_a_killed_export_leaves_nothing_half_written(model_t32, images, tmp_path):
    cache_dir = tmp_path / "cache"
    process = embed(model_t32, images, tmp_path / "killed.npy", cache_dir, wait=False)
    root = cache_dir / "onnx"
    deadline = time.monotonic() + 300
    while not any(p.name.endswith(".tmp") for p in root.glob(".*")):  # the export began
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    time.sleep(1.0)  # well into the export
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert entries(cache_dir) == []  # only the temporary folder, which is never read
    assert [p.name for p in root.iterdir() if p.name.endswith(".tmp")]
    result, lines = embed(model_t32, images, tmp_path / "again.npy", cache_dir)
    assert result["code"] == 0 and len(exported_lines(lines)) == 1
    assert len(entries(cache_dir)) == 1
    assert [p.name for p in root.iterdir() if p.name.endswith(".tmp")] == []  # cleared


def _read_only(folder: Path) -> tuple[str, ...]:
    """A command prefix under which ``folder`` cannot be written (None: not possible here)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return ()
    # root writes through permissions: mount the folder read-only in a private namespace
    prefix = (
        "unshare",
        "-rm",
        "sh",
        "-c",
        f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" '
        f'"{folder}" && exec "$@"',
        "sh",
    )
    probe = subprocess.run([*prefix, "touch", str(folder / "probe")], capture_output=True)
    if probe.returncode == 0 or shutil.which("unshare") is None:
        pytest.skip("cannot make a read-only folder here (root without user namespaces)")
    return prefix


def test_a_read_only_cache_falls_back_to_torch_with_one_line(
    model_t32, images, torch_features, tmp_path
):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    prefix = _read_only(cache_dir)
    out = tmp_path / "out"
    out.mkdir()
    result, lines = embed(model_t32, images, out / "e.npy", cache_dir, prefix=prefix)
    assert result == {"code": 0, "heavy": ["open_clip", "torch", "torchvision"]}
    assert len(lines) == 1, lines
    assert "on torch, not ONNX Runtime: cannot write the cache" in lines[0]
    assert str(model_t32) in lines[0]
    np.testing.assert_array_equal(np.load(out / "e.npy"), torch_features)
    assert list(cache_dir.iterdir()) == []


def test_a_refused_export_is_remembered(model_t32, tmp_path, monkeypatch):
    """An export the exporter refused (here: one recorded as failed) is not retried on
    every run: torch with the reason, until the failure record is removed."""
    monkeypatch.setenv("TAXOCLIP_CACHE", str(tmp_path))
    source = cache.resolve_source(model_t32)
    key, _ = cache.cache_key(source, False)
    failed = tmp_path / "onnx" / f"{key}.failed.json"
    failed.parent.mkdir(parents=True)
    failed.write_text(json.dumps({"reason": "export failed: UnsupportedOperatorError: aten::x"}))
    with pytest.raises(cache.Unavailable, match=r"aten::x \(remembered in .*delete it"):
        cache.cached_export(model_t32)


def test_agreement_bars(monkeypatch):
    good = {"agreement": {f"image_fp32_{m}": {"min_cosine": 0.999999} for m in ("crop", "squash")}}
    assert cache.fp32_disagreement(good) is None
    bad = json.loads(json.dumps(good))
    bad["agreement"]["image_fp32_squash"]["min_cosine"] = 0.98
    assert cache.fp32_disagreement(bad) == "image features, squash: min cosine 0.980000 < 0.9999"
    # int8 is auto's choice only when switched on (it is not: too slow on small models) and
    # with a batch-independent quantisation that clears the bars
    int8 = {m: {"min_cosine": 0.995, "top1_agreement": 1.0} for m in ("crop", "squash")}
    static = {
        "quantization": {"method": "static, calibrated"},
        "agreement": {f"image_int8_{m}": v for m, v in int8.items()},
    }
    assert cache.auto_runtime(static) == "onnx"  # INT8_AUTO is off
    monkeypatch.setattr(cache, "INT8_AUTO", True)
    assert cache.auto_runtime(static) == "onnx-int8"
    dynamic = {**static, "quantization": {"method": "onnxruntime.quantization.quantize_dynamic"}}
    assert cache.auto_runtime(dynamic) == "onnx"
    no_index = json.loads(json.dumps(static))
    del no_index["agreement"]["image_int8_crop"]["top1_agreement"]
    assert cache.auto_runtime(no_index) == "onnx"
    assert cache.auto_runtime({"quantization": None}) == "onnx"


def test_library_versions_need_no_import():
    code = "import sys; from taxoclip.runtime import cache; v = cache.library_versions(); "
    code += "print(sorted(v), 'torch' in sys.modules, 'importlib.metadata' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split("] ")[1].split() == ["False", "False"], done.stderr
    from importlib.metadata import version

    versions = cache.library_versions()
    assert versions["torch"] == version("torch") and versions["open_clip"] == version(
        "open_clip_torch"
    )
