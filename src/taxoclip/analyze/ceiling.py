"""The ceiling of the separation statistics: what the images let a network learn at all.

A small CNN is trained on the pixels of the analysed images, downsampled to
:data:`PIXELS`, WITH the labels the statistics ask about: species, sex (adults) and life
stage, one head each. It trains on one half of the images and is measured on the other:
each species × sex × life-stage cell is halved at random (the larger half measured), so
every variant of a species is on both sides and the ceiling is never fitted on the images
it is measured on. The network's penultimate features of the measured half,
L2-normalised, go through the same separation statistics as the model
(:func:`~taxoclip.analyze.suite.compute_metrics`), nulls included.

A ceiling is a lower bound on what is learnable (a better network could do more), read
from half the images a model's statistic uses; a model well below it has not learned
what the pixels and labels allow, a model at it has. It depends only on the images, the
labels and the seed, never on the model analysed, so one process measures it once for
each of them (:data:`_MEASURED`): the scaling study analyses many models of one world.
The cost is almost all in the statistics, not the training (docs/analyze.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .data import Embedded, SpeciesTable
from .suite import SEX_VALUES, STAGE_VALUES, adult_rows, compute_metrics, variant_pair

log = logging.getLogger(__name__)

PIXELS = 32  # images are downsampled to this side (SynthToL's default size)
WIDTHS = (16, 32, 64)  # channels of the three stride-2 conv blocks
FEATURES = 64  # the penultimate layer: the features measured
# A fixed number of steps, not epochs: 8 epochs of the demo's 3,840 training images, and
# enough steps to learn on a small world too (its epochs are then many and cheap).
STEPS = 240
BATCH = 128
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-4
SEPARATION = "intra_species_separation"  # the metric kind that gets a ceiling

BASIS = (
    f"a CNN ({len(WIDTHS)} conv blocks, {FEATURES}-d features) trained for {STEPS} steps "
    f"on {PIXELS}-px pixels with species, sex (adults) and life-stage labels, on half of "
    "each species x sex x life-stage cell of images; its features of the OTHER half, "
    "L2-normalised, measured by the same statistic: a lower bound on what is learnable, "
    "from half the images"
)


@dataclass(frozen=True)
class CeilingFeatures:
    """The trained network's features of the measured half, and how it trained."""

    measured: np.ndarray  # (N,) bool over the analysed images: the half measured
    features: np.ndarray  # (measured.sum(), FEATURES) float32, L2-normalised
    accuracy: dict[str, dict[str, float]]  # "trained" / "measured" half -> head -> accuracy
    seconds: float


@dataclass(frozen=True)
class Ceiling:
    """Per separation metric, each statistic's ceiling (value and null) and the counts of
    the measured half; ``summary`` for analysis.json."""

    stats: dict[str, dict[str, dict[str, Any]]]  # metric -> statistic -> {value, null}
    n_used: dict[str, dict[str, Any]]  # metric -> counts of the measured half
    summary: dict[str, Any]


#: (images, labels, seed, min_per_variant, device) -> its ceiling: one per world and seed.
_MEASURED: dict[tuple, Ceiling] = {}
_KEEP = 4  # ceilings remembered


