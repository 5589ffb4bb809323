"""``taxoclip list-models`` and ``list-tol-taxa`` (pybioclip's output), and per-model index
files ``txt_emb_<model>.{npy,json}`` found beside the default ones."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest

from taxoclip.cli import main
from taxoclip.predict import TextIndex
from taxoclip.runtime.index import index_files, model_slug


def test_list_models_as_pybioclip(capsys):
    assert main(["list-models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["\thf-hub:imageomics/bioclip", "\thf-hub:imageomics/bioclip-2"]
    assert "\tViT-B-16" in lines and "\ttaxoclip-vit-t32" in lines
    assert main(["list-models", "--model", "ViT-B-16"]) == 0
    assert "openai" in capsys.readouterr().out.split()
    assert main(["list-models", "--model", "No-Such-Model"]) == 2


def test_list_tol_taxa_has_pybioclips_columns(index_224, synth_small, capsys, tmp_path):
    from bioclip.predict import Rank, create_classification_dict

    assert main(["list-tol-taxa", "--index", str(index_224)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    names = json.loads((index_224 / "txt_emb_species.json").read_text())
    expected = [create_classification_dict(names=entry, rank=Rank.SPECIES) for entry in names]
    assert list(rows[0]) == list(expected[0])  # the same nine columns, in the same order
    assert rows == [{k: str(v) for k, v in row.items()} for row in expected]
    out = tmp_path / "taxa.csv"
    assert main(["list-tol-taxa", "--index", str(index_224), "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == len(names) + 1
    assert main(["list-tol-taxa", "--model", "taxoclip-vit-t32"]) == 2  # no published index


def test_per_model_index_files_beside_the_default(index_224, tmp_path):
    assert model_slug("hf-hub:imageomics/bioclip-2") == "bioclip-2"
    assert model_slug("/runs/r7/model") == "r7" and model_slug("/models/t224/") == "t224"
    folder = tmp_path / "idx"
    shutil.copytree(index_224, folder)
    default = TextIndex.load(folder, model="t224")
    # the model's own files: a different matrix (3 taxa) and names
    array = np.load(folder / "txt_emb_species.npy")[:, :3]
    np.save(folder / "txt_emb_t224.npy", array)
    names = json.loads((folder / "txt_emb_species.json").read_text())[:3]
    (folder / "txt_emb_t224.json").write_text(json.dumps(names))
    assert index_files(folder, "t224") == (
        folder / "txt_emb_t224.npy",
        folder / "txt_emb_t224.json",
    )
    own = TextIndex.load(folder, model="/somewhere/t224")
    assert len(own) == 3 and own.names == names and len(default) == 20  # synth_small: 20
    assert len(TextIndex.load(folder, model="other")) == len(default)  # falls back
    (folder / "txt_emb_t224.json").unlink()  # a model's matrix with the default names
    with pytest.raises(Exception, match="txt_emb_t224.npy has N=3 columns"):
        TextIndex.load(folder, model="t224")
