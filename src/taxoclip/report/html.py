"""Render a self-contained HTML report (inline CSS, base64 images, no scripts, no URLs).

Each input folder is recognised by the files it holds:

- analysis dir (``taxoclip analyze``): ``metrics.json`` with a ``metrics`` mapping,
  optional ``analysis.json`` and ``plots/*.png``;
- training run: ``params.json`` and/or ``metrics.jsonl`` (loss, lr, ... per logged step);
- eval results (``taxoclip eval --out``): ``results.json`` (a list of result rows);
- curation: ``stats.json`` with ``records_in``/``kept``/``rejected``;
- study (``taxoclip study scaling``, or the demo's ``claims/``): ``study.json`` with
  ``claims`` (shown first), ``trends`` and ``runs``, read as a
  :class:`~taxoclip.study.record.StudyRecord`, and its ``scaling.png``.

Parts that are missing are listed on a "not available" line rather than raising.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from taxoclip.errors import InputError
from taxoclip.study.record import ClaimResult, StudyRecord, TrendResult

VERDICT_CLASS = {"holds": "ok", "does not hold": "bad", "inconclusive": "meh"}

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;
  color:#1d232a;background:#f5f6f8;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.25em;margin:32px 0 10px;
  border-bottom:2px solid #d9dde3;padding-bottom:4px}
h3{font-size:1.05em;margin:18px 0 6px}
.muted{color:#5c6670;font-size:.92em}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:14px 0}
.card{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:10px 14px;
  min-width:150px}
.card .k{font-size:.8em;color:#5c6670;text-transform:uppercase;letter-spacing:.03em}
.card .v{font-size:1.35em;font-weight:600}
table{border-collapse:collapse;background:#fff;font-size:.9em;margin:8px 0;width:100%}
th,td{border:1px solid #dde1e6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef0f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{background:#d8f3dc;color:#1b5e20}.bad{background:#fde2e1;color:#8e1c14}
.meh{background:#fff4cc;color:#7a5a00}.na{color:#8a939c}
.verdict{font-weight:600;white-space:nowrap}
figure{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:10px;
  margin:10px 0;display:inline-block;max-width:100%;box-sizing:border-box}
figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:.85em;color:#5c6670;margin-top:4px}
ul.sentences li{margin:4px 0}
ul.glance{margin:4px 0;padding-left:20px;font-size:.92em}ul.glance li{margin:1px 0}
.v-hold{color:#1b5e20;font-weight:600}.v-not{color:#8e1c14;font-weight:600}
.v-inc{color:#7a5a00;font-weight:600}
.notavail{background:#fff;border-left:4px solid #c3c9d0;padding:6px 10px;margin:10px 0}
"""


@dataclass
class ReportInputs:
    """Folders found per kind (first one wins for each kind)."""

    analysis: Path | None = None
    run: Path | None = None
    eval: Path | None = None
    curation: Path | None = None
    study: Path | None = None
    unknown: list[Path] = field(default_factory=list)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def detect_inputs(dirs: list[str | Path]) -> ReportInputs:
    """Sort the given folders (or files inside them) by what they hold."""
    found = ReportInputs()
    for raw in dirs:
        folder = Path(raw)
        if folder.is_file():
            folder = folder.parent
        if not folder.is_dir():
            raise InputError(f"{raw}: no such folder")
        matched = False
        metrics = (
            _read_json(folder / "metrics.json") if (folder / "metrics.json").is_file() else None
        )
        if isinstance(metrics, dict) and isinstance(metrics.get("metrics"), dict):
            found.analysis = found.analysis or folder
            matched = True
        if (folder / "params.json").is_file() or (folder / "metrics.jsonl").is_file():
            found.run = found.run or folder
            matched = True
        if (folder / "results.json").is_file():
            found.eval = found.eval or folder
            matched = True
        stats = _read_json(folder / "stats.json") if (folder / "stats.json").is_file() else None
        if isinstance(stats, dict) and "records_in" in stats:
            found.curation = found.curation or folder
            matched = True
        study = _read_json(folder / "study.json") if (folder / "study.json").is_file() else None
        if isinstance(study, dict) and isinstance(study.get("runs"), dict):
            found.study = found.study or folder
            matched = True
        if not matched:
            found.unknown.append(folder)
    if not (found.analysis or found.run or found.eval or found.curation or found.study):
        names = ", ".join(str(d) for d in dirs)
        raise InputError(
            f"{names}: no analysis (metrics.json), training run (params.json/metrics.jsonl), "
            "eval results (results.json), curation stats (stats.json) or study (study.json) "
            "found"
        )
    return found


