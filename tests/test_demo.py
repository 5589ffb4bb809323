import json

import pytest

from taxoclip.data import ShardSet, read_shards, sample_to_record
from taxoclip.demo import DemoConfig, run
from taxoclip.demo.pipeline import QUICK
from taxoclip.errors import UsageError
from taxoclip.taxonomy import render_all


def test_quick_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    result = run(DemoConfig(out=str(out), quick=True, progress=False))
    assert result.exit_code == 0
    printed = capsys.readouterr().out + "\n".join(result.lines())
    assert "demo finished" in printed and str(out) in printed
    synth = out / "synth"
    counts = json.loads((synth / "synth.json").read_text())["counts"]
    assert counts["species"] == QUICK.synth["species"]
    assert "zero-shot top-1" in printed
    assert (out / "run" / "model" / "open_clip_model.safetensors").exists()
    assert (out / "run" / "metrics.jsonl").read_text().count("\n") >= QUICK.epochs

    # the two stages: a general model on the web captions, then the recipe from it
    stage1 = json.loads((out / "stage1" / "params.json").read_text())
    assert stage1["text_type"] == "caption" and "/web/shards/" in stage1["data"]
    stage2 = json.loads((out / "run" / "params.json").read_text())
    assert stage2["model"] == str(out / "stage1" / "model") and stage2["replay"] == stage1["data"]
    claims = json.loads((out / "claims" / "study.json").read_text())
    assert {c["verdict"] for c in claims["claims"]} <= {"holds", "does not hold", "inconclusive"}
    assert all(c["n_seeds"] in (0, 1) for c in claims["claims"]) and "one seed" in claims["note"]
    sexes = next(c for c in claims["claims"] if c["statistic"] == "separation_sex.probe_accuracy")
    assert sexes["baselines"]["untrained"] is not None and sexes["baselines"]["general"] is not None

    # trained on the curated shards: every clean training image, and the ledger balances
    stats = json.loads((out / "curated" / "stats.json").read_text())
    assert stats["records_in"] == stats["kept"] + stats["rejected"]
    assert stats["kept"] >= counts["train_images"]
    shards = ShardSet.load(out / "curated")
    samples = list(read_shards(shards))
    assert len(samples) == shards.n_samples == stats["kept"]

    results = json.loads((out / "eval" / "results.json").read_text())
    assert {row["model"] for row in results} == {"trained", "untrained"}
    metrics = json.loads((out / "analysis" / "metrics.json").read_text())
    assert "taxonomic" in metrics["metrics"]
    report = out / "report.html"
    assert printed.rstrip().endswith(f"report: {report}")
    html = report.read_text()
    assert "data:image/png;base64," in html and "http://" not in html
    assert "What the embedding space shows" in html
    assert html.index('id="claims"') < html.index("What the embedding space shows")
    # one verdict system (the claims', with the detectable effect); the stage-2 model is
    # the analysed one, the stage-1 model what it was initialised from
    assert html.count('class="verdict') == len(claims["claims"])
    assert "<th>detectable</th><th>verdict</th>" in html
    assert f'title="{out / "run" / "model"}"><div class="k">analysed model' in html
    assert f'title="{out / "stage1" / "model"}"><div class="k">initialised from' in html
    for sample in samples[:20]:
        lineage, common = sample_to_record(sample)
        if not lineage.species:
            continue  # a genus-only record (kept at genus)
        assert sample["taxonTag_com.txt"] == render_all(lineage, common)["taxonTag_com"]
        assert sample["jpg"].size == (QUICK.synth["image_size"], QUICK.synth["image_size"])
    # Shuffled for training: consecutive samples are not all one species.
    species = [sample_to_record(s)[0].genus + sample_to_record(s)[0].species for s in samples[:20]]
    assert len(set(species)) > 5


def test_demo_refuses_a_non_empty_output(tmp_path):
    (tmp_path / "keep").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        run(DemoConfig(out=str(tmp_path), quick=True, progress=False))
