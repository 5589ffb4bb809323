"""``--runtime onnx``: the same rows, errors and exit codes as torch, without importing torch.

One engine runs both, so every flag runs on both: each test here runs a mode once with
``--runtime torch`` and once on the exported folder and holds the rows equal (labels
exactly, scores to float rounding)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taxoclip.cli import main
from taxoclip.errors import InputError


@pytest.fixture(scope="module")
def exported_224(model_224, tmp_path_factory):
    from taxoclip.runtime.config import ExportOnnxConfig
    from taxoclip.runtime.export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "t224x"
    export_onnx(ExportOnnxConfig(model=str(model_224), out=str(out), int8=True))
    return out


@pytest.fixture(scope="module")
def inputs(synth_small, tmp_path_factory):
    """Real test images plus the bad ones: garbage, zero bytes, truncated, missing."""
    folder = tmp_path_factory.mktemp("onnx-inputs")
    images = sorted(str(p) for p in (synth_small / "test" / "images").rglob("*.jpg"))[:10]
    (folder / "garbage.jpg").write_bytes(b"definitely not a jpeg")
    (folder / "empty.png").write_bytes(b"")
    good = Path(images[0]).read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    return [
        *images,
        str(folder / "garbage.jpg"),
        str(folder / "empty.png"),
        str(folder / "truncated.jpg"),
        str(folder / "missing.jpg"),
    ]


def _predict(tmp_path, name, *args):
    out = tmp_path / f"{name}.csv"
    code = main(["predict", *args, "--output", str(out), "-q"])
    with out.open(newline="") as handle:
        return code, list(csv.DictReader(handle))


def _same_rows(torch_rows, onnx_rows, atol):
    assert len(torch_rows) == len(onnx_rows)
    for a, b in zip(torch_rows, onnx_rows, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if key == "score" and a[key]:
                assert float(a[key]) == pytest.approx(float(b[key]), abs=atol)
            else:
                assert a[key] == b[key], (key, a, b)


@pytest.mark.parametrize(
    "mode",
    [
        ["--rank", "species"],
        ["--rank", "family", "--k", "3"],
        ["--deepest-rank", "0.2"],
        ["--cls", "bird,fish,striped climber"],
    ],
)
def test_onnx_rows_equal_torch_rows(exported_224, index_224, inputs, tmp_path, mode, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    common = [*inputs, "--model", str(exported_224), "--index", str(index_224), *mode]
    code_torch, torch_rows = _predict(tmp_path, "torch", *common, "--runtime", "torch")
    code_onnx, onnx_rows = _predict(tmp_path, "onnx", *common)  # auto: the folder is exported
    assert code_torch == code_onnx == 3
    _same_rows(torch_rows, onnx_rows, atol=1e-5)
    errors = {r["file_name"]: r["error"] for r in onnx_rows if r.get("error")}
    assert errors[inputs[-4]] == "not a readable image"
    assert errors[inputs[-3]] == "empty file (0 bytes)"
    assert errors[inputs[-2]].startswith("truncated image")
    assert errors[inputs[-1]] == "no such file"


def test_int8_keeps_top1_on_the_tiny_model(exported_224, index_224, inputs, tmp_path):
    common = [*inputs[:10], "--model", str(exported_224), "--index", str(index_224), "--k", "1"]
    _, fp32 = _predict(tmp_path, "fp32", *common, "--runtime", "torch")
    _, int8 = _predict(tmp_path, "int8", *common, "--runtime", "onnx-int8")
    assert [r["species"] for r in fp32] == [r["species"] for r in int8]


def test_embed_equals_torch_and_all_failed_exits_1(exported_224, inputs, tmp_path):
    codes = []
    for runtime in ("torch", "onnx"):
        codes.append(
            main(
                [
                    "embed",
                    *inputs,
                    "--model",
                    str(exported_224),
                    "--runtime",
                    runtime,
                    "--output",
                    str(tmp_path / f"{runtime}.npy"),
                    "-q",
                ]
            )
        )
    assert codes == [3, 3]
    a, b = np.load(tmp_path / "torch.npy"), np.load(tmp_path / "onnx.npy")
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert (tmp_path / "torch.files.txt").read_text() == (tmp_path / "onnx.files.txt").read_text()
    bad = main(
        [
            "embed",
            *inputs[-4:],
            "--model",
            str(exported_224),
            "--output",
            str(tmp_path / "bad.npy"),
            "-q",
        ]
    )
    assert bad == 1


def test_onnx_path_imports_no_torch(exported_224, index_224, inputs, lists, tmp_path):
    """A real CLI process: predict (tree of life with every flag, and --cls) and embed,
    then sys.modules."""
    code = f"""