# ---------------------------------------------------------------- formatting helpers


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}"
    return str(value)


def _e(value) -> str:
    return escape(str(value), quote=True)


def _png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure(data: bytes, caption: str) -> str:
    return (
        f'<figure><img alt="{_e(caption)}" src="{_png_data_uri(data)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    """``rows`` hold already-escaped cell HTML (with optional ``<td ...>`` markup)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(cell: str) -> str:
    return cell if cell.startswith("<td") else f"<td>{cell}</td>"


def _numcell(value, digits: int = 3) -> str:
    return f'<td class="num">{_e(_num(value, digits))}</td>'


def _card(key: str, value: str) -> str:
    return f'<div class="card"><div class="k">{_e(key)}</div><div class="v">{_e(value)}</div></div>'


# ---------------------------------------------------------------- training run


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return records
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _training_plot(records: list[dict]) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    steps = [r for r in records if "loss" in r and "step" in r]
    val = [r for r in records if "val_zeroshot_top1" in r and "step" in r]
    if not steps and not val:
        return None
    panels = [k for k in ("loss", "lr", "logit_scale") if any(k in r for r in steps)]
    if val:
        panels.append("val_zeroshot_top1")
    fig = Figure(figsize=(3.3 * len(panels), 2.8), dpi=100, constrained_layout=True)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, key in zip(axes, panels, strict=True):
        source = val if key == "val_zeroshot_top1" else steps
        xs = [r["step"] for r in source if key in r]
        ys = [r[key] for r in source if key in r]
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, lw=1.4, color="#2b6cb0")
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# ---------------------------------------------------------------- analysis sentences


def _pretty_metric(name: str) -> str:
    return name.removeprefix("trait_").replace("_", " ").capitalize()


def _short(value) -> str:
    """Two decimals, or two significant digits for small numbers (so 0.0045 is not 0.00)."""
    if isinstance(value, float) and value == value and 0 < abs(value) < 0.1:
        return f"{value:.2g}"
    return _num(value, 2)


