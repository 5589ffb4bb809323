"""The web scores of evaluate/web.py on a real (tiny) web corpus and a real model."""

import numpy as np
import pandas as pd
import pytest
import torch

from taxoclip.errors import InputError
from taxoclip.evaluate.features import image_features
from taxoclip.evaluate.web import WEB_KEYS, web_scores
from taxoclip.models import load_model
from taxoclip.synth import SynthConfig, generate
from tests.helpers import saved_model


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("webscores") / "synth"
    generate(out, SynthConfig(species=20, images_per_species=4, seed=5, web=300), progress=False)
    return out


def test_scores_match_an_independent_computation(world, tmp_path):
    loaded = load_model(str(saved_model(tmp_path / "m", seed=2)))
    scores = web_scores(loaded, world / "web")
    test = pd.read_csv(world / "web" / "test.csv", keep_default_na=False)
    assert scores["web.n_test"] == len(test) == 30
    captions = sorted(set(test["caption"]))
    assert scores["web.retrieval_chance"] == pytest.approx(1 / len(captions))
    # retrieval recomputed here: encode, compare, count where the own caption ranks
    _, images = image_features(
        loaded, [str(world / "web" / "test" / p) for p in test["filepath"]]
    ).full(len(test))
    with torch.inference_mode():
        texts = loaded.model.encode_text(loaded.tokenizer(captions)).float()
        texts = torch.nn.functional.normalize(texts, dim=-1).numpy()
    sims = images @ texts.T
    own = sims[np.arange(len(test)), [captions.index(c) for c in test["caption"]]]
    rank = (sims > own[:, None]).sum(axis=1)
    assert scores["web.retrieval_top1"] == pytest.approx(np.mean(rank == 0))
    assert scores["web.retrieval_r5"] == pytest.approx(np.mean(rank < 5))
    for key in WEB_KEYS:
        assert scores[key] is None or 0.0 <= scores[key] <= 1.0


def test_a_folder_without_a_web_corpus_is_named(tmp_path):
    loaded = load_model(str(saved_model(tmp_path / "m")))
    with pytest.raises(InputError, match="synth --web"):
        web_scores(loaded, tmp_path)
