"""Per-image checks of curation: decode safely, crop, convert to RGB, hash, squash-resize.

Pure functions over bytes, run inside Ray Data workers on batches: a bad image never
raises, it comes back with a ``reason`` (``bomb: …``, ``decode: …``, ``empty file``,
``bbox: …``, ``too_small: …``) so the batch goes on and the record is rejected at stage
``image``.

The perceptual hash is PDQ computed on the image squash-resized to 64×64 (PDQ's own working
size) with an antialiasing filter. Measured on SynthToL (400 images of 32 px, copies
upscaled to 224–320 px vs the 32 px originals): hashing the full image lets PDQ's internal
Jarosz downsampler *upsample* small images by point sampling, and only 75 % of leaked
copies fell within Hamming 10 of their original; with the 64×64 pre-resize 99–100 % did.
It is also faster on large photos.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pdqhash
from PIL import Image, ImageFile, ImageOps

from taxoclip.curate.records import (
    CATEGORY_CAMERA_TRAP,
    CATEGORY_CITIZEN,
    CATEGORY_MUSEUM,
    CATEGORY_OTHER,
)

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default Image.MAX_IMAGE_PIXELS
PDQ_SIZE = 64
PDQ_BYTES = 32
DECODE_MIN_SIDE = 4 * PDQ_SIZE
# Formats a biodiversity image can come in. Pillow would also open EPS/PDF (through
# Ghostscript, a classic attack surface), ICNS, FITS, … from untrusted bytes: refused here.
# (Pillow's JPEG opener also reads MPO, the multi-picture JPEG of many cameras.)
ALLOWED_FORMATS = ("AVIF", "BMP", "GIF", "JPEG", "JPEG2000", "PNG", "PPM", "TIFF", "WEBP")
_WHITE = (255, 255, 255)
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Inspected:
    """What :func:`inspect_image` found; ``reason`` is "" for an image to keep.

    ``width``/``height`` are the source's after EXIF rotation and bbox crop (0 when the
    image could not be opened); ``mode`` is the source's PIL mode ("" if unopened);
    ``md5`` is of the raw bytes (exact duplicates are byte-identical files); ``pdq`` is the
    32-byte PDQ hash and ``jpeg`` the squash-resized RGB JPEG, both b"" when rejected.
    """

    reason: str
    width: int = 0
    height: int = 0
    mode: str = ""
    md5: str = ""
    pdq: bytes = b""
    pdq_quality: int = 0
    jpeg: bytes = b""


def inspect_image(
    data: bytes,
    *,
    min_size: int = 224,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    out_size: int = 224,
    bbox: tuple[int, int, int, int] | None = None,
    jpeg_quality: int = 90,
) -> Inspected:
    """Check one image's bytes and produce its hash and training JPEG.

    Order: decompression-bomb guard on the header size (before any pixel is decoded),
    full decode (truncated files fail), EXIF orientation, optional ``bbox`` crop
    (``x, y, w, h`` in pixels of the upright image; a box reaching past the border is
    clipped, one with no overlap is rejected), minimum side, conversion to RGB, PDQ hash,
    and a squash resize to ``out_size``² (BioCLIP squashes rather than crops).
    """
    md5 = hashlib.md5(data).hexdigest()
    # Pixels beyond what the outputs need are not decoded (JPEG DCT scaling). The floor
    # keeps the hash's source ≥ 4× its 64 px: decoding a copy down to ~64 px moved hashes
    # by several bits (rescale recall 1.00 → 0.94), and would tie the hash to out_size.
    need = max(out_size, DECODE_MIN_SIDE)
    opened = open_image(data, max_pixels=max_pixels, bbox=bbox, min_side=need)
    width, height, mode = opened.width, opened.height, opened.mode
    if opened.reason:
        return Inspected(opened.reason, width, height, mode, md5)
    image = opened.image
    assert image is not None
    if min(width, height) < min_size:
        why = f"too_small: {width}x{height} < {min_size}"
        return Inspected(why, width, height, mode, md5)
    try:
        rgb = to_rgb(image)
        code, quality = pdq_hash(rgb)
        jpeg = _squashed_jpeg(rgb, out_size, jpeg_quality)
    except Exception as exc:  # noqa: BLE001 - an odd image is a rejected record, not a crash
        return Inspected(f"convert: {_first_line(exc)}", width, height, mode, md5)
    return Inspected("", width, height, mode, md5, code, quality, jpeg)


@dataclass(frozen=True)
class Opened:
    """A fully decoded, upright (and cropped) image, or the reason it could not be had.

    ``width``/``height`` are in pixels of the source (after rotation and crop) even when
    ``image`` was decoded at a reduced scale.
    """

    image: Image.Image | None
    reason: str
    mode: str = ""
    width: int = 0
    height: int = 0


def open_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    bbox: tuple[int, int, int, int] | None = None,
    min_side: int = 0,
) -> Opened:
    """Decode ``data`` completely, apply its EXIF orientation and ``bbox``; never raises.

    The pixel count is checked on the header before decoding. Pillow's own bomb guard
    (a warning past ``Image.MAX_IMAGE_PIXELS``, an error past twice that) is caught so
    neither escapes; ``max_pixels`` above Pillow's error limit is therefore capped by it.
    With ``min_side`` > 0 a JPEG is decoded at 1/2, 1/4 or 1/8 scale where the region's
    shorter side stays at least ``min_side`` (every byte is still decoded, so truncation
    is still caught; a 12-megapixel photo decodes ~4× faster).
    """
    if not data:
        return Opened(None, "empty file")
    # A process-wide flag that some libraries switch on: with it, a truncated JPEG decodes
    # "successfully" with grey where data is missing, and would pass into the training set.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bomb warnings and Pillow's EXIF/metadata chatter
        try:
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except Image.DecompressionBombError as exc:
            return Opened(None, _pillow_bomb_reason(exc, max_pixels))
        except Image.UnidentifiedImageError:
            return Opened(None, "decode: cannot identify image file")
        except Exception as exc:  # noqa: BLE001 - any parse failure of untrusted bytes
            return Opened(None, f"decode: {_first_line(exc)}")
        mode, (width, height) = image.mode, image.size
        if width * height > max_pixels:
            why = f"bomb: {width}x{height} = {width * height} px > {max_pixels}"
            return Opened(None, why, mode, width, height)
        upright = _upright_size(image)
        region, why = _region(upright, bbox)
        if why:
            return Opened(None, why, mode, *upright)
        left, top, right, bottom = region
        if min_side > 0 and image.format == "JPEG":
            shrink = min(right - left, bottom - top) // min_side
            if shrink >= 2:
                image.draft(mode, (-(-width // shrink), -(-height // shrink)))
        try:
            image.load()
        except Exception as exc:  # noqa: BLE001
            return Opened(None, f"decode: {_first_line(exc)}", mode, *upright)
        try:
            image = ImageOps.exif_transpose(image)
        except Exception as exc:  # noqa: BLE001 - the bbox was placed on the upright image
            return Opened(None, f"decode: EXIF orientation: {_first_line(exc)}", mode, *upright)
    if image.size != upright:  # decoded smaller: map the region onto the decoded pixels
        fx, fy = image.width / upright[0], image.height / upright[1]
        scaled = (round(left * fx), round(top * fy), round(right * fx), round(bottom * fy))
    else:
        scaled = region
    if scaled != (0, 0, image.width, image.height):
        image = image.crop(scaled)
    return Opened(image, "", mode, right - left, bottom - top)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB pixels of any PIL mode: transparency over white, 16-bit scaled by its range.

    CMYK (Adobe-inverted JPEGs included, Pillow reads the marker), palette, 1-bit and
    grey convert directly; anything with alpha or a transparency key is composited on
    white (training images show specimens on light backgrounds; black would invent dark
    silhouettes); ``I;16``/``I``/``F`` are stretched from their actual min..max to 0..255
    (Pillow's own conversion clips at 255, turning a 12-bit scan almost white).
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        return _stretch_to_8bit(image).convert("RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def pdq_hash(rgb: Image.Image) -> tuple[bytes, int]:
    """PDQ hash (32 bytes, pdqhash's bit order packed MSB-first) and its quality 0..100.

    Hashed from a 64×64 squash with an antialiasing filter (see the module docstring).
    """
    # Of BOX, BICUBIC and LANCZOS, LANCZOS gave the best recall measured; reducing_gap=2
    # (an integer box reduction to ≥ 2× the target first) halves its cost at equal recall.
    small = rgb.resize((PDQ_SIZE, PDQ_SIZE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    bits, quality = pdqhash.compute(np.asarray(small, dtype=np.uint8))
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes(), int(quality)


def _squashed_jpeg(rgb: Image.Image, size: int, quality: int) -> bytes:
    # reducing_gap: a box pre-reduction before bicubic, ~free in quality, much faster on
    # 20-megapixel photos.
    resized = rgb.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    out = io.BytesIO()
    resized.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _upright_size(image: Image.Image) -> tuple[int, int]:
    # EXIF orientations 5–8 turn the image a quarter: width and height swap.
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF is treated as upright, as above
        orientation = 1
    width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _region(
    size: tuple[int, int], bbox: tuple[int, int, int, int] | None
) -> tuple[tuple[int, int, int, int], str]:
    """The (left, top, right, bottom) box to keep of an upright image, or why none."""
    width, height = size
    if bbox is None:
        return (0, 0, width, height), ""
    x, y, w, h = (int(v) for v in bbox)
    text = f"{x},{y},{w},{h}"
    if w <= 0 or h <= 0:
        return (0, 0, 0, 0), f"bbox: {text} has no area"
    # Annotation tools often let a box run a pixel or two past the border: clip it.
    left, top = max(x, 0), max(y, 0)
    right, bottom = min(x + w, width), min(y + h, height)
    if right <= left or bottom <= top:
        return (0, 0, 0, 0), f"bbox: {text} outside the {width}x{height} image"
    return (left, top, right, bottom), ""


def _stretch_to_8bit(image: Image.Image) -> Image.Image:
    values = np.nan_to_num(np.asarray(image, dtype=np.float64))  # "F" images may hold NaN
    low, high = float(values.min()), float(values.max())
    if high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.full_like(values, min(max(low, 0.0), 255.0))
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


def _pillow_bomb_reason(exc: Exception, max_pixels: int) -> str:
    # Pillow refuses before we see the size; its message still holds the pixel count.
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return f"bomb: {found.group(1)} px > {max_pixels}" if found else f"bomb: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


# --------------------------------------------------------------------------- categories

_SPECIMEN_BASES = frozenset({"PRESERVEDSPECIMEN", "FOSSILSPECIMEN", "MATERIALSAMPLE"})
_CAMERA_TRAP = re.compile(r"camera[\s_-]*trap|trap[\s_-]*camera", re.IGNORECASE)
_MUSEUM_PUBLISHER = re.compile(r"museum|muséum|museo|museu|musée|herbari|herbier", re.IGNORECASE)
_CITIZEN_PUBLISHER = re.compile(r"inaturalist|observation\.org|waarneming", re.IGNORECASE)


def category_of(basis_of_record: str, event_remarks: str, publisher: str) -> str:
    """The image category of a record, from its metadata; the first rule that holds wins.

    1. basisOfRecord PRESERVED_SPECIMEN, FOSSIL_SPECIMEN or MATERIAL_SAMPLE → museum_specimen
    2. eventRemarks mention "camera trap" / "camera-trap" / "trap camera" (any case;
       MACHINE_OBSERVATION records included) → camera_trap
    3. basisOfRecord HUMAN_OBSERVATION, or the publisher is iNaturalist / observation.org
       → citizen_science
    4. the publisher names a museum or herbarium (several languages) → museum_specimen
    5. otherwise → other

    The basis is matched without case, spaces or underscores (Darwin Core's
    ``PreservedSpecimen`` and GBIF's ``PRESERVED_SPECIMEN`` alike). Explicit evidence
    (basis, remarks) comes before the publisher's name, because museums also publish
    field observations and camera-trap surveys.
    """
    basis = re.sub(r"[^A-Z]", "", (basis_of_record or "").upper())
    if basis in _SPECIMEN_BASES:
        return CATEGORY_MUSEUM
    if _CAMERA_TRAP.search(event_remarks or ""):
        return CATEGORY_CAMERA_TRAP
    if basis == "HUMANOBSERVATION" or _CITIZEN_PUBLISHER.search(publisher or ""):
        return CATEGORY_CITIZEN
    if _MUSEUM_PUBLISHER.search(publisher or ""):
        return CATEGORY_MUSEUM
    return CATEGORY_OTHER
