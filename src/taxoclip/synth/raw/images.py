"""Image faults of the raw source: upscaled clean images, near duplicates, corrupt bytes,
label cards, decompression bombs and unusual modes."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from .occurrences import Media, Occurrence
from .spec import (
    AUTHORS,
    BOMB,
    BOMB_SIDE,
    CLEAN_JPEG_QUALITY,
    CLEAN_SIDE,
    CORRUPT,
    EXACT_DUPLICATE,
    LABEL,
    MIN_SIDE,
    MODE_16BIT,
    MODE_ALPHA,
    MODE_CMYK,
    MODE_FAULT_RATES,
    MODE_PALETTE,
    NEAR_DUPLICATE,
    TOO_SMALL,
    TOO_SMALL_SIDE,
)

_HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head>\n"
    b"<body><h1>Service Unavailable</h1><p>The media server is temporarily unable to "
    b"service your request. Please try again later.</p></body></html>\n"
)


def upscale(image: Image.Image, side: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Bicubic resize to both sides within ``side`` and an aspect ratio within 10 %."""
    short = int(rng.integers(side[0], side[1] + 1))
    long = min(round(short * float(rng.uniform(1.0, 1.1))), side[1])
    size = (long, short) if rng.random() < 0.5 else (short, long)
    return image.resize(size, Image.Resampling.BICUBIC)


def near_duplicate(data: bytes, rng: np.random.Generator) -> bytes:
    """A slightly edited copy of a JPEG: the edits perceptual hashes are built to survive.

    Re-encoded at q60–80, plus at most one of: rescale 0.8–0.95, a trim of up to 0.5 % of
    the area, brightness ± 2–5 %. The copy is not checked against any hash — the ground truth must
    not be chosen by the detector it grades. Larger crops and shifts are a different
    problem (PDQ follows where content sits in the frame; see docs/curate.md).
    """
    with Image.open(io.BytesIO(data)) as source:
        image = source.convert("RGB")
    return _edit_image(image, rng)