def metric_sentence(name: str, metric: dict) -> str:
    """One plain-language sentence from a metric's headline statistic and verdict."""
    stats = metric.get("stats") or {}
    judged = [(k, s) for k, s in stats.items() if isinstance(s, dict) and s.get("verdict")]
    kind = metric.get("kind", "")
    label = _pretty_metric(name)
    if not judged:
        parts = [
            f"{k} {_num(s.get('value'))} (untrained {_num(s.get('baseline_value'))})"
            for k, s in stats.items()
            if isinstance(s, dict)
        ]
        what = metric.get("description") or kind
        return f"{label}: {what}: " + ("; ".join(parts) or "no numbers") + " (no verdict)."
    stat_name, stat = judged[0]
    value, base = stat.get("value"), stat.get("baseline_value")
    null = stat.get("null") or {}
    higher = stat.get("higher_is_better", True) is not False
    verdict = stat["verdict"]
    trait = str(metric.get("trait", "")).replace("_", " ")
    if kind == "trait_alignment":
        claim = f"species centroids order by {trait} along their first principal component"
        measure = f"|ρ| {_short(value)}"
    elif kind == "ecological_alignment":
        claim = "a linear probe reads habitat from species centroids"
        measure = f"accuracy {_short(value)}"
    elif kind == "taxonomic_alignment":
        claim = "embedding distances between species follow taxonomic distance"
        measure = f"ρ {_short(value)}"
    elif kind == "intra_species_separation":
        variants = metric.get("variants")
        pair = " vs ".join(str(v) for v in variants) if isinstance(variants, list) else "variants"
        claim = f"{pair} images within a species are told apart"
        measure = f"{stat_name.replace('_', ' ')} {_short(value)}"
    elif kind == "orthogonality":
        claim = "the variant direction lies outside the span separating species"
        measure = f"{stat_name.replace('_', ' ')} {_short(value)}"
    else:
        claim = metric.get("description") or f"{stat_name} is {'high' if higher else 'low'}"
        measure = f"{stat_name.replace('_', ' ')} {_short(value)}"
    comparison = "compared with"
    if verdict == "holds":
        comparison = "more than" if higher else "less than"
        refs_values = [v for v in (base, null.get("mean")) if isinstance(v, int | float)]
        sd = null.get("sd")
        if isinstance(value, int | float) and refs_values and isinstance(sd, int | float):
            gap = value - max(refs_values) if higher else min(refs_values) - value
            if gap > 3 * sd:
                comparison = "far " + comparison
    if verdict == "does not hold":
        comparison = "no better than" if higher else "no lower than"
    null_text = ""
    if null.get("mean") is not None:
        null_text = f"shuffled labels ({_short(null.get('mean'))} ± {_short(null.get('sd'))})"
    refs = []
    if base is not None:
        refs.append(f"the untrained network ({_short(base)})")
    if null_text:
        refs.append(null_text)
    ref_text = f" {comparison} " + " or ".join(refs) if refs else ""
    return f"{label}: {claim} ({measure}){ref_text}: {verdict}."


# ---------------------------------------------------------------- sections


def _glance_line(name: str, metric: dict) -> str:
    """One short line per judged metric for the first screen: value, references, verdict."""
    stats = metric.get("stats") or {}
    judged = [(k, v) for k, v in stats.items() if isinstance(v, dict) and v.get("verdict")]
    if not judged:
        return ""
    stat_name, stat = judged[0]
    null = stat.get("null") or {}
    refs = [f"untrained {_short(stat.get('baseline_value'))}"]
    if null.get("mean") is not None:
        refs.append(f"null {_short(null['mean'])} ± {_short(null.get('sd'))}")
    verdict = stat["verdict"]
    css = {"holds": "v-hold", "does not hold": "v-not"}.get(verdict, "v-inc")
    return (
        f"<li><b>{_e(_pretty_metric(name))}</b> ({_e(stat_name.replace('_', ' '))}): "
        f"{_e(_short(stat.get('value')))} vs {_e(', '.join(refs))} — "
        f'<span class="{css}">{_e(verdict)}</span></li>'
    )


def _section_summary(found: ReportInputs, ctx: dict) -> str:
    """The run's headline numbers as cards, what the report was made from, what it lacks,
    and the analysis at a glance."""
    metrics = (ctx.get("metrics") or {}).get("metrics") or {}
    cards = _summary_cards(ctx, metrics)
    what = _summary_sources(found, ctx)
    lines = f'<p class="muted">{_e("; ".join(what))}</p>'
    missing = [
        name
        for name, present in (
            ("curation stats", found.curation),
            ("training run", found.run),
            ("evaluation results", found.eval),
            ("analysis", found.analysis),
        )
        if not present
    ]
    notavail = (
        f'<p class="notavail">Not available: {_e(", ".join(missing))}.</p>' if missing else ""
    )
    glance = "".join(_glance_line(name, metric) for name, metric in metrics.items())
    if glance:
        basis = (ctx.get("metrics") or {}).get("verdict_basis", "")
        glance = f'<h3>What the embedding space shows</h3><ul class="glance">{glance}</ul>' + (
            f'<p class="muted">How to read the verdicts: {_e(basis)}</p>' if basis else ""
        )
    return (
        '<section id="summary"><h2>Summary</h2>'
        f'{lines}<div class="cards">{"".join(cards)}</div>{glance}{notavail}</section>'
    )


