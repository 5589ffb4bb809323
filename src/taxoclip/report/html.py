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

One verdict system: only the claims table (study.json's claims, by the rule over seeds of
study/claims.py) says "holds"; the analysis' per-metric table, its sentences and the
summary show values beside their baseline, null and ceiling, and no verdict. The model
the numbers are of is named as "analysed model"; the point a training run started from
as "initialised from".
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


def _card(key: str, value: str, title: str = "") -> str:
    hover = f' title="{_e(title)}"' if title else ""
    return (
        f'<div class="card"{hover}><div class="k">{_e(key)}</div>'
        f'<div class="v">{_e(value)}</div></div>'
    )


def _short_path(path: str) -> str:
    """The last two parts of a path (a model folder is named by its run), else as given."""
    parts = [p for p in str(path).replace("\\", "/").split("/") if p]
    return "/".join(parts[-2:]) if len(parts) > 2 else str(path)


def _start_point(params: dict) -> str | None:
    """What a training run was initialised from (a model folder, an hf-hub: model, a
    pretrained tag), or None when it trained an architecture from scratch."""
    model = str(params.get("model") or "")
    if not model:
        return None
    if params.get("pretrained"):
        return f"{model} ({params['pretrained']})"
    if "/" in model or model.startswith("hf-hub:") or Path(model).exists():
        return model
    return None


def _analysed_model(ctx: dict) -> str | None:
    """The model the analysis' numbers are of: metrics.json's model, or the embeddings file
    it read; None without an analysis."""
    data = ctx.get("metrics") or {}
    if data.get("model"):
        return str(data["model"])
    embeddings = data.get("embeddings") or {}
    if isinstance(embeddings, dict) and embeddings.get("file"):
        return f"embeddings {embeddings['file']}"
    return None


def _run_model(params: dict, run: Path | None) -> str | None:
    """The model folder a training run wrote (``<out>/model``)."""
    out = params.get("out") or (str(run) if run else None)
    return str(Path(out) / "model") if out else None


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


def metric_sentence(name: str, metric: dict, baseline: str = "the untrained network") -> str:
    """One plain-language sentence from a metric's headline statistic: its value beside
    ``baseline``, the null and, for a separation statistic, its ceiling. No verdict: the
    claims table alone judges (over seeds)."""
    stats = metric.get("stats") or {}
    headline = [(k, s) for k, s in stats.items() if isinstance(s, dict) and s.get("null")]
    kind = metric.get("kind", "")
    label = _pretty_metric(name)
    if not headline:  # a descriptive number (effective dimension): no null
        parts = [
            f"{k} {_num(s.get('value'))} (baseline {_num(s.get('baseline_value'))})"
            for k, s in stats.items()
            if isinstance(s, dict)
        ]
        what = metric.get("description") or kind
        return f"{label}: {what}: " + ("; ".join(parts) or "no numbers") + "."
    stat_name, stat = headline[0]
    value, base = stat.get("value"), stat.get("baseline_value")
    null = stat.get("null") or {}
    higher = stat.get("higher_is_better", True) is not False
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
        claim = f"{pair} images within a species told apart"
        measure = f"{stat_name.replace('_', ' ')} {_short(value)}"
    elif kind == "orthogonality":
        claim = "the variant direction outside the span separating species"
        measure = f"{stat_name.replace('_', ' ')} {_short(value)}"
    else:
        claim = (
            metric.get("description") or f"{stat_name} ({'high' if higher else 'low'} is better)"
        )
        measure = f"{stat_name.replace('_', ' ')} {_short(value)}"
    references = []
    if isinstance(base, int | float):
        references.append((base, f"{baseline} ({_short(base)})"))
    if isinstance(null.get("mean"), int | float):
        references.append(
            (null["mean"], f"shuffled labels ({_short(null['mean'])} ± {_short(null.get('sd'))})")
        )
    text = f"{label}: {claim} ({measure})"
    if references:
        text += ", " + _relations(value, references)
    ceiling = stat.get("ceiling")
    if isinstance(ceiling, int | float):
        text += f"; a network trained with the labels reaches {_short(ceiling)} (ceiling)"
    return text + "."


