"""``taxoclip analyze``: the emergent properties of a model beside a baseline (docs/analyze.md).

The entry of the stage: read a SynthToL root or an evaluation folder
(:mod:`~taxoclip.analyze.data`), load the model (and its untrained twin, the same architecture with random
weights), embed the same images with both — or, with ``--embeddings``, read precomputed
rows of those images (:func:`~taxoclip.analyze.data.read_embeddings`) — compute every
metric the data allows for both with the same seed, measure the ceiling of the
separation statistics (:mod:`~taxoclip.analyze.ceiling`), and write

- ``OUT/metrics.json``: per metric, the full result of each model, and per headline
  statistic its value, the baseline model's value, the null (mean, sd), the counts used,
  a one-seed screen and, for a separation statistic, its ``ceiling``; metrics the data
  cannot support are listed under ``skipped`` with why;
- ``OUT/embeddings.npz``: the L2-normalised embeddings of both models with every label
  the metrics and plots need, so both can be recomputed without the model
  (:func:`~taxoclip.analyze.data.load_embeddings`,
  :func:`~taxoclip.analyze.suite.compute_metrics`, :func:`render_plots`);
- ``OUT/plots/*.png`` (:mod:`taxoclip.analyze.plots`) and ``OUT/analysis.json`` (what
  was run on what — the model or embeddings file, what the baseline was —, image counts,
  how the ceiling trained, seconds per phase).

Choices (also written into metrics.json):

- **Species centroids** are taken over ADULT images only when the data has a life stage
  (juveniles are a fixed shift of size and pattern, and their share varies by species),
  and as the midpoint of the female and male means when a species has both, so that a
  species' centroid does not move with its sampled sex ratio. Species without an adult
  image are left out of the centroid metrics.
- **Sex** is compared among adults only (SynthToL draws no sex mark on juveniles), in the
  dimorphic species (``sex_strength > 0``); the monomorphic species are a control that
  should NOT separate. **Life stage** is adult against juvenile over both sexes.
- **Traits other than the finch beak** (hue, elongation on SynthToL; every numeric
  per-species column of an evaluation folder) are measured within each order with at
  least 5 species and averaged, weighted by species ("within a clade"); over all
  species when no order is that large.
- **Verdicts**: one seed gives no spread over seeds (≥ 3 are needed before a claim is
  said to hold), so the verdict here compares the value with the null mean, any named
  baseline (majority class) and the baseline model's value, each by more than the null's
  sd (:func:`~taxoclip.analyze.metrics.claim_holds` with ``spread`` = null sd and
  ``min_values=1``). It is a screen, not the claim.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from taxoclip import __version__
from taxoclip.errors import InputError, UsageError
from taxoclip.files import write_text_atomic

from .config import AnalysisResult, AnalyzeConfig, format_summary
from .data import (
    FINCH_TRAIT,
    AnalysisData,
    Embedded,
    embedded_from,
    natural_key,
    read_analysis_data,
    read_embeddings,
    save_embeddings,
)
from .suite import (
    CENTROID_POLICY,
    GROUP_RANKS,
    SEX_VALUES,
    VERDICT_BASIS,
    adult_rows,
    compute_metrics,
    group_labels,
    species_centroids,
    usable_species,
    variant_pair,
)

__all__ = ["AnalysisResult", "format_summary", "render_plots", "run", "write_json"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


# --------------------------------------------------------------------------- run


def run(config: AnalyzeConfig) -> AnalysisResult:
    """Analyse ``config.model`` (or the rows of ``config.embeddings``) on ``config.data``
    beside its baseline; write ``config.out``.

    ``baseline``: ``"untrained"`` (the same architecture with random weights drawn from
    ``seed``; with embeddings, the file's own or ``baseline_embeddings``) or ``"none"``.
    ``split``: which SynthToL split(s) to read (``all`` by default: the within-species
    metrics want many images per species and variant).
    """
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    images = read_analysis_data(config.data, config.split)
    for path, reason in images.missing:
        log.warning("%s: %s (skipped)", path, reason)
    out = _output_folder(config.out)

    tick = time.perf_counter()
    if config.embeddings:
        emb, ok, inputs = _read_inputs(config, images)
        weights = None
        seconds["load"] = time.perf_counter() - tick
    else:
        loaded = _load_models(config)
        seconds["load"] = time.perf_counter() - tick
        tick = time.perf_counter()
        emb, ok = _embed(config, loaded, images)
        seconds["embed"] = time.perf_counter() - tick
        weights = loaded["model"].weights
        inputs = {"embeddings": None, "baseline": _twin(config)}
    save_embeddings(emb, out / "embeddings.npz")

    tick = time.perf_counter()
    metrics, skipped = compute_metrics(
        emb, seed=config.seed, min_per_variant=config.min_per_variant
    )
    seconds["metrics"] = time.perf_counter() - tick
    tick = time.perf_counter()
    ceiling = _ceiling(config, emb, metrics)
    seconds["ceiling"] = time.perf_counter() - tick
    write_json(out / "metrics.json", _metrics_payload(config, metrics, skipped, inputs))

    tick = time.perf_counter()
    written, plots_skipped = [], {}
    if config.plots:
        written, plots_skipped = render_plots(
            emb, out / "plots", seed=config.seed, min_per_variant=config.min_per_variant
        )
    for name, reason in plots_skipped.items():
        log.info("plot %s skipped: %s", name, reason)
    seconds["plots"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - started
    summary = {
        "format_version": FORMAT_VERSION,
        "taxoclip_version": __version__,
        "model": config.model,
        "pretrained": config.pretrained,
        "weights": weights,
        "embeddings": inputs["embeddings"],
        "baseline": inputs["baseline"],
        "data": str(Path(config.data).resolve()),
        "data_kind": images.kind,
        "split": config.split,
        "seed": config.seed,
        "device": config.device,
        "n_images": int(ok.sum()),
        "n_images_failed": int((~ok).sum()) + len(images.missing),
        "n_species": int(len(np.unique(emb.species))),
        "embed_dim": int(emb.z["model"].shape[1]),
        "ceiling": ceiling,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "files": ["metrics.json", "embeddings.npz", *[str(p.relative_to(out)) for p in written]],
        "plots_skipped": plots_skipped,
    }
    write_json(out / "analysis.json", summary)
    return AnalysisResult(out, metrics, skipped, summary, written)


def _twin(config: AnalyzeConfig) -> str | None:
    """What a model's baseline is, in words (None without one)."""
    if config.baseline != "untrained":
        return None
    return f"untrained twin (same architecture, random weights, seed {config.seed})"


def _read_inputs(
    config: AnalyzeConfig, images: AnalysisData
) -> tuple[Embedded, np.ndarray, dict[str, Any]]:
    """``--embeddings`` (and its baseline) as :class:`Embedded` over every image, the
    images it covers (all), and what was read, for metrics.json and analysis.json."""
    model = read_embeddings(config.embeddings, images, config.data)
    z = {"model": model.z}
    baseline = None
    if config.baseline_embeddings:
        other = read_embeddings(
            config.baseline_embeddings, images, config.data, flag="--baseline-embeddings"
        )
        z["baseline"] = other.z
        baseline = f"--baseline-embeddings {other.path} ({other.source})"
    elif model.baseline is not None and config.baseline != "none":
        z["baseline"] = model.baseline
        baseline = f"z_baseline of {model.path} (the baseline of the analysis that wrote it)"
    ok = np.ones(len(images.filepaths), dtype=bool)
    inputs = {"embeddings": {"file": str(model.path), "read": model.source}, "baseline": baseline}
    return embedded_from(images, z, ok), ok, inputs


def _ceiling(config: AnalyzeConfig, emb: Embedded, metrics: dict) -> dict[str, Any]:
    """Measure the ceiling and write it into ``metrics`` (in place); what analysis.json
    says of it, or why there is none."""
    from .ceiling import SEPARATION, attach, measure_ceiling

    if not config.ceiling:
        return {"skipped": "--no-ceiling"}
    if not any(entry.get("kind") == SEPARATION for entry in metrics.values()):
        return {"skipped": "no separation statistic to put a ceiling on"}
    from taxoclip.models.device import resolve_device

    result = measure_ceiling(
        emb,
        seed=config.seed,
        min_per_variant=config.min_per_variant,
        device=resolve_device(config.device),
    )
    if isinstance(result, str):
        log.warning("ceiling skipped: %s", result)
        return {"skipped": result}
    attach(metrics, result)
    return result.summary


def _output_folder(out: str | Path) -> Path:
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create it: {exc}") from exc
    return out


def _load_models(config: AnalyzeConfig) -> dict[str, Any]:
    """``{"model": LoadedModel, "baseline": its untrained twin}`` (no baseline for "none")."""
    from taxoclip.models import load_model, untrained_twin
    from taxoclip.models.device import resolve_device

    device = resolve_device(config.device)
    loaded = {"model": load_model(config.model, pretrained=config.pretrained, device=device)}
    if loaded["model"].weights is None:
        log.warning("model %s has random weights (no pretrained weights were named)", config.model)
    if config.baseline == "untrained":
        loaded["baseline"] = untrained_twin(loaded["model"], seed=config.seed)
        loaded["baseline"].model.to(device)
    for item in loaded.values():
        item.model.eval()
    return loaded


def _embed(
    config: AnalyzeConfig, loaded: dict[str, Any], images: AnalysisData
) -> tuple[Embedded, np.ndarray]:
    """Every readable image embedded by each model, and which of ``images`` those are."""
    from taxoclip.evaluate.features import image_features
    from taxoclip.models.device import resolve_device
    from taxoclip.runtime.encode import choose_runtime, open_encoder

    device, n = resolve_device(config.device), len(images.filepaths)
    encoders = {}
    if choose_runtime(config.runtime, config.model, config.device) != "torch":  # ONNX tower
        encoders["model"] = open_encoder(config.model, config.runtime, device=config.device)
    features = {
        name: image_features(
            item,
            images.filepaths,
            None,
            config.batch_size,
            device=device,
            progress=config.progress,
            encoder=encoders.get(name),
        )
        for name, item in loaded.items()
    }
    ok = np.ones(n, dtype=bool)
    for feats in features.values():
        ok &= feats.full(n)[0]
    for index, reason in features["model"].errors.items():
        log.warning("%s: %s (skipped)", images.filepaths[index], reason)
    if not ok.any():
        raise InputError(f"--data {config.data}: none of its {n} images could be read")
    z = {}
    for name, feats in features.items():
        full = np.zeros((n, feats.values.shape[1]), np.float32)
        full[feats.ok] = feats.values  # rows of values follow feats.ok
        z[name] = full[ok]
    return embedded_from(images, z, ok), ok


def _metrics_payload(config: AnalyzeConfig, metrics: dict, skipped: dict, inputs: dict) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "model": config.model,
        "embeddings": inputs["embeddings"],
        "baseline": inputs["baseline"],
        "data": str(Path(config.data).resolve()),
        "split": config.split,
        "seed": config.seed,
        "verdict_basis": VERDICT_BASIS,
        "centroids": CENTROID_POLICY,
        "metrics": metrics,
        "skipped": skipped,
    }


