"""The report of a real analysis and the claims table made from it: one verdict system.

A tiny saved model is analysed on a tiny SynthToL (with the ceiling); its claims table is
summarised from that metrics.json the way the demo does (study/summary.py), and the
report of both must name the analysed model, carry verdicts in the claims table only
(one verdict column, with the detectable effect beside it) and show the analysis'
values, baselines, nulls and ceilings with no verdict.
"""

from __future__ import annotations

import json
import re

import pytest

from taxoclip.analyze import AnalyzeConfig, run
from taxoclip.report import write_report
from taxoclip.report.html import _num
from taxoclip.study.record import StudyRecord
from taxoclip.study.scaling import values_from_analysis
from taxoclip.study.summary import summarise
from taxoclip.synth import SynthConfig, generate
from tests.helpers import saved_model

VERDICTS = ("holds", "does not hold", "inconclusive")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    generate(root / "synth", SynthConfig(species=8, images_per_species=48, image_size=32), False)
    model = saved_model(root / "run" / "model", seed=1)
    analysis = run(
        AnalyzeConfig(
            model=str(model), data=str(root / "synth"), out=str(root / "analysis"), progress=False
        )
    )
    metrics = json.loads((analysis.out / "metrics.json").read_text())
    runs = {
        "w0/s0/stage2": {
            "kind": "stage2",
            "world": 0,
            "seed": 0,
            "n_train": 100,
            "model": str(model),
            "values": values_from_analysis(metrics, "model"),
        },
        "w0/s0/untrained": {
            "kind": "untrained",
            "world": 0,
            "seed": 0,
            "values": values_from_analysis(metrics, "baseline"),
        },
    }
    study = StudyRecord.from_json(
        # one data size: no trends, as in the demo
        {"kind": "claims", "recipe": "two-stage", **summarise(runs, [0], [0]), "trends": []}
        | {"runs": runs}
    )
    (root / "claims").mkdir()
    (root / "claims" / "study.json").write_text(json.dumps(study.to_json()))
    # the run the model came from: stage 2, started from a stage-1 model folder
    start = str(root / "stage1" / "model")
    (root / "run" / "params.json").write_text(
        json.dumps({"model": start, "out": str(root / "run"), "epochs": 1})
    )
    dirs = [root / "claims", root / "analysis", root / "run"]
    html = write_report(dirs, root / "report.html").read_text(encoding="utf-8")
    return html, study, metrics, str(model), start


def _section(html: str, name: str) -> str:
    return html.split(f'id="{name}"', 1)[1].split("</section>", 1)[0]


def _headers(table_html: str) -> list[str]:
    return re.findall(r"<th>(.*?)</th>", table_html)


def test_the_analysed_model_and_its_start_are_named(report):
    html, _, _, model, start = report
    summary = _section(html, "summary")
    assert f'title="{model}"><div class="k">analysed model</div>' in summary
    assert f'title="{start}"><div class="k">initialised from</div>' in summary
    assert '<div class="v">stage1/model</div>' in summary  # the start, not the analysed one
    assert f"analysed model: {model}" in _section(html, "analysis")
    assert f"analysed model: {model} (stage 2)" in _section(html, "claims")
    assert "<td>initialised from</td>" in _section(html, "training")


def test_one_verdict_column_with_the_detectable_effect_beside_it(report):
    html, study, _, _, _ = report
    claims = _section(html, "claims")
    headers = _headers(claims)
    assert headers.count("verdict") == 1 and headers[-2:] == ["detectable", "verdict"]
    rows = re.findall(r"<tr>(.*?)</tr>", claims.split("<tbody>", 1)[1])
    assert len(rows) == len(study.claims)
    for row, claim in zip(rows, study.claims, strict=True):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        assert cells[-1] == claim.verdict and claim.verdict in VERDICTS
        assert cells[-2] == _num(claim.detectable)  # "–" where a claim has no number
    assert sum(c.detectable is not None for c in study.claims) >= 4  # separation, orthogonality
    # the only verdicts of the whole report are the claims'
    assert html.count('class="verdict') == len(study.claims)


def test_the_analysis_shows_numbers_and_ceilings_without_verdicts(report):
    html, _, metrics, _, _ = report
    analysis = _section(html, "analysis")
    headers = _headers(analysis.split("<h3>", 1)[0])
    assert headers[:6] == ["metric", "statistic", "value", "baseline", "null mean ± sd", "ceiling"]
    assert "verdict" not in headers
    for text in (
        analysis,
        _section(html, "findings"),
        _section(html, "summary").split("What the embedding space shows", 1)[1],
    ):
        assert not any(f">{v}<" in text or f": {v}." in text for v in VERDICTS)
    stage = metrics["metrics"]["separation_life_stage"]["stats"]["probe_accuracy"]
    assert stage["ceiling"] is not None
    assert f'<td class="num">{_num(stage["ceiling"])}</td>' in analysis
    assert f"ceiling {stage['ceiling']:.2f}" in _section(html, "summary")


def test_each_runs_one_seed_detectable_reaches_study_json(report):
    """study.json keeps, per run and statistic, the margin analyze's one-seed rule asked
    for (metrics.json's ``detectable``); the untrained twin gets no verdict, so none."""
    _, study, metrics, _, _ = report
    stage2 = study.runs["w0/s0/stage2"].to_json()["values"]
    for name, entry in metrics["metrics"].items():
        for stat, cell in entry["stats"].items():
            if cell.get("detectable") is not None:
                assert stage2[f"{name}.{stat}"]["detectable"] == cell["detectable"]
    assert sum("detectable" in v for v in stage2.values()) >= 10
    untrained = study.runs["w0/s0/untrained"].to_json()["values"]
    assert not any("detectable" in v for v in untrained.values())
