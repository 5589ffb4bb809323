import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from taxoclip.errors import InputError, UsageError
from taxoclip.predict import Rank, TextIndex, TreeOfLifeClassifier, collect_images
from taxoclip.predict.index import taxon_text
from taxoclip.runtime.index import NPY_FILE
from taxoclip.runtime.scoring import group_sums
from taxoclip.runtime.templates import OPENAI_IMAGENET_TEMPLATES


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "taxoclip", *args, "-q"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


@pytest.fixture(scope="module")
def classifier(model_224, index_224):
    return TreeOfLifeClassifier(model_str=str(model_224), index=index_224)


@pytest.fixture(scope="module")
def test_images(synth_small):
    return sorted(str(p) for p in (synth_small / "test" / "images").rglob("*.jpg"))


def test_rollup_equals_a_loop_over_taxa():
    rng = np.random.default_rng(0)
    names = [
        [
            [
                "K" + str(i % 2),
                "P",
                "" if i % 3 else "C",
                "O" + str(i % 4),
                "F",
                "G" + str(i % 5),
                f"s{i}",
            ],
            "",
        ]
        for i in range(40)
    ]
    index = TextIndex(np.zeros((4, 40), np.float32), names)
    probs = rng.dirichlet(np.ones(40), size=3).astype(np.float32)
    for rank in Rank:
        group, labels = index.rollup(rank)
        summed = group_sums(probs, group, len(labels))
        for image in range(3):
            reference = {}
            for taxon, (ranks, _) in enumerate(names):
                key = tuple(ranks[: rank + 1])
                reference[key] = reference.get(key, 0.0) + float(probs[image, taxon])
            assert {
                labels[j]: float(summed[image, j]) for j in range(len(labels))
            } == pytest.approx(reference)


def test_higher_ranks_sum_species_probabilities(classifier, test_images):
    species = classifier.predict(test_images[:4], Rank.SPECIES, k=len(classifier.index))
    family = classifier.predict(test_images[:4], "family", k=3)
    for row in family:
        mass = sum(
            r["score"]
            for r in species
            if r["file_name"] == row["file_name"]
            and r["family"] == row["family"]
            and r["order"] == row["order"]
        )
        assert row["score"] == pytest.approx(mass, abs=1e-5)
    assert list(family[0]) == [
        "file_name",
        "kingdom",
        "phylum",
        "class",
        "order",
        "family",
        "score",
    ]


def test_index_files_follow_pybioclips_format(model_224, synth_small, tmp_path):
    done = cli(
        "index",
        "--model",
        str(model_224),
        "--taxa",
        str(synth_small / "species.csv"),
        "--out",
        str(tmp_path / "idx"),
        "--dtype",
        "float16",
    )
    assert done.returncode == 0, done.stderr
    array = np.load(tmp_path / "idx" / NPY_FILE)
    names = json.loads((tmp_path / "idx" / "txt_emb_species.json").read_text())
    assert array.dtype == np.float16 and array.shape == (128, 20) and len(names) == 20
    assert np.allclose(np.linalg.norm(array.astype(np.float32), axis=0), 1.0, atol=2e-3)
    first = next(csv.DictReader((synth_small / "species.csv").open()))
    assert names[0] == [
        [
            first[k]
            for k in ("kingdom", "phylum", "class", "order", "family", "genus", "species_epithet")
        ],
        first["common_name"],
    ]


def test_index_column_is_the_template_average(model_224, index_224):
    from taxoclip.models import load_model

    loaded = load_model(model_224)
    index = TextIndex.load(index_224)
    ranks, common = index.names[3]
    with torch.no_grad():
        texts = [t.format(taxon_text(ranks, common)) for t in OPENAI_IMAGENET_TEMPLATES]
        features = loaded.model.encode_text(loaded.tokenizer(texts))
        features = features / features.norm(dim=-1, keepdim=True)
        mean = features.mean(dim=0)
    np.testing.assert_allclose(index.embeddings[:, 3], (mean / mean.norm()).numpy(), atol=1e-5)


def test_bad_images_get_error_rows_and_exit_3(model_224, index_224, test_images, tmp_path):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(Path(test_images[0]).read_bytes()[:200])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not an image")
    inputs = [
        test_images[0],
        str(truncated),
        str(tmp_path / "empty.jpg"),
        str(tmp_path / "text.jpg"),
        str(tmp_path / "missing.jpg"),
        test_images[1],
    ]
    out = tmp_path / "pred.csv"
    done = cli(
        "predict",
        *inputs,
        "--model",
        str(model_224),
        "--index",
        str(index_224),
        "--k",
        "2",
        "--output",
        str(out),
    )
    assert done.returncode == 3, done.stderr
    rows = list(csv.DictReader(out.open()))
    errors = {r["file_name"]: r["error"] for r in rows if r["error"]}
    assert errors == {
        str(truncated): errors[str(truncated)],
        str(tmp_path / "empty.jpg"): "empty file (0 bytes)",
        str(tmp_path / "text.jpg"): "not a readable image",
        str(tmp_path / "missing.jpg"): "no such file",
    }
    assert "truncated" in errors[str(truncated)] or "image" in errors[str(truncated)]
    good = [r for r in rows if not r["error"]]
    assert [r["file_name"] for r in good] == [test_images[0]] * 2 + [test_images[1]] * 2
    assert "4 of 6 images failed" in done.stderr
    only_bad = cli(
        "predict", str(tmp_path / "text.jpg"), "--model", str(model_224), "--index", str(index_224)
    )
    assert only_bad.returncode == 1


