"""``taxoclip report``: one self-contained HTML file from hand-made inputs."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from taxoclip.cli import main
from taxoclip.errors import InputError
from taxoclip.report import detect_inputs, write_report
from taxoclip.report.html import metric_sentence

SECTIONS = ("summary", "curation", "training", "eval", "analysis", "findings", "plots")


def _stat(value, base, mean, sd, verdict, higher=True):
    return {
        "value": value,
        "baseline_value": base,
        "null": {"mean": mean, "sd": sd},
        "higher_is_better": higher,
        "verdict": verdict,
    }


def _analysis(folder: Path) -> Path:
    (folder / "plots").mkdir(parents=True)
    metrics = {
        "format_version": 1,
        "model": "run",
        "baseline": "untrained twin",
        "split": "test",
        "verdict_basis": "one seed <b>screen</b>",
        "metrics": {
            "trait_hue": {
                "kind": "trait_alignment",
                "trait": "hue",
                "description": "hue vs PC1 <script>alert(1)</script>",
                "stats": {
                    "pc1_spearman": _stat(0.68, 0.34, 0.21, 0.03, "holds"),
                    "ridge_r2": _stat(0.48, 0.05, -0.4, 0.1, "holds"),
                },
            },
            "taxonomic": {
                "kind": "taxonomic_alignment",
                "description": "distance vs taxonomy",
                "stats": {"spearman": _stat(0.04, 0.039, 0.0, 0.004, "inconclusive")},
            },
            "orthogonality_sex": {
                "kind": "orthogonality",
                "description": "delta outside species span",
                "stats": {"fraction_outside": _stat(0.85, 0.83, 0.91, 0.02, "does not hold")},
            },
            "effective_dimension": {
                "kind": "effective_dimension",
                "description": "participation ratio",
                "stats": {
                    "images": {"value": 5.3, "baseline_value": 4.6, "null": None, "verdict": None}
                },
            },
        },
        "skipped": {"trait_finch_beak_length": "no is_finch column"},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "analysis.json").write_text(json.dumps({"n_images": 120, "n_species": 10}))
    Image.new("RGB", (40, 30), (200, 30, 30)).save(folder / "plots" / "tsne.png")
    return folder


def _run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(
        json.dumps({"model": "taxoclip-vit-t32", "epochs": 2, "global_batch": 8, "lr": 5e-4})
    )
    lines = [
        {"step": s, "epoch": s / 10, "loss": 5.0 - 0.1 * s, "lr": 1e-4, "logit_scale": 14.0}
        for s in range(0, 20, 2)
    ]
    lines.append({"step": 19, "val_zeroshot_top1": 0.25})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder


def _eval(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rows = [
        {
            "suite": "synth",
            "task": "species",
            "metric": "top1",
            "value": 0.6,
            "model": "trained",
            "n": 50,
        },
        {
            "suite": "synth",
            "task": "species",
            "metric": "top1",
            "value": 0.02,
            "model": "untrained",
            "n": 50,
        },
    ]
    (folder / "results.json").write_text(json.dumps(rows))
    return folder


def _curation(folder: Path) -> Path:
    folder.mkdir(parents=True)
    stats = {
        "records_in": 100,
        "kept": 90,
        "rejected": 10,
        "rejected_by_stage": {"names": 4, "dedup": 6},
        "rejected_by_reason": {"dedup: exact": 6, "names: unknown": 4},
        "invariant": "100 in = 90 kept + 10 rejected",
    }
    (folder / "stats.json").write_text(json.dumps(stats))
    return folder


@pytest.fixture()
def all_inputs(tmp_path: Path) -> list[Path]:
    return [
        _analysis(tmp_path / "an"),
        _run(tmp_path / "run"),
        _eval(tmp_path / "ev"),
        _curation(tmp_path / "cur"),
    ]


def _images(html: str) -> list[str]:
    return re.findall(r'src="([^"]*)"', html)


def test_report_is_self_contained(all_inputs: list[Path], tmp_path: Path) -> None:
    out = write_report(all_inputs, tmp_path / "r" / "report.html")
    html = out.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'id="{section}"' in html
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "<link" not in html
    srcs = _images(html)
    assert len(srcs) == 2  # training curves + tsne.png
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        image.load()
        assert image.size[0] > 0
    assert "Not available" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # no claims given: no verdict anywhere; the analysis' one-seed screen is not shown
    assert "screen&lt;/b&gt;" not in html and 'class="verdict' not in html
    assert "does not hold" not in html and "inconclusive" not in html
    assert "a verdict is given to the paper&#x27;s claims alone" in html
    assert "0.0200" in html  # eval baseline beside the trained value
    assert "no is_finch column" in html


def test_missing_parts_are_listed(tmp_path: Path) -> None:
    out = write_report([_run(tmp_path / "run")], tmp_path / "report.html")
    html = out.read_text()
    assert "Not available: curation stats, evaluation results, analysis." in html
    for section in SECTIONS[:-2] + ("plots",):
        assert f'id="{section}"' in html


def test_no_inputs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        detect_inputs([tmp_path])
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) != 0


def test_detect_and_cli(all_inputs: list[Path], tmp_path: Path, capsys) -> None:
    found = detect_inputs(all_inputs)
    assert (found.analysis, found.run, found.eval, found.curation) == tuple(all_inputs)
    out = tmp_path / "cli.html"
    assert main(["report", *map(str, all_inputs), "--out", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out


def test_sentence_from_numbers() -> None:
    metric = {
        "kind": "trait_alignment",
        "trait": "hue",
        "stats": {"pc1_spearman": _stat(0.68, 0.34, 0.21, 0.03, "holds")},
    }
    sentence = metric_sentence("trait_hue", metric)
    assert sentence == (
        "Hue: species centroids order by hue along their first principal component "
        "(|ρ| 0.68), above the untrained network (0.34) and shuffled labels (0.21 ± 0.03)."
    )
    sexes = {
        "kind": "intra_species_separation",
        "variants": ["female", "male"],
        "stats": {
            "probe_accuracy": {**_stat(0.55, 0.56, 0.49, 0.01, "inconclusive"), "ceiling": 0.9}
        },
    }
    assert metric_sentence("separation_sex", sexes, baseline="the baseline") == (
        "Separation sex: female vs male images within a species told apart (probe accuracy "
        "0.55), below the baseline (0.56), above shuffled labels (0.49 ± 0.01); a network "
        "trained with the labels reaches 0.90 (ceiling)."
    )


CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: no browser render test")
def test_renders_in_headless_chromium(all_inputs: list[Path], tmp_path: Path) -> None:
    out = write_report(all_inputs, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            out.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard: slow to start under load
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.is_file()
    image = Image.open(shot).convert("L")
    pixels = list(image.getdata())
    mean = sum(pixels) / len(pixels)
    variance = sum((p - mean) ** 2 for p in pixels) / len(pixels)
    assert variance > 50, "screenshot looks blank"
    console = [
        line
        for line in proc.stderr.splitlines()
        if "CONSOLE" in line or "Uncaught" in line or "report.html" in line and "ERROR" in line
    ]
    assert not console, "\n".join(console)


def _study(folder: Path) -> Path:
    """A study.json in the schema of study/summary.py (claims, trends, runs)."""
    folder.mkdir(parents=True)
    baselines = {
        "untrained": 0.0123,
        "general": 0.61,
        "flat": 0.55,
        "no_replay": None,
        "null": 0.498,
    }
    claim = {
        "claim": "sexes separated",
        "statistic": "separation_sex.probe_accuracy",
        "size": 120,
        "mean": 0.62,
        "sd": 0.01,
        "n_seeds": 6,
        "baselines": baselines,
        "baselines_sd": dict.fromkeys(baselines, 0.01),
        "against": ["untrained", "null"],
        "verdict": "holds",
    }
    trend = {
        "claim": "sexes separated grows with data",
        "statistic": claim["statistic"],
        "slope": 0.031,
        "ci_low": 0.02,
        "ci_high": 0.042,
        "verdict": "holds",
    }
    study = {
        "kind": "scaling",
        "recipe": "two-stage",
        "budget": "steps",
        "budget_why": "fixed <compute>",
        "worlds": [{"seed": 0}, {"seed": 1}],
        "model_seeds": [0, 1, 2],
        "sizes": [30, 60, 120],
        "verdict_rule": "the <rule>",
        "claims": [
            claim,
            {
                **claim,
                "claim": "taxonomy",
                "statistic": "taxonomic.spearman",
                "mean": 0.1,
                "verdict": "does not hold",
            },
        ],
        "trends": [trend],
        "runs": {"w0/s0/size-30": {"kind": "stage2"}},
    }
    (folder / "study.json").write_text(json.dumps(study))
    Image.new("RGB", (50, 30), (30, 30, 200)).save(folder / "scaling.png")
    return folder


def test_study_dir_shows_its_claims_first_then_its_design_and_plot(tmp_path: Path) -> None:
    folder = _study(tmp_path / "study")
    found = detect_inputs([folder])
    assert found.study == folder and found.analysis is None
    html = write_report([folder], tmp_path / "s.html").read_text(encoding="utf-8")
    assert html.index('id="claims"') < html.index('id="summary"') < html.index('id="study"')
    claims = html.split('id="claims"', 1)[1].split("</section>", 1)[0]
    assert "sexes separated" in claims and "0.620 ± 0.010" in claims
    assert "0.012 ± 0.010" in claims and "0.610 ± 0.010" in claims  # every baseline shown
    assert '<td style="font-weight:600" class="num">0.012 ± 0.010</td>' in claims  # judged
    assert '<td class="num">0.610 ± 0.010</td>' in claims  # shown, not judged
    assert 'class="verdict ok">holds' in claims and 'class="verdict bad">does not hold' in claims
    assert (
        "[0.020, 0.042]" in claims and "6 replicate(s)" in claims and "the &lt;rule&gt;" in claims
    )
    section = html.split('id="study"', 1)[1]
    assert len(_images(section)) == 1 and _images(section)[0].startswith("data:image/png;base64,")
    assert "recipe: two-stage" in section and "model seeds: 0, 1, 2" in section
    assert "30, 60, 120" in section and "fixed &lt;compute&gt;" in section


def test_study_beside_the_other_inputs(all_inputs: list[Path], tmp_path: Path) -> None:
    folder = _study(tmp_path / "study")
    html = write_report([*all_inputs, folder], tmp_path / "all.html").read_text(encoding="utf-8")
    for section in (*SECTIONS, "study"):
        assert f'id="{section}"' in html
    assert len(_images(html)) == 3
