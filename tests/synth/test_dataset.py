import csv
import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taxoclip.errors import UsageError
from taxoclip.synth import SynthConfig, generate
from taxoclip.synth.tree import FINCH_BEAK_RANGE

SMALL = SynthConfig(species=60, images_per_species=6, image_size=32, seed=3, shards=3, preview=True)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "small"
    generate(out, SMALL, progress=False)
    return out


def test_same_seed_gives_byte_identical_output(small, tmp_path):
    again = tmp_path / "again"
    generate(again, SMALL, progress=False)
    assert tree_digest(again) == tree_digest(small)
    other = tmp_path / "other"
    generate(other, SynthConfig(**{**SMALL.__dict__, "seed": 4}), progress=False)
    assert tree_digest(other)["species.csv"] != tree_digest(small)["species.csv"]


def test_layout_and_counts(small):
    manifest = json.loads((small / "synth.json").read_text())
    assert manifest["config"]["species"] == 60
    species = read_csv(small / "species.csv")
    images = read_csv(small / "images.csv")
    assert len(species) == 60 and len(images) == 60 * 6
    assert manifest["counts"]["train_images"] + manifest["counts"]["test_images"] == len(images)
    assert (small / "preview.png").exists()
    assert sorted(p.name for p in (small / "shards").glob("*.tar")) == [
        "shard-000000.tar",
        "shard-000001.tar",
        "shard-000002.tar",
    ]
    sizes = json.loads((small / "shards" / "sizes.json").read_text())
    assert sum(sizes.values()) == manifest["counts"]["train_images"]
    assert not list(small.parent.glob(".small.*"))  # no temporary left


def test_splits_hold_out_images_and_whole_species(small):
    species = {r["species_id"]: r for r in read_csv(small / "species.csv")}
    images = read_csv(small / "images.csv")
    by_split: dict[str, Counter] = defaultdict(Counter)
    for row in images:
        by_split[row["split"]][row["species_id"]] += 1
    unseen = {sid for sid, r in species.items() if r["seen"] == "False"}
    assert len(unseen) == 6  # 10 % of 60
    for sid in species:
        if sid in unseen:
            assert by_split["train"][sid] == 0 and by_split["test"][sid] == 6
        else:
            assert by_split["train"][sid] == 5 and by_split["test"][sid] == 1
    test_meta = read_csv(small / "test" / "metadata.csv")
    assert {r["seen"] for r in test_meta} == {"True", "False"}


