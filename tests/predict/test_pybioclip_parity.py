"""Agreement with pybioclip itself: same model, same index files, same images.

pybioclip's tree-of-life mode only accepts ``hf-hub:imageomics/bioclip-2``, so a tiny
224-px model and an index built by ``taxoclip index`` are staged under that name in a
local Hugging Face cache and both tools run offline against it. pybioclip runs with
``TORCH_COMPILE_DISABLE=1`` (its ``torch.compile`` only changes start-up time here).
"""

import json
import os
import subprocess
import sys

import pytest

from taxoclip.models.hubcache import place_index, place_model_folder

pytest.importorskip("bioclip", reason="pybioclip is a test dependency (pip install -e '.[dev]')")

PYBIOCLIP = r"""
import json, sys
from bioclip import CustomLabelsClassifier, Rank, TreeOfLifeClassifier
images, model_dir, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
tol = TreeOfLifeClassifier(device="cpu")
custom = CustomLabelsClassifier(cls_ary=["fish", "bird", "lizard"], model_str="local-dir:" + model_dir)
json.dump({
    "species": tol.predict(images, Rank.SPECIES, k=3),
    "genus": tol.predict(images, Rank.GENUS, k=3),
    "custom": custom.predict(images),
    "labels": tol.get_label_data().to_dict(orient="records"),
}, open(out, "w"))
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory, model_224, index_224):
    hf_home = tmp_path_factory.mktemp("hf")
    place_model_folder(hf_home, "imageomics/bioclip-2", model_224)
    place_index(hf_home, "imageomics/TreeOfLife-200M", index_224)
    return hf_home


def _env(hf_home):
    return {
        **os.environ,
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "TORCH_COMPILE_DISABLE": "1",
    }


def _ours(hub, *args):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "taxoclip",
            "predict",
            *args,
            "--format",
            "json",
            "-q",
            "--offline",
            "--workers",
            "0",
        ],
        capture_output=True,
        text=True,
        env=_env(hub),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _by_image(rows):
    grouped = {}
    for row in rows:
        grouped.setdefault(row["file_name"], []).append(row)
    return grouped


def _assert_agree(ours, theirs, label_keys):
    ours, theirs = _by_image(ours), _by_image(theirs)
    assert ours.keys() == theirs.keys()
    for image in theirs:
        a, b = ours[image], theirs[image]
        assert len(a) == len(b)
        assert [r[k] for k in label_keys for r in a[:1]] == [
            r[k] for k in label_keys for r in b[:1]
        ], image
        for mine, ref in zip(a, b, strict=True):
            assert abs(mine["score"] - ref["score"]) < 1e-4, (image, mine, ref)


def test_same_predictions_as_pybioclip(hub, synth_small, model_224, tmp_path):
    images = sorted(str(p) for p in (synth_small / "test" / "images").rglob("*.jpg"))[:24]
    out = tmp_path / "pybioclip.json"
    subprocess.run(
        [sys.executable, "-c", PYBIOCLIP, json.dumps(images), str(model_224), str(out)],
        check=True,
        env=_env(hub),
        timeout=600,
    )
    theirs = json.loads(out.read_text())

    species = _ours(hub, *images, "--k", "3")
    _assert_agree(species, theirs["species"], ["species", "common_name"])
    assert list(species[0]) == list(theirs["species"][0])  # same columns, same order
    genus = _ours(hub, *images, "--rank", "genus", "--k", "3")
    _assert_agree(genus, theirs["genus"], ["genus", "family"])
    custom = _ours(hub, *images, "--cls", "fish,bird,lizard", "--model", str(model_224))
    _assert_agree(custom, theirs["custom"], ["classification"])

    from taxoclip.predict import TreeOfLifeClassifier

    ours_labels = TreeOfLifeClassifier(
        model_str=str(model_224),
        index=hub
        / "hub"
        / "datasets--imageomics--TreeOfLife-200M"
        / "snapshots"
        / ("0" * 40)
        / "embeddings",
    )
    assert ours_labels.get_label_data().to_dict(orient="records") == theirs["labels"]
