"""SynthToL's general "web" corpus: the stand-in for LAION in the two-stage recipe.

BioCLIP 2 starts from a CLIP trained on web image–alt-text pairs and keeps replaying
them. This corpus is that for SynthToL: images of the *same* world's organisms (every
species, seen or not, in new poses) and of scenes with no organism, each with an
alt-text-like caption about what is *visible* — colour, pattern, size, fins or legs, a
long or short beak, a crest, a young animal, the scene — incomplete and varied, and never
the taxonomy (no rank name, no scientific or common name). Web captions may name the
visible variant cues ("with a white crest", "a young …"); the taxonomic shards never do.

Caption statistics (why they look like this). A pilot with long captions naming every
attribute found that a CLIP never learned the crest: easier attributes (hue, pattern)
told nearly every pair of captions in a batch apart, so the crest rarely decided a
contrast. Here each attribute is mentioned independently (so short captions that differ
in one cue are common), the variant cues are mentioned more often than the rest when
visible, and the train step counts identical captions as positives (``--caption-positives``)
because a small vocabulary repeats captions within a batch.

Layout (in ``OUT/web/``)::

    shards/web-000000.tar …   training pairs: <key>.jpg, <key>.txt (the caption), <key>.json
    train.csv                 ground truth per training pair: what is shown, what is mentioned
    test/images/…jpg          held-out pairs, for web retrieval and cue zero-shot
    test.csv                  their captions and ground truth
    web.json                  counts and the vocabulary

Randomness: one stream per (seed, WEB_STREAM, batch), independent of the taxonomic
images', so adding a web corpus changes no byte of the rest of SynthToL.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from taxoclip.errors import UsageError

from .names import hue_word
from .render import JUVENILE_SCALE, render, sample_image_params
from .seeds import WEB_STREAM, species_rng
from .tree import Species

#: Share of web images with no organism at all (scenes, as alt-text has many).
SCENE_SHARE = 0.15
#: Images rendered per batch: one species per batch (scenes use its plan, hidden), and
#: small so that the training reader's shuffle block (1,000 by default) mixes species.
BATCH = 8
#: Held-out pairs: a tenth, at most this many.
MAX_TEST = 1000
#: Probability an attribute is mentioned when it applies (variant cues more often).
MENTION = {
    "colour": 0.55,
    "pattern": 0.45,
    "size": 0.3,
    "plan": 0.45,
    "beak": 0.3,
    "crest": 0.85,
    "young": 0.85,
    "scene": 0.3,
}
SCENE_WORDS = ("beach", "grey", "meadow", "desert", "sea", "snow", "sunset", "forest")
NOUNS = ("animal", "creature", "critter", "organism")
PREFIXES = ("", "", "a photo of ", "picture of ", "image: ", "close-up of ")
PLAN_WORDS = {
    "freshwater": "with fins",
    "marine": "with fins",
    "terrestrial": "with legs",
    "arboreal": "with long limbs",
}
CREST_WORDS = ("with a white crest", "with a crest")
YOUNG_WORDS = ("young", "juvenile", "baby")
#: Columns of train.csv / test.csv (test adds ``filepath``).
COLUMNS = (
    "key",
    "caption",
    "kind",
    "species_id",
    "sex",
    "life_stage",
    "crest_visible",
    "scene",
    "mentions",
)
#: The truth each shard sample carries in its json member.
SAMPLE_META = ("kind", "species_id", "sex", "life_stage", "crest_visible", "mentions")


def crest_visible(sex_strength: float, male: bool, juvenile: bool) -> bool:
    """Whether an image shows a crest (render.py draws it for adult males of dimorphic
    species, its opacity the species' strength)."""
    return bool(male and not juvenile and sex_strength > 0)


def caption_for(
    rng: np.random.Generator, traits: dict | None, male: bool, juvenile: bool, scene: int
) -> tuple[str, list[str]]:
    """An alt-text-like caption of one image and the attributes it mentions.

    ``traits`` is a species.csv row, or None for a scene without an organism.
    """
    prefix = PREFIXES[rng.integers(len(PREFIXES))]
    scene_word = SCENE_WORDS[scene]
    if traits is None:
        text = (
            f"an empty {scene_word} scene",
            f"{scene_word} background",
            f"nothing but a {scene_word} backdrop",
        )[rng.integers(3)]
        return prefix + text, ["scene"]

    def said(attribute: str) -> bool:
        return bool(rng.random() < MENTION[attribute])

    mentions: list[str] = []
    before: list[str] = []  # adjectives, in a fixed order
    after: list[str] = []  # "with …" phrases
    if juvenile and said("young"):
        before.append(YOUNG_WORDS[rng.integers(len(YOUNG_WORDS))])
        mentions.append("young")
    length = float(traits["size"]) * (JUVENILE_SCALE if juvenile else 1.0)
    if (length < 0.45 or length > 0.62) and said("size"):
        before.append("small" if length < 0.45 else "large")
        mentions.append("size")
    pattern = str(traits["pattern"])
    if pattern != "none" and said("pattern"):
        before.append("striped" if pattern == "stripes" else "spotted")
        mentions.append("pattern")
    if said("colour"):
        before.append(hue_word(float(traits["hue"])))
        mentions.append("colour")
    if crest_visible(float(traits["sex_strength"]), male, juvenile) and said("crest"):
        after.append(CREST_WORDS[rng.integers(len(CREST_WORDS))])
        mentions.append("crest")
    if said("plan"):
        after.append(PLAN_WORDS[str(traits["habitat"])])
        mentions.append("plan")
    beak = float(traits["beak_length"])
    if (beak < 0.12 or beak > 0.3) and said("beak"):
        after.append("with a long beak" if beak > 0.3 else "with a short beak")
        mentions.append("beak")
    noun = NOUNS[rng.integers(len(NOUNS))]
    words = " ".join([*before, noun])
    article = "an" if words[0] in "aeiou" else "a"
    text = f"{article} {words}"
    if after:
        text += " " + " and ".join(p.removeprefix("with ") if i else p for i, p in enumerate(after))
    if said("scene"):
        text += f" on a {scene_word} background"
        mentions.append("scene")
    return prefix + text, mentions


def write_web_corpus(
    root: Path,
    species: list[Species],
    n_images: int,
    seed: int,
    image_size: int,
    jpeg_quality: int,
    progress: bool,
) -> dict[str, int]:
    """Write ``n_images`` web pairs into ``root / "web"`` (see the module doc); counts."""
    from taxoclip.data import ShardSample, write_shards

    web = root / "web"
    n_test = min(MAX_TEST, max(1, n_images // 10))
    n_train = n_images - n_test
    if n_train < 1:
        raise UsageError(f"--web {n_images}: a web corpus that small leaves nothing to train on")
    rows = [s.as_row() for s in species]
    (web / "test" / "images").mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(("scenes", "crest_visible", "crest_mentioned", "young_mentioned"), 0)
    # Streamed: one image's row is held at a time, whatever N is.
    with (
        (web / "train.csv").open("w", newline="", encoding="utf-8") as train_file,
        (web / "test.csv").open("w", newline="", encoding="utf-8") as test_file,
    ):
        train_csv = _csv_writer(train_file, COLUMNS)
        test_csv = _csv_writer(test_file, ("filepath", *COLUMNS))

        def samples() -> Iterator[ShardSample]:
            with tqdm(total=n_images, unit="img", desc="web", disable=not progress) as bar:
                for start in range(0, n_images, BATCH):
                    n = min(BATCH, n_images - start)
                    for i, (truth, jpg) in enumerate(
                        _web_batch(rows, seed, start, n, image_size, jpeg_quality)
                    ):
                        counts["scenes"] += truth["kind"] == "scene"
                        counts["crest_visible"] += bool(truth["crest_visible"])
                        if start + i < n_test:  # the first n_test images are held out
                            relpath = f"images/{truth['key']}.jpg"
                            (web / "test" / relpath).write_bytes(jpg)
                            test_csv.writerow({"filepath": relpath, **truth})
                            continue
                        mentioned = truth["mentions"].split(";")
                        counts["crest_mentioned"] += "crest" in mentioned
                        counts["young_mentioned"] += "young" in mentioned
                        train_csv.writerow(truth)
                        meta = {k: truth[k] for k in SAMPLE_META}
                        yield ShardSample(
                            key=truth["key"],
                            jpg=jpg,
                            lineage=None,
                            meta=meta,
                            caption=truth["caption"],
                        )
                    bar.update(n)

        per_shard = max(1, -(-n_train // max(1, min(16, n_train // 2000))))
        shards = write_shards(samples(), web / "shards", samples_per_shard=per_shard, prefix="web")
    counts = {
        "images": n_images,
        "train": n_train,
        "test": n_test,
        "shards": shards.n_shards,
        **counts,
    }
    manifest = {
        "counts": counts,
        "shards": [p.name for p in shards.paths],
        "mention_probability": MENTION,
        "scene_share": SCENE_SHARE,
        "scene_words": SCENE_WORDS,
    }
    (web / "web.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return counts


def _web_batch(
    rows: list[dict], seed: int, start: int, n: int, image_size: int, jpeg_quality: int
) -> Iterator[tuple[dict, bytes]]:
    """Images ``start .. start+n-1`` of the corpus, one species (and some empty scenes):
    (their ground-truth row, their JPEG bytes). A pure function of (seed, start)."""
    from .dataset import encode_jpeg

    rng = species_rng(seed, WEB_STREAM, start // BATCH)
    row = rows[int(rng.integers(len(rows)))]
    is_scene = rng.random(n) < SCENE_SHARE
    params = sample_image_params(row, n, rng)
    pixels = render(params, image_size, rng, organism=(~is_scene).astype(np.float32))
    for i in range(n):
        male, young, scene = bool(params.male[i]), bool(params.juvenile[i]), int(params.scene[i])
        caption, mentions = caption_for(rng, None if is_scene[i] else row, male, young, scene)
        organism = not is_scene[i]
        truth = {
            "key": f"web{start + i:07d}",
            "caption": caption,
            "kind": "organism" if organism else "scene",
            "species_id": int(row["species_id"]) if organism else "",
            "sex": ("male" if male else "female") if organism else "",
            "life_stage": ("juvenile" if young else "adult") if organism else "",
            "crest_visible": organism and crest_visible(float(row["sex_strength"]), male, young),
            "scene": scene,
            "mentions": ";".join(mentions),
        }
        yield truth, encode_jpeg(pixels[i], jpeg_quality)


def _csv_writer(handle, columns: tuple[str, ...]) -> csv.DictWriter:
    writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    return writer