def _summary_cards(ctx: dict, metrics: dict) -> list[str]:
    """A card per headline number: model, epochs, batch, loss, validation, curation, the
    analysis' verdicts and the first eval row beside the untrained twin's."""
    cards = []
    params = ctx.get("params") or {}
    if params:
        cards.append(_card("model", params.get("model", "?")))
        if "epochs" in params:
            cards.append(_card("epochs", _num(params["epochs"])))
        if "global_batch" in params or "batch_size" in params:
            cards.append(_card("batch", _num(params.get("global_batch", params.get("batch_size")))))
    records = ctx.get("records") or []
    losses = [r for r in records if "loss" in r]
    if losses:
        cards.append(
            _card("loss first → last", f"{losses[0]['loss']:.3f} → {losses[-1]['loss']:.3f}")
        )
        cards.append(_card("steps", _num(losses[-1].get("step", len(losses)))))
    val = [r["val_zeroshot_top1"] for r in records if "val_zeroshot_top1" in r]
    if val:
        cards.append(_card("val zero-shot top-1", _num(val[-1])))
    stats = ctx.get("curation") or {}
    if stats:
        cards.append(
            _card("records kept", f"{_num(stats.get('kept'))} / {_num(stats.get('records_in'))}")
        )
    if metrics:
        counts = {"holds": 0, "does not hold": 0, "inconclusive": 0}
        for metric in metrics.values():
            for stat in (metric.get("stats") or {}).values():
                if isinstance(stat, dict) and stat.get("verdict") in counts:
                    counts[stat["verdict"]] += 1
        cards.append(
            _card(
                "analysis verdicts",
                f"{counts['holds']} hold · {counts['inconclusive']} inconclusive · "
                f"{counts['does not hold']} do not",
            )
        )
    eval_rows = ctx.get("eval") or []
    if eval_rows:
        top1 = [r for r in eval_rows if r.get("model", "trained") == "trained"]
        if top1:
            first = top1[0]
            twin = [
                r
                for r in eval_rows
                if r.get("model") == "untrained"
                and (r.get("task"), r.get("metric")) == (first.get("task"), first.get("metric"))
            ]
            value = _num(first.get("value"))
            if twin:
                value += f" (untrained {_num(twin[0].get('value'))})"
            cards.append(_card(f"{first.get('task')} {first.get('metric')}", value))
    return cards


def _summary_sources(found: ReportInputs, ctx: dict) -> list[str]:
    """What the report was made from, one phrase per input folder."""
    what = []
    if found.run:
        what.append(f"training run {found.run}")
    if found.analysis:
        analysis = ctx.get("analysis_meta") or {}
        model = (ctx.get("metrics") or {}).get("model", "")
        n = analysis.get("n_images")
        what.append(
            f"analysis of {model or '?'}"
            + (f" on {n:,} images of {analysis.get('n_species', '?')} species" if n else "")
        )
    if found.eval:
        what.append(f"evaluation {found.eval}")
    if found.curation:
        what.append(f"curation {found.curation}")
    if found.study:
        what.append(f"scaling study {found.study}")
    return what


