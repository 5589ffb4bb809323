"""Figures of ``taxoclip analyze``: PNGs from arrays, one function per figure.

Each function takes arrays (or metric rows) and an output path and writes one PNG. They
draw on :class:`matplotlib.figure.Figure` directly, never through ``pyplot``: no GUI
backend is chosen, no global figure state is kept, and a caller's own matplotlib set-up
is left alone (``Figure.savefig`` renders with Agg). Importing this module needs
matplotlib; ``run.render_plots`` reports the plots as skipped when it is missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from taxoclip.stats import pc1_scores, spearman

DPI = 110
_MAX_LEGEND = 14  # categories beyond this are coloured but not listed
_MARKERS = ("o", "^")


# --------------------------------------------------------------------------- helpers


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG at the plots' resolution, making the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _palette(categories: Sequence[str]) -> dict[str, tuple]:
    """A colour per category: tab10 / tab20 when they suffice, else a sampled colormap."""
    k = len(categories)
    if k <= 10:
        colours = matplotlib.colormaps["tab10"].colors[:k]
    elif k <= 20:
        colours = matplotlib.colormaps["tab20"].colors[:k]
    else:
        cmap = matplotlib.colormaps["turbo"]
        colours = [cmap(x) for x in np.linspace(0.05, 0.95, k)]
    return dict(zip(categories, colours, strict=True))


def tsne_2d(x: np.ndarray, *, seed: int = 0, perplexity: float | None = None) -> np.ndarray:
    """2-D t-SNE of the L2-normalised rows of ``x`` (euclidean on unit rows ~ cosine).

    Perplexity defaults to min(30, (n − 1) / 3), at least 2, and always below n.
    """
    from sklearn.manifold import TSNE

    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    if perplexity is None:
        perplexity = min(30.0, max(2.0, (n - 1) / 3))
    perplexity = min(perplexity, n - 1.0)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        x
    )


# --------------------------------------------------------------------------- t-SNE


def plot_tsne(
    centroids: Mapping[str, np.ndarray],
    colourings: Mapping[str, Sequence[str]],
    path: str | Path,
    *,
    seed: int = 0,
    perplexity: float | None = None,
    points: str = "species centroids",
) -> Path:
    """t-SNE of each model's points (rows of the grid) coloured by each labelling (columns).

    ``centroids``: model label → (S, D), the same S points for every model;
    ``colourings``: title (e.g. ``"order"``, ``"habitat"``) → S category labels.
    """
    models, keys = list(centroids), list(colourings)
    n = len(next(iter(centroids.values())))
    for key, labels in colourings.items():
        if len(labels) != n:
            raise ValueError(f"colouring {key!r} has {len(labels)} labels for {n} points")
    maps = {name: tsne_2d(x, seed=seed, perplexity=perplexity) for name, x in centroids.items()}
    fig = Figure(
        figsize=(4.6 * len(keys) + 1.8 * len(keys), 4.2 * len(models) + 0.6), layout="constrained"
    )
    axes = np.atleast_2d(fig.subplots(len(models), len(keys), squeeze=False))
    for col, key in enumerate(keys):
        labels = np.asarray(colourings[key], dtype=str)
        categories = sorted(set(labels.tolist()))
        colours = _palette(categories)
        for row, name in enumerate(models):
            ax = axes[row, col]
            xy = maps[name]
            for category in categories:
                mine = labels == category
                ax.scatter(
                    xy[mine, 0],
                    xy[mine, 1],
                    s=28,
                    color=colours[category],
                    edgecolor="white",
                    linewidth=0.4,
                    label=category,
                )
            ax.set_title(f"{name} — coloured by {key}", fontsize=11)
            ax.set_xlabel("t-SNE 1")
            ax.set_ylabel("t-SNE 2")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                if len(categories) <= _MAX_LEGEND:
                    ax.legend(
                        title=key,
                        fontsize=8,
                        title_fontsize=9,
                        loc="upper left",
                        bbox_to_anchor=(1.01, 1.0),
                        frameon=False,
                    )
                else:
                    ax.text(
                        1.02,
                        1.0,
                        f"{len(categories)} {key} values\n(legend omitted)",
                        transform=ax.transAxes,
                        va="top",
                        fontsize=8,
                    )
    fig.suptitle(
        f"t-SNE of {n} {points} (perplexity "
        f"{min(30.0, max(2.0, (n - 1) / 3)) if perplexity is None else perplexity:.0f})",
        fontsize=12,
    )
    return save_figure(fig, path)


# --------------------------------------------------------------------------- 3-D variants


def variant_axes(
    z: np.ndarray, species: np.ndarray, variant: np.ndarray, values: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray, float]:
    """(origin (D,), axes (3, D), share) for the paper-style 3-D view.

    Axes 1–2: the top principal directions of the species centres (midpoints of the two
    variant means); axis 3: the mean variant direction δ̄ = mean_s(μ_{s,a} − μ_{s,b}) with
    its part in axes 1–2 removed. ``share`` = ‖P⊥δ̄‖ / ‖δ̄‖, how much of δ̄ lies outside
    the two species axes. With two species the centres span one axis; the second is then
    the top principal direction of the images around their own variant means.
    """
    z = np.asarray(z, dtype=np.float64)
    names = np.unique(species)
    centres, deltas = [], []
    for name in names:
        a = z[(species == name) & (variant == values[0])]
        b = z[(species == name) & (variant == values[1])]
        centres.append((a.mean(axis=0) + b.mean(axis=0)) / 2)
        deltas.append(a.mean(axis=0) - b.mean(axis=0))
    centres = np.asarray(centres)
    origin = centres.mean(axis=0)
    basis = list(np.linalg.svd(centres - origin, full_matrices=False)[2][: min(2, len(names) - 1)])
    if len(basis) < 2:
        residual = np.vstack(
            [
                z[(species == name) & (variant == v)]
                - z[(species == name) & (variant == v)].mean(0)
                for name in names
                for v in values
            ]
        )
        for u in basis:
            residual = residual - np.outer(residual @ u, u)
        basis.append(np.linalg.svd(residual, full_matrices=False)[2][0])
    basis = np.asarray(basis)
    delta = np.mean(deltas, axis=0)
    outside = delta - basis.T @ (basis @ delta)
    norm = float(np.linalg.norm(delta))
    share = float(np.linalg.norm(outside)) / norm if norm > 0 else math.nan
    third = outside / np.linalg.norm(outside) if np.linalg.norm(outside) > 0 else basis[0] * 0
    return origin, np.vstack([basis, third]), share


def plot_variants_3d(
    z: Mapping[str, np.ndarray],
    species: Sequence[str],
    variant: Sequence[str],
    values: tuple[str, str],
    path: str | Path,
    *,
    title: str = "",
    species_names: Mapping[str, str] | None = None,
) -> Path:
    """Images of a few related species in 3-D: two species axes and the variant axis.

    ``z``: model label → (n, D) image embeddings of the group (same images per model);
    points coloured by species, marker by variant (``values``: circle, triangle); a line
    joins each species' two variant means (large markers).
    """
    from mpl_toolkits.mplot3d import Axes3D  # noqa: F401  (registers the 3-D projection)

    species, variant = np.asarray(species, dtype=str), np.asarray(variant, dtype=str)
    names = sorted(set(species.tolist()))
    colours = _palette(names)
    labels = dict(species_names or {})
    fig = Figure(figsize=(6.2 * len(z) + 2.4, 5.4), layout="constrained")
    for column, (model, x) in enumerate(z.items()):
        origin, axes, share = variant_axes(x, species, variant, values)
        xyz = (np.asarray(x, dtype=np.float64) - origin) @ axes.T
        ax = fig.add_subplot(1, len(z), column + 1, projection="3d")
        for name in names:
            for marker, value in zip(_MARKERS, values, strict=True):
                mine = (species == name) & (variant == value)
                ax.scatter(
                    *xyz[mine].T,
                    color=colours[name],
                    marker=marker,
                    s=16,
                    alpha=0.55,
                    depthshade=False,
                )
            means = [xyz[(species == name) & (variant == v)].mean(axis=0) for v in values]
            ax.plot(*np.asarray(means).T, color=colours[name], linewidth=2.2)
            for marker, mean in zip(_MARKERS, means, strict=True):
                ax.scatter(
                    *mean,
                    color=colours[name],
                    marker=marker,
                    s=90,
                    edgecolor="black",
                    linewidth=0.8,
                    depthshade=False,
                )
        ax.set_xlabel("species PC 1", fontsize=9, labelpad=2)
        ax.set_ylabel("species PC 2", fontsize=9, labelpad=2)
        ax.set_zlabel(f"{values[0]}–{values[1]} axis", fontsize=9, labelpad=2)
        ax.tick_params(labelsize=7)
        ax.set_title(
            f"{model}\nshare of the mean {values[0]}–{values[1]} direction outside "
            f"the species plane: {share:.2f}",
            fontsize=10,
        )
        ax.view_init(elev=18, azim=-58)
    handles = [
        Line2D(
            [], [], color=colours[n], marker="s", linestyle="", markersize=8, label=labels.get(n, n)
        )
        for n in names
    ]
    handles += [
        Line2D([], [], color="0.3", marker=mk, linestyle="", markersize=8, label=v)
        for mk, v in zip(_MARKERS, values, strict=True)
    ]
    handles.append(Line2D([], [], color="0.3", linewidth=2.2, label="joins variant means"))
    fig.legend(handles=handles, loc="outside right center", fontsize=9, frameon=False)
    fig.suptitle(title or f"{values[0]} vs {values[1]} within related species", fontsize=12)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- finch


def plot_finch_beak(
    centroids: Mapping[str, np.ndarray],
    beak: Sequence[float],
    path: str | Path,
    *,
    title: str = "Finch genus",
    names: Sequence[str] | None = None,
) -> Path:
    """Beak length against PC1 of the finch species' centroids, one panel per model.

    PC1's sign is arbitrary; it is flipped so the correlation reads positive, and the
    title gives |ρ| (Spearman).
    """
    beak = np.asarray(beak, dtype=np.float64)
    fig = Figure(figsize=(4.8 * len(centroids), 4.3), layout="constrained")
    axes = fig.subplots(1, len(centroids), squeeze=False)[0]
    for ax, (model, x) in zip(axes, centroids.items(), strict=True):
        x = np.asarray(x, dtype=np.float64)
        pc1 = pc1_scores(x)
        pc1 = np.zeros(len(x)) if pc1 is None else pc1
        rho = spearman(pc1, beak)
        if rho < 0:
            pc1, rho = -pc1, -rho
        ax.scatter(pc1, beak, s=40, color="tab:orange", edgecolor="black", linewidth=0.6)
        if np.ptp(pc1) > 0:
            slope, intercept = np.polyfit(pc1, beak, 1)
            line = np.linspace(pc1.min(), pc1.max(), 2)
            ax.plot(line, slope * line + intercept, color="0.4", linestyle=":", linewidth=1.2)
        if names is not None and len(names) <= 12:
            for px, py, label in zip(pc1, beak, names, strict=True):
                ax.annotate(label, (px, py), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_title(
            f"{model}: |ρ| = {rho:.2f}" if math.isfinite(rho) else f"{model}: ρ n/a", fontsize=11
        )
        ax.margins(x=0.18, y=0.1)  # room for the species labels
        ax.set_xlabel("PC 1 of the finch species centroids")
        ax.set_ylabel("beak length (ground truth)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}: beak length vs PC 1 ({len(beak)} species)", fontsize=12)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- scaling


def plot_scaling(
    rows: Sequence[Mapping[str, object]],
    path: str | Path,
    *,
    title: str = "Emergent properties against training data size",
    xlabel: str = "training images",
    ylabel: str = "metric value",
) -> Path:
    """Metric values against data size (log x): one line per metric, baseline dashed.

    Each row: ``{"data_size": n, "metric": name, "value": v}`` with optional
    ``"baseline_value"`` (drawn dashed in the metric's colour). Several rows for the
    same metric and size (seeds) are averaged, with their sd as error bars.
    """
    if not rows:
        raise ValueError("plot_scaling needs at least one row")
    table: dict[str, dict[float, dict[str, list[float]]]] = {}
    for row in rows:
        for key in ("data_size", "metric", "value"):
            if key not in row:
                raise ValueError(f"scaling row {dict(row)} lacks {key!r}")
        size = float(row["data_size"])  # type: ignore[arg-type]
        if size <= 0:
            raise ValueError(f"data_size must be positive for a log axis, got {size}")
        cell = table.setdefault(str(row["metric"]), {}).setdefault(size, {"v": [], "b": []})
        cell["v"].append(float(row["value"]))  # type: ignore[arg-type]
        if row.get("baseline_value") is not None:
            cell["b"].append(float(row["baseline_value"]))  # type: ignore[arg-type]
    colours = _palette(list(table))
    fig = Figure(figsize=(8.8, 4.8), layout="constrained")
    ax = fig.subplots()
    any_baseline = False
    for metric, cells in table.items():
        sizes = sorted(cells)
        means = [np.nanmean(cells[s]["v"]) for s in sizes]
        sds = [np.nanstd(cells[s]["v"], ddof=1) if len(cells[s]["v"]) > 1 else 0.0 for s in sizes]
        ax.errorbar(
            sizes,
            means,
            yerr=sds if any(sds) else None,
            color=colours[metric],
            marker="o",
            linewidth=1.8,
            capsize=3,
            label=metric,
        )
        with_base = [s for s in sizes if cells[s]["b"]]
        if with_base:
            any_baseline = True
            ax.plot(
                with_base,
                [np.nanmean(cells[s]["b"]) for s in with_base],
                color=colours[metric],
                linestyle="--",
                linewidth=1.3,
                alpha=0.8,
            )
    ax.set_xscale("log")
    ax.set_xlabel(f"{xlabel} (log scale)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    handles, _ = ax.get_legend_handles_labels()
    if any_baseline:
        handles.append(Line2D([], [], color="0.3", linestyle="--", label="untrained baseline"))
    fig.legend(handles=handles, fontsize=9, loc="outside right upper", frameon=False)
    ax.set_title(title, fontsize=12)
    return save_figure(fig, path)