import json, sys
from taxoclip.cli import main
codes = [
    main(["predict", *{inputs[:3]!r}, "--model", {str(exported_224)!r},
          "--index", {str(index_224)!r}, "--output", {str(tmp_path / "p.csv")!r}, "-q"]),
    main(["predict", *{inputs[:3]!r}, "--model", {str(exported_224)!r},
          "--index", {str(index_224)!r}, "--subset", {lists["subset"]!r},
          "--region", {lists["region"]!r}, "--deny", {lists["deny"]!r},
          "--deepest-rank", "0.1", "--output", {str(tmp_path / "r.csv")!r}, "-q"]),
    main(["predict", *{inputs[:3]!r}, "--model", {str(exported_224)!r}, "--cls", "a,b",
          "--output", {str(tmp_path / "c.csv")!r}, "-q"]),
    main(["embed", *{inputs[:3]!r}, "--model", {str(exported_224)!r},
          "--output", {str(tmp_path / "e.npy")!r}, "-q"]),
]
heavy = sorted(m for m in ("torch", "torchvision", "open_clip") if m in sys.modules)
print(json.dumps({{"codes": codes, "heavy": heavy}}))
"""
    env = {"HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": "/usr/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0, 0, 0, 0], "heavy": []}


def test_custom_labels_are_cached_per_model(exported_224, inputs, tmp_path, monkeypatch):
    from taxoclip.runtime.onnx import OnnxTextEncoder
    from taxoclip.runtime.text_torch import TorchTextEncoder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls = []
    for cls in (OnnxTextEncoder, TorchTextEncoder):
        for method in ("encode_tokens", "encode_block"):  # whole captions, prefix cache
            original = getattr(cls, method)

            def counting(self, *args, _original=original, _cls=cls):
                calls.append(_cls.__name__)
                return _original(self, *args)

            monkeypatch.setattr(cls, method, counting)
    for runtime in ("onnx", "torch"):
        args = [
            *inputs[:3],
            "--model",
            str(exported_224),
            "--cls",
            "fox,owl,carp",
            "--runtime",
            runtime,
        ]
        first = _predict(tmp_path, f"{runtime}1", *args)
        n_calls = len(calls)
        assert n_calls > 0  # the first call runs the text tower
        second = _predict(tmp_path, f"{runtime}2", *args)
        assert len(calls) == n_calls  # the second reads the cache: no text tower at all
        assert first == second
        calls.clear()
    # another label set is another entry
    _predict(tmp_path, "other", *inputs[:3], "--model", str(exported_224), "--cls", "fox,owl")
    assert calls


def test_index_built_with_the_onnx_text_tower_agrees(exported_224, synth_small, tmp_path):
    for runtime in ("torch", "onnx", "onnx-int8"):
        assert (
            main(
                [
                    "index",
                    "--model",
                    str(exported_224),
                    "--taxa",
                    str(synth_small / "species.csv"),
                    "--out",
                    str(tmp_path / runtime),
                    "--runtime",
                    runtime,
                    "-q",
                ]
            )
            == 0
        )
    torch_cols = np.load(tmp_path / "torch" / "txt_emb_species.npy")
    for runtime, floor in (("onnx", 0.99999), ("onnx-int8", 0.999)):
        cols = np.load(tmp_path / runtime / "txt_emb_species.npy")
        assert (torch_cols * cols).sum(0).min() > floor
        assert (tmp_path / runtime / "txt_emb_species.json").read_text() == (
            tmp_path / "torch" / "txt_emb_species.json"
        ).read_text()


def test_bad_onnx_inputs_are_clear_errors(
    exported_224, index_224, model_224, inputs, tmp_path, capsys
):
    wrong = tmp_path / "wrong-index"
    wrong.mkdir()
    np.save(wrong / "txt_emb_species.npy", np.zeros((64, 2), np.float32))
    shutil.copy(index_224 / "txt_emb_species.json", wrong / "txt_emb_species.json")
    names = json.loads((index_224 / "txt_emb_species.json").read_text())[:2]
    (wrong / "txt_emb_species.json").write_text(json.dumps(names))
    code = main(["predict", *inputs[:2], "--model", str(exported_224), "--index", str(wrong)])
    assert code == InputError.exit_code
    assert "D=64 but model" in capsys.readouterr().err
    # --runtime onnx on a model that cannot be exported once and reused (random weights)
    random = ["--model", "taxoclip-vit-t224", "--index", str(index_224), "--runtime", "onnx"]
    code = main(["predict", *inputs[:2], *random])
    assert code == InputError.exit_code
    assert "no ONNX export (random weights" in capsys.readouterr().err
    # an export whose ONNX file went missing
    broken = tmp_path / "broken"
    shutil.copytree(exported_224, broken)
    (broken / "image_encoder.onnx").unlink()
    code = main(["embed", *inputs[:2], "--model", str(broken), "--output", str(tmp_path / "x.npy")])
    assert code == InputError.exit_code
    assert "missing image_encoder.onnx" in capsys.readouterr().err
    # ONNX runs on the CPU: asking for it on CUDA is a usage error, not a silent switch
    code = main(
        [
            "predict",
            *inputs[:2],
            "--model",
            str(exported_224),
            "--index",
            str(index_224),
            "--runtime",
            "onnx",
            "--device",
            "cuda",
        ]
    )
    assert code == 2
    assert "runs on the CPU" in capsys.readouterr().err


def test_eval_gives_the_same_results_on_onnx(exported_224, synth_small, tmp_path):
    results = {}
    for runtime in ("torch", "onnx"):
        assert (
            main(
                [
                    "eval",
                    "--model",
                    str(exported_224),
                    "--data",
                    str(synth_small / "test"),
                    "--no-baseline",
                    "--runtime",
                    runtime,
                    "--out",
                    str(tmp_path / runtime),
                    "--cache-dir",
                    str(tmp_path / f"cache-{runtime}"),
                    "-q",
                ]
            )
            == 0
        )
        results[runtime] = json.loads((tmp_path / runtime / "results.json").read_text())
    assert json.dumps(results["torch"], sort_keys=True) == json.dumps(
        results["onnx"], sort_keys=True
    )


# --------------------------------------------------------------------------- every flag


@pytest.fixture(scope="module")
def lists(synth_small, tmp_path_factory):
    """A subset, a region and a deny list, and bins, from the SynthToL species."""
    folder = tmp_path_factory.mktemp("lists")
    with (synth_small / "species.csv").open(newline="") as handle:
        species = list(csv.DictReader(handle))
    genera = sorted({row["genus"] for row in species})
    (folder / "subset.csv").write_text("genus\n" + "\n".join(genera[:3]) + "\n")
    (folder / "region.csv").write_text(
        f"genus,scientificName\n{species[0]['genus']},\n,{species[-1]['species']}\n"
    )
    (folder / "deny.csv").write_text(f"family\n{species[1]['family']}\n")
    (folder / "bins.csv").write_text("class,bin\nbird,animal\nfish,animal\nflower,plant\n")
    return {name: str(folder / f"{name}.csv") for name in ("subset", "region", "deny", "bins")}


@pytest.mark.parametrize(
    "mode",
    [
        ["--subset", "subset", "--rank", "genus", "--k", "2"],
        ["--subset", "subset", "--deepest-rank", "0.3"],
        ["--region", "region", "--k", "40"],
        ["--region", "region", "--deny", "deny", "--rank", "family"],
        ["--region", "region", "--deepest-rank", "0.05"],
        ["--deny", "deny", "--rank", "order", "--min-prob", "0.04"],
        ["--bins", "bins"],
    ],
)
def test_every_flag_gives_the_same_rows_on_onnx(
    exported_224, index_224, inputs, lists, tmp_path, mode, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    mode = [lists.get(arg, arg) for arg in mode]
    common = [*inputs, "--model", str(exported_224), "--index", str(index_224), *mode]
    code_torch, torch_rows = _predict(tmp_path, "torch", *common, "--runtime", "torch")
    code_onnx, onnx_rows = _predict(tmp_path, "onnx", *common, "--runtime", "onnx")
    assert code_torch == code_onnx == 3
    assert any("score" in row and row.get("score") for row in torch_rows)
    _same_rows(torch_rows, onnx_rows, atol=1e-4)
    if "--region" in mode and "--deepest-rank" not in mode:  # rolled up: rank_landed told
        landed = {row["rank_landed"] for row in onnx_rows if not row.get("error")}
        assert landed and "" not in landed


def test_detections_give_the_same_classifications_on_onnx(
    exported_224, index_224, synth_small, lists, tmp_path
):
    from tests.predict.composites import make_camera_trap

    md_path, _ = make_camera_trap(synth_small, tmp_path / "camera", pictures=2, per_picture=2)
    results = {}
    for runtime in ("torch", "onnx"):
        target = tmp_path / f"{runtime}.json"
        assert (
            main(
                [
                    "predict",
                    "--detections",
                    str(md_path),
                    "--image-root",
                    str(tmp_path / "camera"),
                    "--output",
                    str(target),
                    "--model",
                    str(exported_224),
                    "--index",
                    str(index_224),
                    "--region",
                    lists["region"],
                    "--runtime",
                    runtime,
                    "-q",
                ]
            )
            == 0
        )
        results[runtime] = json.loads(target.read_text())
    torch_doc, onnx_doc = results["torch"], results["onnx"]
    assert torch_doc["classification_categories"] == onnx_doc["classification_categories"]
    pairs = [
        (a.get("classifications"), b.get("classifications"))
        for image_a, image_b in zip(torch_doc["images"], onnx_doc["images"], strict=True)
        for a, b in zip(image_a["detections"], image_b["detections"], strict=True)
    ]
    assert sum(a is not None for a, _ in pairs) == 4
    for a, b in pairs:
        assert (a is None) == (b is None)
        if a is not None:
            assert [c for c, _ in a] == [c for c, _ in b]
            assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-4)
    assert onnx_doc["info"]["classifier_metadata"]["region"] == lists["region"]


def test_analyze_gives_the_same_metrics_on_onnx(exported_224, synth_small, tmp_path):
    from taxoclip.analyze import AnalyzeConfig, run

    metrics = {}
    for runtime in ("torch", "onnx"):
        run(
            AnalyzeConfig(
                model=str(exported_224),
                data=str(synth_small),
                out=str(tmp_path / runtime),
                baseline="none",
                plots=False,
                runtime=runtime,
            )
        )
        metrics[runtime] = json.loads((tmp_path / runtime / "metrics.json").read_text())

    def numbers(value, path=""):
        """Every leaf, floats apart (compared to a tolerance), the rest exactly."""
        if isinstance(value, dict):
            return [leaf for key, v in value.items() for leaf in numbers(v, f"{path}/{key}")]
        if isinstance(value, list):
            return [leaf for i, v in enumerate(value) for leaf in numbers(v, f"{path}[{i}]")]
        return [(path, value)]

    torch_leaves, onnx_leaves = numbers(metrics["torch"]), numbers(metrics["onnx"])
    assert [p for p, _ in torch_leaves] == [p for p, _ in onnx_leaves]
    for (path, a), (_, b) in zip(torch_leaves, onnx_leaves, strict=True):
        if isinstance(a, float) and isinstance(b, float):
            assert a == pytest.approx(b, abs=1e-4), path
        else:
            assert a == b, path
    assert len(torch_leaves) > 50