def _section_curation(ctx: dict) -> str:
    stats = ctx.get("curation")
    body = '<p class="na">Not available: no curation stats.json given.</p>'
    if stats:
        rows = [
            ["records in", _numcell(stats.get("records_in"))],
            ["kept", _numcell(stats.get("kept"))],
            ["rejected", _numcell(stats.get("rejected"))],
        ]
        for stage, count in (stats.get("rejected_by_stage") or {}).items():
            rows.append([_e(f"rejected at {stage}"), _numcell(count)])
        body = _table(["stage", "count"], rows)
        reasons = stats.get("rejected_by_reason") or {}
        if reasons:
            body += "<h3>Rejections by reason</h3>" + _table(
                ["reason", "count"], [[_e(k), _numcell(v)] for k, v in reasons.items()]
            )
        kept = stats.get("kept_by_status") or {}
        if kept:
            body += "<h3>Kept by status</h3>" + _table(
                ["status", "count"], [[_e(k), _numcell(v)] for k, v in kept.items()]
            )
        if stats.get("invariant"):
            body += f'<p class="muted">{_e(stats["invariant"])}</p>'
    return f'<section id="curation"><h2>Data and curation</h2>{body}</section>'


def _section_training(ctx: dict) -> str:
    body = '<p class="na">Not available: no training run (params.json / metrics.jsonl).</p>'
    params = ctx.get("params")
    records = ctx.get("records") or []
    if params or records:
        body = ""
        png = _training_plot(records) if records else None
        if png:
            body += _figure(png, "training curves from metrics.jsonl")
        elif records is not None:
            body += '<p class="na">No logged steps in metrics.jsonl.</p>'
        if params:
            keys = (
                "model",
                "data",
                "epochs",
                "global_batch",
                "lr",
                "wd",
                "warmup",
                "precision",
                "device",
                "seed",
            )
            rows = [[_e(k), _e(_num(params[k]))] for k in keys if k in params]
            if rows:
                body += "<h3>Parameters</h3>" + _table(["parameter", "value"], rows)
    return f'<section id="training"><h2>Training curves</h2>{body}</section>'


def _section_eval(ctx: dict) -> str:
    rows = ctx.get("eval")
    body = '<p class="na">Not available: no evaluation results.json given.</p>'
    if rows:
        table: dict[tuple, dict] = {}
        models: list[str] = []
        for r in rows:
            key = (r.get("suite"), r.get("task"), r.get("metric"))
            entry = table.setdefault(key, {"n": r.get("n")})
            model = str(r.get("model", "trained"))
            entry[model] = r.get("value")
            if model not in models:
                models.append(model)
        models.sort(key=lambda m: (m != "trained", m))
        out = [
            [_e(s), _e(t), _e(m), _numcell(e.get("n"))] + [_numcell(e.get(x), 4) for x in models]
            for (s, t, m), e in table.items()
        ]
        labels = [("untrained baseline" if m == "untrained" else m) for m in models]
        body = _table(["suite", "task", "metric", "n"] + labels, out)
    return f'<section id="eval"><h2>Evaluation</h2>{body}</section>'