def _relations(value, references: list[tuple[float, str]]) -> str:
    """ "above A and B, below C": where ``value`` lies against each reference, no verdict."""
    if not isinstance(value, int | float) or value != value:
        return "beside " + " and ".join(words for _, words in references)
    sides: dict[str, list[str]] = {}
    for reference, words in references:
        side = "above" if value > reference else "below" if value < reference else "equal to"
        sides.setdefault(side, []).append(words)
    return ", ".join(f"{side} {' and '.join(words)}" for side, words in sides.items())


# ---------------------------------------------------------------- sections


def _glance_line(name: str, metric: dict) -> str:
    """One short line per metric with a null, for the first screen: the headline value
    beside its baseline, null and ceiling (no verdict)."""
    stats = metric.get("stats") or {}
    headline = [(k, v) for k, v in stats.items() if isinstance(v, dict) and v.get("null")]
    if not headline:
        return ""
    stat_name, stat = headline[0]
    null = stat.get("null") or {}
    refs = []
    if stat.get("baseline_value") is not None:
        refs.append(f"baseline {_short(stat.get('baseline_value'))}")
    if null.get("mean") is not None:
        refs.append(f"null {_short(null['mean'])} ± {_short(null.get('sd'))}")
    if isinstance(stat.get("ceiling"), int | float):
        refs.append(f"ceiling {_short(stat['ceiling'])}")
    return (
        f"<li><b>{_e(_pretty_metric(name))}</b> ({_e(stat_name.replace('_', ' '))}): "
        f"{_e(_short(stat.get('value')))}"
        + (f" · {_e(' · '.join(refs))}" if refs else "")
        + "</li>"
    )


#: Why the analysis' numbers carry no verdict in the report.
NO_SECOND_VERDICT = (
    "Numbers only: a verdict is given to the paper's claims alone (the claims table, by the "
    "rule over seeds of docs/analyze.md); the analysis' one-seed screen in metrics.json is "
    "not a second verdict and is not shown."
)


def _section_summary(found: ReportInputs, ctx: dict) -> str:
    """The run's headline numbers as cards, what the report was made from, what it lacks,
    and the analysis at a glance."""
    metrics = (ctx.get("metrics") or {}).get("metrics") or {}
    cards = _summary_cards(found, ctx)
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
        glance = (
            f'<h3>What the embedding space shows</h3><ul class="glance">{glance}</ul>'
            f'<p class="muted">{_e(NO_SECOND_VERDICT)}</p>'
        )
    return (
        '<section id="summary"><h2>Summary</h2>'
        f'{lines}<div class="cards">{"".join(cards)}</div>{glance}{notavail}</section>'
    )


def _model_cards(found: ReportInputs, ctx: dict) -> list[str]:
    """The model the numbers are of ("analysed model") and where its training started
    ("initialised from"), or the run's architecture when it trained from scratch."""
    params = ctx.get("params") or {}
    analysed = _analysed_model(ctx)
    trained = _run_model(params, found.run) if (params or found.run) else None
    start = _start_point(params)
    cards = []
    if analysed:
        cards.append(_card("analysed model", _short_path(analysed), analysed))
    elif trained:
        cards.append(_card("trained model", _short_path(trained), trained))
    same = analysed is None or (
        trained is not None and Path(analysed) in (Path(trained), Path(trained).parent)
    )
    if analysed and trained and not same:  # a run that is not the analysed model's
        cards.append(_card("training run's model", _short_path(trained), trained))
    prefix = "" if same else "run "
    if start:
        cards.append(_card(f"{prefix}initialised from", _short_path(start), start))
    elif params.get("model"):
        cards.append(_card(f"{prefix}architecture", str(params["model"])))
    return cards