def _edit_image(image: Image.Image, rng: np.random.Generator) -> bytes:
    # A re-upload: always re-encoded, plus at most one edit. Stacked edits are a harder
    # problem than "the same photo again" (measured: PDQ moves up to 16 bits).
    edit = int(rng.integers(0, 4))
    rescale, crop, brighten = edit == 1, edit == 2, edit == 3
    if rescale:
        # Stay above the minimum size, so only dedup can catch it.
        low = max(0.8, (MIN_SIDE + 2) / min(image.size))
        if low < 0.95:
            scale = float(rng.uniform(low, 0.95))
            size = (round(image.width * scale), round(image.height * scale))
            image = image.resize(size, Image.Resampling.BICUBIC)
    if crop:
        fraction = float(rng.uniform(0.0005, 0.0025))  # per side: at most 0.5 % of the area
        dx, dy = round(image.width * fraction), round(image.height * fraction)
        # Trim all sides rather than one corner: a shift moves PDQ far more than a zoom.
        left = int(rng.integers(dx // 4, dx - dx // 4 + 1))
        top = int(rng.integers(dy // 4, dy - dy // 4 + 1))
        image = image.crop((left, top, image.width - (dx - left), image.height - (dy - top)))
    if brighten:
        factor = 1.0 + float(rng.choice([-1.0, 1.0])) * float(rng.uniform(0.02, 0.05))
        image = ImageEnhance.Brightness(image).enhance(factor)
    return jpeg(image, int(rng.integers(60, 81)))


def corrupt_bytes(kind: str, clean_jpeg: bytes, rng: np.random.Generator) -> bytes:
    """Bytes named .jpg that no image reader can decode."""
    if kind == "truncated":
        return clean_jpeg[: int(len(clean_jpeg) * float(rng.uniform(0.3, 0.7)))]
    if kind == "zero_bytes":
        return b""
    if kind == "html_page":
        return _HTML_ERROR_PAGE
    while True:
        blob = rng.bytes(int(rng.integers(2_000, 20_000)))
        if not _decodes(blob):  # formats without a magic number (TGA) could take random bytes
            return blob


def label_card(lines: Sequence[str], rng: np.random.Generator) -> bytes:
    """A museum label: near-white card, a border and lines of black text."""
    width, height = int(rng.integers(280, 321)), int(rng.integers(MIN_SIDE, 261))
    paper = int(rng.integers(236, 251))
    image = Image.new("RGB", (width, height), (paper, paper, paper - int(rng.integers(0, 8))))
    draw = ImageDraw.Draw(image)
    draw.rectangle((6, 6, width - 7, height - 7), outline=(30, 30, 30), width=2)
    size = int(rng.integers(13, 17))
    font = _font(size)
    for row, line in enumerate(lines):
        draw.text((16, 16 + row * (size + 8)), line, fill=(12, 12, 12), font=font)
    return jpeg(image, CLEAN_JPEG_QUALITY)


def bomb_png(side: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid 1-bit PNG of one colour that declares ``side`` × ``side`` pixels."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", side, side, 1, 3, 0, 0, 0)  # bit depth 1, palette
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"PLTE", bytes(rgb))
        + chunk(b"IDAT", _zero_rows(side))
        + chunk(b"IEND", b"")
    )


@lru_cache(maxsize=2)
def _zero_rows(side: int) -> bytes:
    row = bytes(1 + (side + 7) // 8)  # filter byte + packed pixels, all palette index 0
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(side)]
    return b"".join(parts) + compressor.flush()


def encode_mode(image: Image.Image, fault: str) -> tuple[bytes, str]:
    """An RGB image in the unusual mode ``fault`` names; returns (bytes, extension)."""
    buffer = io.BytesIO()
    if fault == MODE_CMYK:
        image.convert("CMYK").save(buffer, format="JPEG", quality=CLEAN_JPEG_QUALITY)
        return buffer.getvalue(), "jpg"
    if fault == MODE_PALETTE:
        converted = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    elif fault == MODE_16BIT:
        converted = Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257)
    elif fault == MODE_ALPHA:
        converted = image.convert("RGBA")
        alpha = np.full((image.height, image.width), 255, dtype=np.uint8)
        alpha[:3], alpha[-3:], alpha[:, :3], alpha[:, -3:] = 0, 0, 0, 0  # a transparent rim
        converted.putalpha(Image.fromarray(alpha))
    else:
        raise ValueError(f"not a mode fault: {fault}")
    converted.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue(), "png"


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception:  # noqa: BLE001 - any failure means "not an image"
        return False
    return True


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def media_bytes(
    root: Path, occ: Occurrence, media: Media, rng: np.random.Generator
) -> tuple[bytes, str]:
    fault = media.fault
    if fault == EXACT_DUPLICATE:
        return media.original.media[0].data, "jpg"
    if fault == NEAR_DUPLICATE:
        return near_duplicate(media.original.media[0].data, rng), "jpg"
    if fault == LABEL:
        return label_card(_label_lines(occ, rng), rng), "jpg"
    if fault == BOMB:
        return bomb_png(BOMB_SIDE, tuple(int(v) for v in rng.integers(0, 256, 3))), "png"
    with Image.open(root / media.source) as source:
        picture = source.convert("RGB")
    if fault == TOO_SMALL:
        return jpeg(upscale(picture, TOO_SMALL_SIDE, rng), CLEAN_JPEG_QUALITY), "jpg"
    image = upscale(picture, (media.min_side, CLEAN_SIDE[1]), rng)
    if fault in MODE_FAULT_RATES:
        return encode_mode(image, fault)
    data = jpeg(image, CLEAN_JPEG_QUALITY)
    if fault == CORRUPT:
        return corrupt_bytes(media.corrupt_kind, data, rng), "jpg"
    return data, "jpg"  # clean, leak, unresolvable


def _label_lines(occ: Occurrence, rng: np.random.Generator) -> list[str]:
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    collector, determiner = (AUTHORS[i] for i in rng.choice(len(AUTHORS), 2, replace=False))
    year = int(rng.integers(1850, 2000))
    return [
        "SYNTHTOL MUSEUM",
        "OF NATURAL HISTORY",
        occ.scientific_name,
        f"Cat. no. SMNH {int(rng.integers(1, 999_999)):06d}",
        f"Leg. {collector}, {int(rng.integers(1, 29))} {months[int(rng.integers(12))]} {year}",
        f"Det. {determiner} {year + int(rng.integers(0, 30))}",
    ]