def _section_analysis(ctx: dict) -> str:
    data = ctx.get("metrics")
    if not data:
        body = '<p class="na">Not available: no analysis metrics.json given.</p>'
        return f'<section id="analysis"><h2>Analysis metrics</h2>{body}</section>'
    metrics = data.get("metrics") or {}
    rows = []
    for name, metric in metrics.items():
        for stat_name, stat in (metric.get("stats") or {}).items():
            if not isinstance(stat, dict):
                continue
            null = stat.get("null") or {}
            null_text = (
                f"{_num(null.get('mean'))} ± {_num(null.get('sd'))}"
                if null.get("mean") is not None
                else "–"
            )
            verdict = stat.get("verdict")
            css = VERDICT_CLASS.get(str(verdict), "na")
            rows.append(
                [
                    f'<td title="{_e(metric.get("description", ""))}">{_e(name)}</td>',
                    _e(stat_name),
                    _numcell(stat.get("value")),
                    _numcell(stat.get("baseline_value")),
                    f'<td class="num">{_e(null_text)}</td>',
                    f'<td class="verdict {css}">{_e(verdict or "–")}</td>',
                ]
            )
    body = ""
    meta = [f"model: {data.get('model', '?')}", f"baseline: {data.get('baseline', '?')}"]
    if data.get("split"):
        meta.append(f"split: {data['split']}")
    body += f'<p class="muted">{_e("; ".join(meta))}</p>'
    body += _table(
        ["metric", "statistic", "value", "untrained baseline", "null mean ± sd", "verdict"], rows
    )
    if data.get("verdict_basis"):
        body += f'<p class="muted">Verdicts: {_e(data["verdict_basis"])}</p>'
    skipped = data.get("skipped") or {}
    if skipped:
        body += (
            "<h3>Skipped</h3><ul>"
            + "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in skipped.items())
            + "</ul>"
        )
    body += "<h3>What the descriptions say</h3>" + _table(
        ["metric", "description", "scope"],
        [[_e(k), _e(m.get("description", "")), _e(m.get("scope", ""))] for k, m in metrics.items()],
    )
    sentences = "".join(f"<li>{_e(metric_sentence(k, m))}</li>" for k, m in metrics.items())
    findings = f'<section id="findings"><h2>In plain words</h2><ul class="sentences">{sentences}</ul></section>'
    return f'<section id="analysis"><h2>Analysis metrics</h2>{body}</section>{findings}'


_BASELINES = ("untrained", "general", "flat", "no_replay", "null")


def _mean_sd(mean, sd) -> str:
    if mean is None:
        return '<td class="na">–</td>'
    text = _num(mean) + (f" ± {_num(sd)}" if sd is not None else "")
    return f'<td class="num">{_e(text)}</td>'


def _verdict_cell(verdict: str) -> str:
    return f'<td class="verdict {VERDICT_CLASS.get(verdict, "")}">{_e(verdict)}</td>'


def _claim_row(c: ClaimResult) -> list[str]:
    """A claim's cells: its mean ± sd, each baseline's (bold: the comparators the verdict
    needs beaten), its verdict."""
    row = [_e(c.claim), f"<code>{_e(c.statistic)}</code>", _mean_sd(c.mean, c.sd)]
    for kind in _BASELINES:
        cell = _mean_sd(c.baselines.get(kind), c.baselines_sd.get(kind))
        if kind in c.against:
            cell = cell.replace("<td", '<td style="font-weight:600"', 1)
        row.append(cell)
    row.append(_verdict_cell(str(c.verdict)))
    return row


def _trend_row(t: TrendResult) -> list[str]:
    interval = f"[{_num(t.ci_low)}, {_num(t.ci_high)}]" if t.ci_low is not None else "–"
    return [
        _e(t.claim),
        f"<code>{_e(t.statistic)}</code>",
        _numcell(t.slope),
        f'<td class="num">{_e(interval)}</td>',
        _verdict_cell(str(t.verdict)),
    ]


def _section_claims(ctx: dict) -> str:
    """The paper's claims first: each with its mean ± sd over replicates, every baseline,
    the null and the verdict (study.json's ``claims``), then the trends with data."""
    study: StudyRecord | None = ctx.get("study")
    if study is None or not study.claims:
        return ""
    header = ["claim", "statistic", "mean ± sd", *_BASELINES, "verdict"]
    n = max((int(c.n_seeds or 0) for c in study.claims), default=0)
    body = (
        f'<p class="muted">{n} replicate(s) (world seed × model seed); bold: the '
        "comparators a verdict needs beaten. " + _e(study.verdict_rule or "") + "</p>"
    )
    if study.note:
        body += f'<p class="muted"><strong>{_e(study.note)}</strong></p>'
    body += _table(header, [_claim_row(c) for c in study.claims])
    if study.trends:
        body += "<h3>Does it grow with data?</h3>"
        body += _table(
            ["trend", "statistic", "slope per doubling", "95% interval", "verdict"],
            [_trend_row(t) for t in study.trends],
        )
    return f'<section id="claims"><h2>The paper\'s claims</h2>{body}</section>'