def held_out_half(emb: Embedded, seed: int) -> np.ndarray:
    """Which images are measured (True) rather than trained on: each species × sex ×
    life-stage cell shuffled with ``seed`` and its larger half measured."""
    rng = np.random.default_rng(seed)
    measured = np.zeros(len(emb.species), dtype=bool)
    cells: dict[tuple[str, str, str], list[int]] = {}
    for i, cell in enumerate(zip(emb.species, emb.sex, emb.life_stage, strict=True)):
        cells.setdefault(cell, []).append(i)
    for key in sorted(cells):
        rows = rng.permutation(cells[key])
        measured[rows[: (len(rows) + 1) // 2]] = True
    return measured


def labels(emb: Embedded) -> dict[str, np.ndarray]:
    """Per head, each image's class code (-1: no label, not trained on)."""
    codes = {"species": emb.species_index.astype(np.int64)}
    adults = adult_rows(emb)
    for head, values, rows, preferred in (
        ("sex", emb.sex, adults, SEX_VALUES),
        ("life_stage", emb.life_stage, np.ones(len(emb.species), dtype=bool), STAGE_VALUES),
    ):
        pair = variant_pair(values[rows], preferred)
        code = np.full(len(values), -1, dtype=np.int64)
        if pair is not None:
            code[rows & (values == pair[0])] = 0
            code[rows & (values == pair[1])] = 1
        codes[head] = code
    return codes


def measure_ceiling(
    emb: Embedded,
    *,
    seed: int = 0,
    min_per_variant: int = 4,
    device: str = "cpu",
) -> Ceiling | str:
    """The ceiling of every separation statistic ``emb``'s labels allow, or why there is
    none (no variant labels, unreadable images); remembered per images, labels, seed and
    device (:data:`_MEASURED`)."""
    codes = labels(emb)
    if (codes["sex"] < 0).all() and (codes["life_stage"] < 0).all():
        return "no sex or life_stage column with two values"
    key = (
        tuple(emb.filepath.tolist()),
        *(tuple(c.tolist()) for c in codes.values()),
        tuple(emb.table.sex_strength[emb.species_index].tolist()),  # dimorphic or not
        seed,
        min_per_variant,
        device,
    )
    if key in _MEASURED:
        return _MEASURED[key]
    tick = time.perf_counter()
    try:
        trained = train_features(emb, codes, seed=seed, device=device)
    except OSError as exc:  # an image that cannot be read: the model's numbers stand alone
        return f"an image cannot be read: {exc}"
    measured = trained.measured
    table = emb.table
    # Only the labels the separation statistics read: with no lineage, habitat or trait,
    # compute_metrics skips every other metric instead of spending time on it.
    bare = SpeciesTable(
        ids=table.ids,
        lineages=np.full_like(table.lineages, ""),
        habitat=np.full_like(table.habitat, ""),
        sex_strength=table.sex_strength,
        is_finch=np.full(len(table.ids), np.nan),
        trait_names=[],
        traits=np.zeros((len(table.ids), 0)),
    )
    half = Embedded(
        {"model": trained.features},
        emb.species[measured],
        emb.sex[measured],
        emb.life_stage[measured],
        emb.split[measured],
        emb.filepath[measured],
        bare,
        emb.kind,
        [],
    )
    metrics, _ = compute_metrics(half, seed=seed, min_per_variant=min_per_variant)
    stats: dict[str, dict[str, dict[str, Any]]] = {}
    n_used: dict[str, dict[str, Any]] = {}
    for name, entry in metrics.items():
        if entry.get("kind") != SEPARATION:
            continue
        n_used[name] = entry.get("n_used", {})
        stats[name] = {
            stat: {"value": item.get("value"), "null": item.get("null")}
            for stat, item in entry["stats"].items()
        }
    summary = {
        "basis": BASIS,
        "images_trained": int((~measured).sum()),
        "images_measured": int(measured.sum()),
        "pixels": PIXELS,
        "steps": STEPS,
        "accuracy": trained.accuracy,
        "seconds_training": round(trained.seconds, 3),
        "seconds": round(time.perf_counter() - tick, 3),
    }
    result = Ceiling(stats, n_used, summary)
    if len(_MEASURED) >= _KEEP:
        _MEASURED.pop(next(iter(_MEASURED)))
    _MEASURED[key] = result
    return result


def attach(metrics: dict[str, dict], ceiling: Ceiling) -> None:
    """Write the ceiling beside each separation statistic of ``metrics`` (in place):
    ``stats[stat]["ceiling"]`` its value, the entry's ``ceiling`` the rest."""
    for name, per_stat in ceiling.stats.items():
        entry = metrics.get(name)
        if entry is None:
            continue
        for stat, values in per_stat.items():
            if stat in entry["stats"]:
                entry["stats"][stat]["ceiling"] = values["value"]
        entry["ceiling"] = {"basis": BASIS, "n_used": ceiling.n_used[name], "stats": per_stat}


# --------------------------------------------------------------------------- the network


def train_features(
    emb: Embedded, codes: dict[str, np.ndarray], *, seed: int = 0, device: str = "cpu"
) -> CeilingFeatures:
    """Train on one half (:func:`held_out_half`) with ``codes`` (:func:`labels`), return
    the features of the other."""
    import torch

    tick = time.perf_counter()
    measured = held_out_half(emb, seed)
    pixels = load_pixels(emb.filepath.tolist())
    threads = torch.get_num_threads()
    # One thread: convolutions this small gain little from a second one, and on a busy
    # machine its spinning made the training 5-10x slower (measured: 17 against 1.9
    # CPU-seconds per epoch of 3,840 images).
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        net = _network(len(emb.table.ids)).to(device)
        train, rows = np.flatnonzero(~measured), np.flatnonzero(measured)
        _fit(net, pixels[train], {k: c[train] for k, c in codes.items()}, seed, device)
        accuracy = {
            "trained": _accuracy(
                net, pixels[train], {k: c[train] for k, c in codes.items()}, device
            ),
            "measured": _accuracy(
                net, pixels[rows], {k: c[rows] for k, c in codes.items()}, device
            ),
        }
        features = _features(net, pixels[rows], device)
    finally:
        torch.set_num_threads(threads)
    return CeilingFeatures(measured, features, accuracy, time.perf_counter() - tick)


def load_pixels(paths: list[str]) -> np.ndarray:
    """(N, 3, PIXELS, PIXELS) uint8 RGB of each image, resized when not already that size
    (``OSError`` naming the image that cannot be read)."""
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(paths), 3, PIXELS, PIXELS), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                image.draft("RGB", (PIXELS, PIXELS))  # JPEG: decode at a reduced scale
                image = image.convert("RGB")
                if image.size != (PIXELS, PIXELS):
                    image = image.resize((PIXELS, PIXELS), Image.Resampling.BILINEAR)
                out[i] = np.asarray(image).transpose(2, 0, 1)
        except (OSError, UnidentifiedImageError) as exc:
            raise OSError(f"{path}: {exc}") from exc
    return out


def _network(n_species: int):
    """Three conv blocks (3 × 3 conv of stride 2, batch norm, ReLU), a FEATURES-wide
    layer, and one linear head per label."""
    import torch
    from torch import nn

    layers: list[nn.Module] = []
    width_in = 3
    for width in WIDTHS:
        layers += [
            nn.Conv2d(width_in, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        ]
        width_in = width
    side = PIXELS // 2 ** len(WIDTHS)
    # Flattened, not pooled: where a mark sits (a crest on the head) is part of it.
    body = nn.Sequential(
        *layers, nn.Flatten(), nn.Linear(width_in * side * side, FEATURES), nn.ReLU()
    )

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body
            self.heads = nn.ModuleDict(
                {
                    "species": nn.Linear(FEATURES, n_species),
                    "sex": nn.Linear(FEATURES, 2),
                    "life_stage": nn.Linear(FEATURES, 2),
                }
            )

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            features = self.body(x)
            return features, {name: head(features) for name, head in self.heads.items()}

    return Net()


def _inputs(pixels: np.ndarray, device: str):
    import torch

    return torch.from_numpy(pixels).to(device).float().div_(255.0).sub_(0.5)


def _fit(net, pixels: np.ndarray, codes: dict[str, np.ndarray], seed: int, device: str) -> None:
    """STEPS of AdamW over batches of a reshuffled order each epoch; the loss sums the
    heads' cross-entropies, each over the images that carry its label."""
    import torch
    from torch import nn

    loss_of = nn.CrossEntropyLoss(ignore_index=-1)
    optimiser = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    targets = {k: torch.from_numpy(c).to(device) for k, c in codes.items()}
    generator = torch.Generator().manual_seed(seed)
    batch = min(BATCH, len(pixels))
    net.train()
    step = 0
    while step < STEPS:
        order = torch.randperm(len(pixels), generator=generator).numpy()
        for start in range(0, len(order) - batch + 1, batch):  # full batches only
            rows = order[start : start + batch]
            _, logits = net(_inputs(pixels[rows], device))
            loss = sum(
                loss_of(logits[k], targets[k][rows])
                for k in logits
                if bool((targets[k][rows] >= 0).any())
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
            if step == STEPS:
                break
    net.eval()


def _outputs(net, pixels: np.ndarray, device: str):
    import torch

    features, logits = [], {}
    with torch.no_grad():
        for start in range(0, len(pixels), 256):
            f, out = net(_inputs(pixels[start : start + 256], device))
            features.append(f.cpu().numpy())
            for k, v in out.items():
                logits.setdefault(k, []).append(v.argmax(dim=1).cpu().numpy())
    return np.concatenate(features), {k: np.concatenate(v) for k, v in logits.items()}


def _features(net, pixels: np.ndarray, device: str) -> np.ndarray:
    features = _outputs(net, pixels, device)[0].astype(np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    # A ReLU layer can be all zero for an image: it stays zero rather than dividing by 0.
    return (features / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _accuracy(net, pixels: np.ndarray, codes: dict[str, np.ndarray], device: str) -> dict:
    """Per head, the share of labelled images it classifies right."""
    predicted = _outputs(net, pixels, device)[1]
    return {
        k: round(float(np.mean(predicted[k][c >= 0] == c[c >= 0])), 4)
        for k, c in codes.items()
        if (c >= 0).any()
    }


__all__ = [
    "BASIS",
    "Ceiling",
    "CeilingFeatures",
    "attach",
    "held_out_half",
    "labels",
    "load_pixels",
    "measure_ceiling",
    "train_features",
]
