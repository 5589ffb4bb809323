import pytest

from taxoclip.synth import SynthConfig, generate
from tests.helpers import saved_model


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory):
    out = tmp_path_factory.mktemp("predict-data") / "synth"
    generate(
        out, SynthConfig(species=20, images_per_species=4, image_size=48, seed=2), progress=False
    )
    return out


@pytest.fixture(scope="session")
def model_224(tmp_path_factory):
    """A tiny 224-px model folder (pybioclip's tree-of-life preprocessing is fixed at 224)."""
    return saved_model(tmp_path_factory.mktemp("models") / "t224", "taxoclip-vit-t224")


@pytest.fixture(scope="session")
def index_224(model_224, synth_small, tmp_path_factory):
    from taxoclip.predict import build_index, read_taxa
    from taxoclip.runtime import open_text_encoder

    text = open_text_encoder(str(model_224), "torch")
    index = build_index(text, read_taxa(synth_small / "species.csv"))
    return index.save(tmp_path_factory.mktemp("index") / "t224")