def _section_study(ctx: dict) -> str:
    """The scaling study's design and its plot (the claims table is its own section)."""
    study: StudyRecord | None = ctx.get("study")
    if study is None or study.kind != "scaling":
        return ""
    meta = [
        f"recipe: {study.recipe or '?'}",
        f"world seeds: {', '.join(str(w.seed) for w in study.worlds)}",
        f"model seeds: {', '.join(str(s) for s in study.model_seeds)}",
        f"training images per size: {', '.join(str(n) for n in study.sizes)}",
        f"budget: same {study.budget or '?'} per run",
    ]
    body = f'<p class="muted">{_e("; ".join(meta))}</p>'
    if study.budget_why:
        body += f'<p class="muted">{_e(study.budget_why)}</p>'
    if ctx.get("study_plot"):
        caption = (
            "scaling.png: each claim's statistic against training images, mean ± sd over "
            "replicates, with every baseline"
        )
        body += _figure(ctx["study_plot"], caption)
    for text in (study.subset_rule, study.zero_shot_protocol):
        if text:
            body += f'<p class="muted">{_e(text)}</p>'
    return f'<section id="study"><h2>Scaling study</h2>{body}</section>'


def _section_plots(ctx: dict) -> str:
    plots = ctx.get("plots") or []
    if not plots:
        body = '<p class="na">Not available: no analysis plots.</p>'
    else:
        body = "".join(_figure(data, name) for name, data in plots)
    return f'<section id="plots"><h2>Analysis plots</h2>{body}</section>'


# ---------------------------------------------------------------- entry points


def _gather(found: ReportInputs) -> dict:
    ctx: dict = {}
    if found.run:
        params = found.run / "params.json"
        ctx["params"] = _read_json(params) if params.is_file() else None
        jsonl = found.run / "metrics.jsonl"
        ctx["records"] = _read_jsonl(jsonl) if jsonl.is_file() else []
    if found.analysis:
        ctx["metrics"] = _read_json(found.analysis / "metrics.json")
        meta = found.analysis / "analysis.json"
        ctx["analysis_meta"] = _read_json(meta) if meta.is_file() else None
        plots = sorted((found.analysis / "plots").glob("*.png"))
        ctx["plots"] = [(p.name, p.read_bytes()) for p in plots]
    if found.eval:
        rows = _read_json(found.eval / "results.json")
        ctx["eval"] = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    if found.curation:
        ctx["curation"] = _read_json(found.curation / "stats.json")
    if found.study:
        study = _read_json(found.study / "study.json")  # detect_inputs checked: an object
        ctx["study"] = StudyRecord.from_json(study) if isinstance(study, dict) else None
        plot = found.study / "scaling.png"
        ctx["study_plot"] = plot.read_bytes() if plot.is_file() else None
    return ctx


def build_report(found: ReportInputs, title: str = "taxoclip report") -> str:
    """The whole report as one HTML string."""
    ctx = _gather(found)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        _section_claims(ctx),
        _section_summary(found, ctx),
        _section_curation(ctx),
        _section_training(ctx),
        _section_eval(ctx),
        _section_analysis(ctx),
        _section_plots(ctx),
        _section_study(ctx),
    ]
    unknown = ""
    if found.unknown:
        names = ", ".join(str(p) for p in found.unknown)
        unknown = f'<p class="notavail">Not recognised (ignored): {_e(names)}</p>'
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
        f'<h1>{_e(title)}</h1><p class="muted">generated {_e(stamp)}</p>{unknown}'
        + "".join(sections)
        + "</main></body></html>\n"
    )


def write_report(dirs: list[str | Path], out: str | Path) -> Path:
    """Detect the inputs in ``dirs``, render and write the report; returns its path."""
    found = detect_inputs(dirs)
    html = build_report(found)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return out