def test_metadata_is_an_evaluation_folder(small):
    species = {r["species_id"]: r for r in read_csv(small / "species.csv")}
    for split in ("train", "test"):
        rows = read_csv(small / split / "metadata.csv")
        assert rows and list(rows[0])[:2] == ["filepath", "class"]
        for row in rows[:: max(1, len(rows) // 25)]:
            sp = species[row["species_id"]]
            assert row["class"] == f"{sp['genus']} {sp['species_epithet']}" == row["species"]
            assert row["class_"] == sp["class"]
            with Image.open(small / split / row["filepath"]) as image:
                assert image.format == "JPEG" and image.size == (32, 32) and image.mode == "RGB"


def test_names_unique_per_rank_and_binomial(small):
    species = read_csv(small / "species.csv")
    ranks = ("kingdom", "phylum", "class", "order", "family", "genus")
    parents: dict[str, dict[str, str]] = {rank: {} for rank in ranks}
    for row in species:
        for depth, rank in enumerate(ranks[1:], start=1):
            # A name at one rank always has the same parent: names are unique per rank.
            parent = row[ranks[depth - 1]]
            assert parents[rank].setdefault(row[rank], parent) == parent
        assert row["genus"][0].isupper() and row["species_epithet"].islower()
    assert len({r["species"] for r in species}) == len(species)
    commons = [r["common_name"] for r in species if r["common_name"]]
    assert len(commons) == len(set(commons)) and len(commons) >= 0.8 * len(species)


def test_relatives_look_alike_and_the_finch_genus_varies_in_beak(tmp_path):
    from taxoclip.synth.tree import build_tree

    species = build_tree(300, np.random.default_rng(0))
    hue = np.array([s.hue for s in species])
    genus = [s.lineage.genus for s in species]
    kingdom = [s.lineage.kingdom for s in species]

    def hue_gap(i, j):
        d = abs(hue[i] - hue[j])
        return min(d, 1 - d)

    pairs = [(i, j) for i in range(300) for j in range(i + 1, 300)]
    same_genus = np.mean([hue_gap(i, j) for i, j in pairs if genus[i] == genus[j]])
    other_kingdom = np.mean([hue_gap(i, j) for i, j in pairs if kingdom[i] != kingdom[j]])
    assert same_genus < 0.5 * other_kingdom

    finches = [s for s in species if s.is_finch]
    assert len(finches) == 24 and len({s.lineage.genus for s in finches}) == 1
    beaks = sorted(s.beak_length for s in finches)
    assert beaks[0] == pytest.approx(FINCH_BEAK_RANGE[0]) and beaks[-1] == pytest.approx(
        FINCH_BEAK_RANGE[1]
    )
    # Beak is what varies: its spread dwarfs the spread of the other continuous traits.
    for trait in ("elongation", "size", "pattern_freq"):
        values = np.array([getattr(s, trait) for s in finches])
        assert values.std() / values.mean() < 0.25 * np.std(beaks) / np.mean(beaks)


def test_habitats_converge_across_clades():
    from taxoclip.synth.tree import HABITATS, build_tree

    species = build_tree(300, np.random.default_rng(0))
    orders_by_habitat = defaultdict(set)
    for s in species:
        orders_by_habitat[s.habitat].add(s.lineage.order)
    assert set(orders_by_habitat) == set(HABITATS)
    # Convergence: each habitat arises in several unrelated orders.
    assert all(len(orders) >= 3 for orders in orders_by_habitat.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"species": 0}, "--species must be at least 1"),
        ({"images_per_species": 1}, "--images-per-species must be at least 2"),
        ({"image_size": 8}, "--image-size must be between 16 and 512"),
        ({"seed": -1}, "--seed must be non-negative"),
        ({"species": 3, "images_per_species": 2, "shards": 4}, "more than the 3 training images"),
    ],
)
def test_impossible_parameters_write_nothing(tmp_path, kwargs, message):
    out = tmp_path / "out"
    with pytest.raises(UsageError, match=message):
        generate(out, SynthConfig(**kwargs), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unusable_output_locations(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="is not empty"):
        generate(busy, SynthConfig(species=2, images_per_species=2), progress=False)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        generate(a_file, SynthConfig(species=2, images_per_species=2), progress=False)
    with pytest.raises(UsageError, match="cannot write output directory"):
        generate(a_file / "sub", SynthConfig(species=2, images_per_species=2), progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    generate(empty, SynthConfig(species=2, images_per_species=2), progress=False)
    assert (empty / "species.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "empty", "file"]


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    import taxoclip.synth.dataset as gen

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gen, "encode_jpeg", broken)
    with pytest.raises(OSError, match="No space left"):
        generate(tmp_path / "out", SynthConfig(species=4, images_per_species=2), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_run_builds_config_out_and_says_what_the_cli_says(tmp_path, small):
    from dataclasses import replace

    from taxoclip.synth import run

    out = tmp_path / "ran"
    result = run(replace(SMALL, out=str(out), progress=False))
    assert tree_digest(out) == tree_digest(small)  # where it goes does not change the files
    assert result.lines() == [
        f"SynthToL written to {out}: 60 species ({result.n_unseen_species} unseen in "
        f"training), {result.n_train} train and {result.n_test} test images",
        f"training shards: {out.absolute()}/shards/shard-{{000000..000002}}.tar",
        f"preview: {out / 'preview.png'}",
    ]
    with pytest.raises(UsageError, match="output directory"):
        run(SMALL)
