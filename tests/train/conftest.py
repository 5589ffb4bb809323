import pytest

from taxoclip.synth import SynthConfig, generate

TINY = SynthConfig(species=24, images_per_species=8, image_size=32, seed=5, shards=2)


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    """A small SynthToL with two training shards (real JPEGs, real tars)."""
    out = tmp_path_factory.mktemp("train-data") / "synth"
    generate(out, TINY, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_shards(tiny_synth):
    return str(tiny_synth / "shards" / "shard-{000000..000001}.tar")