def test_index_that_disagrees_is_refused_with_both_numbers(model_224, index_224, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    np.save(broken / NPY_FILE, np.load(index_224 / NPY_FILE)[:, :5])
    (broken / "txt_emb_species.json").write_text((index_224 / "txt_emb_species.json").read_text())
    with pytest.raises(InputError, match=r"N=5 columns but txt_emb_species.json lists 20 taxa"):
        TextIndex.load(broken)
    narrow = tmp_path / "narrow"
    index = TextIndex.load(index_224)
    TextIndex(index.embeddings[:64], index.names).save(narrow)
    with pytest.raises(InputError, match=r"D=64 but model .* produces D=128"):
        TreeOfLifeClassifier(model_str=str(model_224), index=narrow)


def test_deepest_rank_is_the_deepest_that_clears_the_threshold(classifier, test_images):
    threshold = 0.2
    rows = classifier.predict_deepest(test_images[:6], threshold)
    order = list(Rank)
    for row in rows:
        probs = classifier.predict(row["file_name"], Rank.SPECIES, k=len(classifier.index))
        assert row["rank"] in [r.get_label() for r in Rank]
        rank = Rank.parse(row["rank"])
        assert row["score"] >= threshold
        if rank is not Rank.SPECIES:
            deeper = order[order.index(rank) + 1]
            best = classifier.predict(row["file_name"], deeper, k=1)[0]["score"]
            assert best < threshold
        assert probs  # the image was readable


def test_subset_restricts_the_tree(classifier, model_224, index_224, test_images, tmp_path):
    genera = sorted({n[0][5] for n in classifier.full_index.names})[:2]
    subset = tmp_path / "subset.csv"
    subset.write_text("genus\n" + "\n".join(genera) + "\n")
    done = cli(
        "predict",
        *test_images[:3],
        "--model",
        str(model_224),
        "--index",
        str(index_224),
        "--subset",
        str(subset),
        "--format",
        "json",
    )
    assert done.returncode == 0, done.stderr
    assert {r["genus"] for r in json.loads(done.stdout)} <= set(genera)
    with pytest.raises(UsageError, match="Unknown genus received: Nonexistus"):
        classifier.create_taxa_filter(Rank.GENUS, ["Nonexistus"])


def test_embed_writes_npy_parquet_and_pybioclip_json(model_224, test_images, tmp_path):
    inputs = test_images[:3] + [str(tmp_path / "missing.jpg")]
    for name in ("e.npy", "e.parquet", "e.json"):
        done = cli("embed", *inputs, "--model", str(model_224), "--output", str(tmp_path / name))
        assert done.returncode == 3, done.stderr
    array = np.load(tmp_path / "e.npy")
    keys = (tmp_path / "e.files.txt").read_text().split()
    assert array.shape == (3, 128) and keys == test_images[:3]
    table = pq.read_table(tmp_path / "e.parquet").to_pydict()
    assert table["file_name"] == keys and np.allclose(
        np.array(table["embedding"]), array, atol=1e-6
    )
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["model"] == str(model_224) and np.allclose(
        np.array(list(data["embeddings"].values())), array, atol=1e-6
    )
    assert not np.allclose(np.linalg.norm(array, axis=1), 1.0)  # raw features, as pybioclip
    done = cli(
        "embed",
        *test_images[:2],
        "--model",
        str(model_224),
        "--output",
        str(tmp_path / "n.npy"),
        "--normalize",
    )
    assert np.allclose(np.linalg.norm(np.load(tmp_path / "n.npy"), axis=1), 1.0, atol=1e-5)


def test_inputs_from_directories_and_globs(synth_small, tmp_path):
    test_dir = synth_small / "test" / "images"
    pattern = str(synth_small / "train" / "images" / "s0000" / "*.jpg")
    images = collect_images([test_dir, pattern])
    expected = sorted(map(str, test_dir.rglob("*.jpg"))) + sorted(
        map(str, (synth_small / "train" / "images" / "s0000").glob("*.jpg"))
    )
    assert images == expected and len(images) > 20
    with pytest.raises(UsageError, match="matches no files"):
        collect_images([str(tmp_path / "*.png")])


def test_provenance_log(model_224, index_224, test_images, tmp_path):
    log = tmp_path / "run.json"
    done = cli(
        "predict",
        test_images[0],
        "--model",
        str(model_224),
        "--index",
        str(index_224),
        "--log",
        str(log),
        "--output",
        str(tmp_path / "p.csv"),
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(log.read_text())
    assert record["model"] == str(model_224) and record["n_images"] == 1 and record["n_failed"] == 0
    again = cli(
        "predict",
        test_images[0],
        "--model",
        str(model_224),
        "--index",
        str(index_224),
        "--log",
        str(log),
    )
    assert again.returncode == 2 and "already exists" in again.stderr