def _summary_cards(found: ReportInputs, ctx: dict) -> list[str]:
    """A card per headline number: the analysed model and its start point, epochs, batch,
    loss, validation, curation, the claims' verdicts and the first eval row beside the
    untrained twin's."""
    cards = _model_cards(found, ctx)
    params = ctx.get("params") or {}
    if params:
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
    study: StudyRecord | None = ctx.get("study")
    if study is not None and study.claims:
        verdicts = [c.verdict for c in study.claims]
        cards.append(
            _card(
                "claims",
                f"{verdicts.count('holds')} hold · {verdicts.count('inconclusive')} "
                f"inconclusive · {verdicts.count('does not hold')} do not",
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
        model = _analysed_model(ctx)
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
            start = _start_point(params)
            names = {"model": "initialised from" if start else "architecture"}
            rows = [
                [_e(names.get(k, k)), _e(start if k == "model" and start else _num(params[k]))]
                for k in keys
                if k in params
            ]
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


def _stat_rows(metrics: dict, detectable: bool) -> list[list[str]]:
    """One row per statistic: value, baseline, null, ceiling (and the one-seed detectable
    effect when metrics.json gives it); no verdict."""
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
            row = [
                f'<td title="{_e(metric.get("description", ""))}">{_e(name)}</td>',
                _e(stat_name),
                _numcell(stat.get("value")),
                _numcell(stat.get("baseline_value")),
                f'<td class="num">{_e(null_text)}</td>',
                _numcell(stat.get("ceiling")),
            ]
            if detectable:
                row.append(_numcell(stat.get("detectable")))
            rows.append(row)
    return rows


def _section_analysis(ctx: dict) -> str:
    data = ctx.get("metrics")
    if not data:
        body = '<p class="na">Not available: no analysis metrics.json given.</p>'
        return f'<section id="analysis"><h2>Analysis metrics</h2>{body}</section>'
    metrics = data.get("metrics") or {}
    detectable = any(
        isinstance(stat, dict) and "detectable" in stat
        for metric in metrics.values()
        for stat in (metric.get("stats") or {}).values()
    )
    baseline = data.get("baseline")
    meta = [f"analysed model: {_analysed_model(ctx) or '?'}", f"baseline: {baseline or 'none'}"]
    if data.get("split"):
        meta.append(f"split: {data['split']}")
    body = f'<p class="muted">{_e("; ".join(meta))}</p>'
    header = ["metric", "statistic", "value", "baseline", "null mean ± sd", "ceiling"]
    if detectable:
        header.append("detectable (one seed)")
    body += _table(header, _stat_rows(metrics, detectable))
    body += f'<p class="muted">{_e(NO_SECOND_VERDICT)}</p>'
    basis = next(
        (m["ceiling"].get("basis") for m in metrics.values() if isinstance(m.get("ceiling"), dict)),
        None,
    )
    if basis:
        body += f'<p class="muted">Ceiling: {_e(basis)}.</p>'
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
    said = (
        "the untrained network" if str(baseline or "").startswith("untrained") else "the baseline"
    )
    sentences = "".join(
        f"<li>{_e(metric_sentence(k, m, baseline=said))}</li>" for k, m in metrics.items()
    )
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
    needs beaten), the effect the design can detect, its verdict."""
    row = [_e(c.claim), f"<code>{_e(c.statistic)}</code>", _mean_sd(c.mean, c.sd)]
    for kind in _BASELINES:
        cell = _mean_sd(c.baselines.get(kind), c.baselines_sd.get(kind))
        if kind in c.against:
            cell = cell.replace("<td", '<td style="font-weight:600"', 1)
        row.append(cell)
    row.append(_numcell(c.detectable))
    row.append(_verdict_cell(str(c.verdict)))
    return row


def _claims_models(study: StudyRecord) -> str:
    """Which model(s) the claims' numbers are of, and what they were initialised from."""
    runs = list(study.runs.values())
    stage2 = [r for r in runs if r.kind == "stage2"]
    general = [r for r in runs if r.kind == "general" and r.model]
    two_stage = study.recipe == "two-stage"
    if len(stage2) == 1:
        text = f"analysed model: {stage2[0].model or 'the stage-2 run'} (stage 2)"
        if two_stage and len(general) == 1:
            text += f", initialised from {general[0].model} (the stage-1 general model)"
        return text
    if stage2:
        start = (
            "each initialised from its world's stage-1 general model"
            if two_stage
            else "each trained from scratch"
            if study.recipe == "scratch"
            else ""
        )
        return f"analysed models: {len(stage2)} stage-2 runs" + (f", {start}" if start else "")
    return ""


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
    header = ["claim", "statistic", "mean ± sd", *_BASELINES, "detectable", "verdict"]
    n = max((int(c.n_seeds or 0) for c in study.claims), default=0)
    models = _claims_models(study)
    body = f'<p class="muted">{_e(models)}</p>' if models else ""
    body += (
        f'<p class="muted">{n} replicate(s) (world seed × model seed); bold: the '
        "comparators a verdict needs beaten; detectable: the margin the verdict asks for, "
        "the smallest difference this design can call a hold. "
        + _e(study.verdict_rule or "")
        + "</p>"
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
