import json

import pytest

from taxoclip.data import ShardSet, read_shards, sample_to_record
from taxoclip.demo import QUICK, run_demo
from taxoclip.errors import UsageError
from taxoclip.taxonomy import render_all


def test_quick_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run_demo(out, quick=True, progress=False) == 0
    printed = capsys.readouterr().out
    assert "demo finished" in printed and str(out) in printed
    synth = out / "synth"
    counts = json.loads((synth / "synth.json").read_text())["counts"]
    assert counts["species"] == QUICK.synth.species
    assert "zero-shot top-1" in printed
    assert (out / "run" / "model" / "open_clip_model.safetensors").exists()
    assert (out / "run" / "metrics.jsonl").read_text().count("\n") >= QUICK.epochs

    shards = ShardSet.load(synth / "shards")
    assert shards.n_shards == QUICK.synth.shards and shards.n_samples == counts["train_images"]
    samples = list(read_shards(shards))
    assert len(samples) == counts["train_images"]
    for sample in samples[:20]:
        lineage, common = sample_to_record(sample)
        assert sample["taxonTag_com.txt"] == render_all(lineage, common)["taxonTag_com"]
        assert sample["jpg"].size == (QUICK.synth.image_size, QUICK.synth.image_size)
    # Shuffled for training: consecutive samples are not all one species.
    species = [s["json"]["species_id"] for s in samples[:20]]
    assert len(set(species)) > 5


def test_demo_refuses_a_non_empty_output(tmp_path):
    (tmp_path / "keep").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        run_demo(tmp_path, quick=True, progress=False)
