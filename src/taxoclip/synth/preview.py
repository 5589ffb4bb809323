"""Contact sheet of SynthToL: rows by clade, columns by sex and life stage.

The first block shows one species per order (clades differ in body plan, colour,
pattern); the second the finch genus sorted by beak length. Columns: the four variants
in a canonical pose on a plain scene, then three ordinary individuals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .render import render, sample_image_params
from .tree import Species

_VARIANTS = (("female", False), ("male", False), ("female", True), ("male", True))
_HEADERS = ("adult female", "adult male", "juv. female", "juv. male", "individuals")
_N_INDIVIDUALS = 3
MAX_CLADE_ROWS = 16


def _rows(species: list[Species]) -> list[Species]:
    by_order: dict[tuple[str, ...], Species] = {}
    for sp in species:
        if not sp.is_finch:
            by_order.setdefault(sp.lineage.ranks[:4], sp)
    clades = list(by_order.values())
    if len(clades) > MAX_CLADE_ROWS:
        picks = np.linspace(0, len(clades) - 1, MAX_CLADE_ROWS).round().astype(int)
        clades = [clades[i] for i in picks]
    finches = sorted((s for s in species if s.is_finch), key=lambda s: s.beak_length)
    return clades + finches


def contact_sheet(species: list[Species], config, path: Path) -> Path:
    """Render and save the sheet; returns ``path``."""
    size = config.image_size
    zoom = max(1, 96 // size)
    tile = size * zoom
    rows = _rows(species)
    label_w, header_h, gap = 330, 22, 4
    n_cols = len(_VARIANTS) + _N_INDIVIDUALS
    width = label_w + n_cols * (tile + gap)
    height = header_h + len(rows) * (tile + gap)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for col, header in enumerate(_HEADERS):
        draw.text((label_w + col * (tile + gap) + 4, 4), header, fill=(0, 0, 0), font=font)

    for r, sp in enumerate(rows):
        rng = np.random.default_rng([config.seed, 9, sp.species_id])
        row = sp.as_row()
        canonical = sample_image_params(
            row,
            len(_VARIANTS),
            rng,
            sex=np.array([s == "male" for s, _ in _VARIANTS]),
            juvenile=np.array([j for _, j in _VARIANTS]),
            individual_variation=False,
        )
        individuals = sample_image_params(row, _N_INDIVIDUALS, rng)
        pixels = np.concatenate(
            [render(canonical, size, rng), render(individuals, size, rng)], axis=0
        )
        y = header_h + r * (tile + gap)
        for c, image in enumerate(pixels):
            picture = Image.fromarray(image).resize((tile, tile), Image.NEAREST)
            sheet.paste(picture, (label_w + c * (tile + gap), y))
        lineage = sp.lineage
        lines = [
            f"{lineage.order} › {lineage.family}",
            lineage.species_binomial + (" (finch genus)" if sp.is_finch else ""),
            sp.common_name or "(no common name)",
            f"{sp.habitat}; {sp.pattern}; beak {sp.beak_length:.2f}; "
            f"dimorphism {sp.sex_strength:.2f}",
        ]
        for i, line in enumerate(lines):
            draw.text((6, y + 4 + 14 * i), line, fill=(0, 0, 0), font=font)
    sheet.save(path, format="PNG", optimize=False)
    return path
