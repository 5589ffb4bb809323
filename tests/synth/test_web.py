"""SynthToL's web corpus: alt-text of what is visible, never the taxonomy, with its truth."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from taxoclip.cli import main
from taxoclip.data import ShardSet, read_shards
from taxoclip.errors import UsageError
from taxoclip.synth import SynthConfig, generate
from taxoclip.synth.render import render, sample_image_params
from taxoclip.synth.web import CREST_WORDS, YOUNG_WORDS, caption_for

WEB = 400


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("web") / "synth"
    generate(out, SynthConfig(species=30, images_per_species=6, seed=3, web=WEB), progress=False)
    return out


def _words(text: str) -> set[str]:
    return set(text.lower().replace(".", " ").replace(",", " ").split())


def test_counts_shards_and_held_out_pairs(world):
    manifest = json.loads((world / "web" / "web.json").read_text())
    counts = manifest["counts"]
    assert counts["images"] == WEB and counts["test"] == WEB // 10
    assert counts["train"] == WEB - WEB // 10
    assert json.loads((world / "synth.json").read_text())["counts"]["web"] == counts
    samples = list(read_shards(ShardSet.load(world / "web" / "shards", prefix="web")))
    assert len(samples) == counts["train"]
    train = pd.read_csv(world / "web" / "train.csv", keep_default_na=False)
    by_key = train.set_index("key")
    for sample in samples:
        row = by_key.loc[sample["__key__"]]
        assert sample["txt"] == row["caption"]  # the caption is the sample's text
        assert sample["json"]["kind"] == row["kind"]
        assert sample["jpg"].size == (32, 32)
        assert "taxon.txt" not in sample  # a caption pair carries no taxonomic text
    test = pd.read_csv(world / "web" / "test.csv", keep_default_na=False)
    assert len(test) == counts["test"]
    assert all((world / "web" / "test" / p).is_file() for p in test["filepath"])
    assert counts["scenes"] == int(
        (train["kind"] == "scene").sum() + (test["kind"] == "scene").sum()
    )
    assert 0.05 < counts["scenes"] / WEB < 0.3


def test_captions_never_name_the_taxonomy(world):
    species = pd.read_csv(world / "species.csv", keep_default_na=False)
    names = set()
    for column in ("kingdom", "phylum", "class", "order", "family", "genus", "species"):
        names |= {w.lower() for v in species[column] for w in str(v).split()}
    names |= {w.lower() for v in species["common_name"] for w in str(v).split()}
    visible = {
        "crimson",
        "orange",
        "amber",
        "yellow",
        "lime",
        "green",
        "jade",
        "teal",
        "azure",
        "blue",
        "violet",
        "magenta",
        "striped",
        "spotted",
        "small",
        "large",
    }
    names -= visible  # common names are built from the look, which captions may say
    captions = pd.concat(
        [pd.read_csv(world / "web" / f"{s}.csv", keep_default_na=False) for s in ("train", "test")]
    )["caption"]
    leaked = [c for c in captions if _words(c) & names]
    assert not leaked, leaked[:5]


def test_mentions_follow_what_is_shown(world):
    rows = pd.read_csv(world / "web" / "train.csv", keep_default_na=False)
    crest = rows["caption"].str.contains("crest")
    young = rows["caption"].str.contains("|".join(YOUNG_WORDS))
    visible = rows["crest_visible"].astype(str) == "True"
    assert crest.sum() > 10 and not (crest & ~visible).any()  # named only when visible
    assert (crest == rows["mentions"].str.contains("crest")).all()
    assert not (young & (rows["life_stage"] != "juvenile")).any()
    assert young.sum() > 10
    # a crest is visible only on adult males
    shown = rows[visible]
    assert set(shown["sex"]) == {"male"} and set(shown["life_stage"]) == {"adult"}
    scenes = rows[rows["kind"] == "scene"]
    assert (scenes["species_id"] == "").all() and (scenes["mentions"] == "scene").all()


def test_caption_vocabulary():
    rng = np.random.default_rng(0)
    traits = {
        "hue": 0.4,
        "pattern": "stripes",
        "size": 0.7,
        "habitat": "marine",
        "beak_length": 0.35,
        "sex_strength": 0.8,
    }
    seen: set[str] = set()
    for _ in range(200):
        text, mentions = caption_for(rng, traits, male=True, juvenile=False, scene=4)
        seen |= set(mentions)
        assert ("crest" in text) == ("crest" in mentions)
        assert any(w in text for w in CREST_WORDS) == ("crest" in mentions)
        if "plan" in mentions:
            assert "fins" in text
    assert seen >= {"colour", "pattern", "size", "plan", "beak", "crest", "scene"}
    text, mentions = caption_for(rng, None, male=False, juvenile=False, scene=0)
    assert mentions == ["scene"] and "beach" in text


def test_scene_images_hold_no_organism():
    traits = {
        "hue": 0.1,
        "elongation": 2.0,
        "size": 0.6,
        "pattern": "none",
        "pattern_freq": 3.0,
        "beak_length": 0.2,
        "habitat": "terrestrial",
        "sex_strength": 1.0,
    }
    params = sample_image_params(traits, 2, np.random.default_rng(0), individual_variation=False)
    both = render(params, 32, np.random.default_rng(0)).astype(int)
    scene = render(params, 32, np.random.default_rng(0), organism=np.array([0.0, 1.0]))
    assert np.array_equal(scene[1], both[1])  # shown where asked
    # the plain canonical scene is a vertical gradient: every row one colour
    assert np.ptp(scene[0].astype(int), axis=1).max() <= 1
    assert np.abs(both[0] - scene[0]).sum() > 1000


def test_same_seed_same_bytes_and_taxonomic_images_unchanged(world, tmp_path):
    again = tmp_path / "again"
    generate(again, SynthConfig(species=30, images_per_species=6, seed=3, web=WEB), progress=False)
    plain = tmp_path / "plain"
    generate(plain, SynthConfig(species=30, images_per_species=6, seed=3), progress=False)

    def digest(root, pattern):
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.glob(pattern))
            if p.is_file()
        }

    assert digest(world, "web/**/*") == digest(again, "web/**/*")
    # the web corpus draws from its own random stream: the taxonomic images are the same
    assert digest(world, "train/**/*.jpg") == digest(plain, "train/**/*.jpg")


def test_too_small_a_web_corpus_is_refused(tmp_path, capsys):
    with pytest.raises(UsageError, match="--web"):
        SynthConfig(web=5)
    assert main(["synth", str(tmp_path / "x"), "--web", "3", "-q"]) == 2
    assert "--web" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