# --------------------------------------------------------------------------- JSON


def _jsonable(value: Any) -> Any:
    """Plain JSON: numpy scalars to Python, non-finite floats to null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(path: Path, payload: dict) -> None:
    """Strict JSON (NaN as null), written atomically."""
    write_text_atomic(path, json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")


# --------------------------------------------------------------------------- plots


def render_plots(
    emb: Embedded, out_dir: str | Path, *, seed: int = 0, min_per_variant: int = 4
) -> tuple[list[Path], dict[str, str]]:
    """Every plot ``emb`` allows into ``out_dir``: ``(written, {plot: why skipped})``."""
    try:
        from . import plots
    except ImportError as exc:  # matplotlib missing
        return [], {"all": f"plots skipped: {exc}"}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    skipped: dict[str, str] = {}
    labels = {"model": "model", "baseline": "untrained baseline"}
    table = emb.table
    centroids = {labels[name]: species_centroids(z, emb) for name, z in emb.z.items()}
    kept = next(iter(centroids.values()))[0]

    # t-SNE of the species centroids
    if len(kept) < 5:
        skipped["tsne.png"] = f"{len(kept)} species with a centroid; need 5"
    else:
        colourings = {}
        for title, values in (
            ("order", table.rank("order")[kept]),
            ("habitat", table.habitat[kept]),
            ("family", table.rank("family")[kept]),
        ):
            if np.any(values != "") and len(colourings) < 2:
                colourings[title] = np.where(values == "", "(unknown)", values)
        if not colourings:
            colourings["species"] = table.ids[kept]
        path = out_dir / "tsne.png"
        plots.plot_tsne({k: v[1] for k, v in centroids.items()}, colourings, path, seed=seed)
        written.append(path)

    # 3-D view of the sex direction in one group
    group = _variants_group(emb, min_per_variant)
    if isinstance(group, str):
        skipped["variants_3d.png"] = group
    else:
        rows, pair, title = group
        path = out_dir / "variants_3d.png"
        plots.plot_variants_3d(
            {labels[k]: z[rows] for k, z in emb.z.items()},
            emb.species[rows],
            emb.sex[rows],
            pair,
            path,
            title=title,
            species_names=_species_names(emb, emb.species[rows]),
        )
        written.append(path)

    # finch beak length against PC1
    finch = kept[np.nan_to_num(table.is_finch[kept], nan=0.0) == 1]
    beak = table.trait(FINCH_TRAIT)
    finch = finch[np.isfinite(beak[finch])]
    if len(finch) < 3:
        skipped["finch_beak.png"] = f"{len(finch)} finch species with a beak length; need 3"
    else:
        select = np.isin(kept, finch)
        genus = ", ".join(sorted(set(table.rank("genus")[finch].tolist())))
        path = out_dir / "finch_beak.png"
        plots.plot_finch_beak(
            {k: v[1][select] for k, v in centroids.items()},
            beak[kept[select]],
            path,
            title=f"Finch genus {genus}",
            names=[_species_names(emb, table.ids[[i]])[table.ids[i]] for i in kept[select]],
        )
        written.append(path)
    return written, skipped


def _species_names(emb: Embedded, species: np.ndarray) -> dict[str, str]:
    genus, epithet = emb.table.rank("genus"), emb.table.rank("species")
    names = {}
    for sid in np.unique(species).tolist():
        index = int(np.flatnonzero(emb.table.ids == sid)[0])
        name = f"{genus[index][:1]}. {epithet[index]}" if epithet[index] else sid
        names[sid] = name.strip()
    return names


def _variants_group(emb: Embedded, min_per_variant: int, max_species: int = 6):
    """(rows, sex pair, title) for the 3-D plot: the genus (else family) with the most
    dimorphic species with enough adult images of both sexes; or why there is none."""
    adults = adult_rows(emb)
    pair = variant_pair(emb.sex[adults], SEX_VALUES)
    if pair is None:
        return "no sex column with two values"
    strength = emb.table.sex_strength[emb.species_index]
    rows = adults & np.isin(emb.sex, pair)
    if not np.all(np.isnan(emb.table.sex_strength)):
        rows &= strength > 0
    used = usable_species(emb.species[rows], emb.sex[rows], pair, min_per_variant)
    for rank in GROUP_RANKS[:2]:
        groups = group_labels(emb, rank)
        members: dict[str, list[str]] = {}
        for sid in used:
            members.setdefault(groups[emb.species == sid][0], []).append(sid)
        best = sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        if best and len(best[0][1]) >= 2:
            name, species = best[0]
            counts = {s: int(np.sum(rows & (emb.species == s))) for s in species}
            species = sorted(species, key=lambda s: (-counts[s], natural_key(s)))[:max_species]
            chosen = rows & np.isin(emb.species, species)
            return chosen, pair, f"{rank} {name}: {len(species)} dimorphic species"
    return (
        f"no genus or family holds 2 dimorphic species with >= {min_per_variant} adult "
        f"images of each sex"
    )
