"""Image checks on real encoded images: every failure becomes a reason, never an exception."""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from taxoclip.curate.images import Inspected, category_of, inspect_image, open_image, to_rgb
from taxoclip.curate.records import (
    CATEGORY_CAMERA_TRAP,
    CATEGORY_CITIZEN,
    CATEGORY_MUSEUM,
    CATEGORY_OTHER,
)

RED, GREEN, BLUE, YELLOW, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255,) * 3


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims ``width``×``height`` (a decompression bomb)."""
    data = bytearray(encode(Image.new("L", (8, 8))))
    data[16:24] = struct.pack(">II", width, height)  # IHDR payload starts at byte 16
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def decoded(result: Inspected) -> Image.Image:
    assert result.reason == "", result.reason
    return Image.open(io.BytesIO(result.jpeg))


def close(pixel, expected, tolerance: int = 12) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, expected, strict=True))


# --------------------------------------------------------------------------- rejections


def test_decompression_bomb_is_rejected_from_the_header_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would raise here
        result = inspect_image(png_claiming_size(12000, 12000))
    assert result.reason == "bomb: 12000x12000 = 144000000 px > 89478485"
    assert (result.width, result.height, result.pdq, result.jpeg) == (12000, 12000, b"", b"")


def test_bomb_past_pillows_own_error_limit_is_a_reason_not_an_exception():
    result = inspect_image(png_claiming_size(20000, 20000))
    assert result.reason == "bomb: 400000000 px > 89478485"


def test_max_pixels_is_the_callers_limit():
    data = encode(noise(300, 300))
    assert inspect_image(data, max_pixels=10_000).reason == "bomb: 300x300 = 90000 px > 10000"
    assert inspect_image(data, max_pixels=90_000).reason == ""


def test_truncated_jpeg_fails_even_if_someone_switched_truncated_loading_on(monkeypatch):
    data = encode(noise(300, 300), "JPEG", quality=90)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    result = inspect_image(data[: len(data) // 2])
    assert result.reason.startswith("decode: image file is truncated")
    assert result.md5 == hashlib.md5(data[: len(data) // 2]).hexdigest()


def test_truncated_png_fails():
    data = encode(noise(300, 300))
    assert inspect_image(data[: len(data) // 2]).reason.startswith("decode: ")


HTML_404 = b"<!DOCTYPE html><html><body>404 Not Found</body></html>"
UNIDENTIFIED = "decode: cannot identify image file"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (np.random.default_rng(1).bytes(5000), UNIDENTIFIED),
        (HTML_404, UNIDENTIFIED),
    ],
    ids=["zero-bytes", "random-bytes", "html-as-jpg"],
)
def test_unreadable_bytes_get_a_reason(data, reason):
    result = inspect_image(data)
    assert result.reason == reason
    assert result.md5 == hashlib.md5(data).hexdigest()
    assert (result.pdq, result.jpeg, result.width) == (b"", b"", 0)


def test_formats_that_need_an_external_interpreter_are_not_opened():
    eps = encode(Image.new("RGB", (300, 300)), "EPS")
    assert Image.open(io.BytesIO(eps)).format == "EPS"  # Pillow alone would hand it to gs
    assert inspect_image(eps).reason == UNIDENTIFIED


def test_small_image_is_rejected_with_its_size():
    result = inspect_image(encode(noise(150, 140)))
    assert result.reason == "too_small: 150x140 < 224"
    assert (result.width, result.height, result.mode) == (150, 140, "RGB")


# --------------------------------------------------------------------------- conversions


def test_good_image_gives_hash_md5_and_squashed_jpeg_of_out_size():
    data = encode(noise(400, 250), "JPEG", quality=95)
    result = inspect_image(data, min_size=200, out_size=96)
    assert result.reason == ""
    assert (result.width, result.height, result.mode) == (400, 250, "RGB")
    assert result.md5 == hashlib.md5(data).hexdigest()
    assert len(result.pdq) == 32 and 0 <= result.pdq_quality <= 100
    image = decoded(result)
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (96, 96))


def test_sixteen_bit_image_is_stretched_by_its_range_not_clipped():
    ramp = np.tile(np.linspace(0, 4095, 300).round().astype(np.uint16), (300, 1))
    data = encode(Image.fromarray(ramp))
    result = inspect_image(data)
    assert result.mode == "I;16" and result.reason == ""
    rgb = np.asarray(to_rgb(open_image(data).image))
    assert rgb.min() == 0 and rgb.max() == 255
    # Halfway through the 12-bit range is mid-grey, not white (clipping would give 255).
    assert abs(int(rgb[150, 150, 0]) - 128) <= 2
    assert np.all(np.diff(rgb[0, :, 0].astype(int)) >= 0)


def test_32_bit_integer_image_is_stretched_too():
    values = np.tile(np.linspace(1000, 70000, 256).astype(np.int32), (256, 1))
    rgb = np.asarray(to_rgb(Image.fromarray(values, mode="I")))
    assert rgb.min() == 0 and rgb.max() == 255


def half_transparent(mode: str) -> Image.Image:
    """Left half fully transparent *black*, right half opaque red (or grey for LA)."""
    rgba = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    rgba.paste(Image.new("RGBA", (150, 300), (*RED, 255)), (150, 0))
    return rgba if mode == "RGBA" else rgba.convert(mode)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_become_white(mode):
    image = decoded(inspect_image(encode(half_transparent(mode))))
    assert close(image.getpixel((40, 112)), WHITE)
    expected = RED if mode == "RGBA" else (76, 76, 76)  # red's luma in LA
    assert close(image.getpixel((190, 112)), expected)


def test_palette_image_with_transparency_key_becomes_white_there():
    palette = Image.new("P", (300, 300), 0)
    palette.putpalette([0, 0, 0, *GREEN] + [0] * (254 * 3))
    palette.paste(1, (150, 0, 300, 300))
    data = encode(palette, transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    image = decoded(inspect_image(data))
    assert close(image.getpixel((40, 112)), WHITE)
    assert close(image.getpixel((190, 112)), GREEN)


def test_cmyk_jpeg_converts_to_the_right_colour_and_is_kept():
    data = encode(Image.new("CMYK", (300, 300), (0, 255, 255, 0)), "JPEG", quality=95)
    result = inspect_image(data)
    assert result.mode == "CMYK" and result.reason == ""
    assert close(decoded(result).getpixel((112, 112)), RED)


@pytest.mark.parametrize("mode", ["L", "1", "P"])
def test_grey_bilevel_and_palette_images_are_kept(mode):
    image = Image.new("RGB", (300, 300), WHITE)
    image.paste(Image.new("RGB", (150, 300), (0, 0, 0)), (0, 0))
    result = inspect_image(encode(image.convert(mode)))
    assert result.mode == mode and result.reason == ""
    out = decoded(result)
    assert close(out.getpixel((30, 112)), (0, 0, 0)) and close(out.getpixel((200, 112)), WHITE)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (400, 300), BLUE)
    image.paste(Image.new("RGB", (100, 100), RED), (0, 0))  # stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    result = inspect_image(encode(image, "JPEG", quality=95, exif=exif), out_size=300)
    assert (result.width, result.height) == (300, 400)
    out = decoded(result)
    assert close(out.getpixel((280, 20)), RED, 30)  # now the top-right corner
    assert close(out.getpixel((20, 20)), BLUE, 30)


# --------------------------------------------------------------------------- bbox


def quadrants(scale: int = 1) -> Image.Image:
    """600×400 (times ``scale``): red, green / blue, yellow quadrants."""
    image = Image.new("RGB", (600 * scale, 400 * scale))
    corners = [(0, 0), (300, 0), (0, 200), (300, 200)]
    for (x, y), colour in zip(corners, [RED, GREEN, BLUE, YELLOW], strict=True):
        image.paste(Image.new("RGB", (300 * scale, 200 * scale), colour), (x * scale, y * scale))
    return image


@pytest.mark.parametrize(
    ("box", "colour"),
    [((300, 0, 300, 200), GREEN), ((0, 200, 300, 200), BLUE), ((320, 210, 250, 180), YELLOW)],
)
def test_bbox_crops_the_right_region(box, colour):
    result = inspect_image(encode(quadrants()), bbox=box, min_size=150, out_size=64)
    assert (result.width, result.height) == box[2:]
    pixels = np.asarray(decoded(result)).reshape(-1, 3).astype(int)
    assert np.abs(pixels - colour).max() <= 12  # every pixel from that quadrant only


def test_bbox_is_measured_for_min_size():
    result = inspect_image(encode(quadrants()), bbox=(0, 0, 300, 200), min_size=224)
    assert result.reason == "too_small: 300x200 < 224"


def test_bbox_reaching_past_the_border_is_clipped():
    result = inspect_image(encode(quadrants()), bbox=(350, 250, 400, 400), min_size=100)
    assert (result.reason, result.width, result.height) == ("", 250, 150)


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        ((700, 500, 50, 50), "bbox: 700,500,50,50 outside the 600x400 image"),
        ((-80, 10, 50, 50), "bbox: -80,10,50,50 outside the 600x400 image"),
        ((10, 10, 0, 50), "bbox: 10,10,0,50 has no area"),
    ],
)
def test_bbox_outside_the_image_is_a_reason(box, reason):
    assert inspect_image(encode(quadrants()), bbox=box).reason == reason


# --------------------------------------------------------------------------- hashing


def test_pdq_is_stable_under_reencoding_and_differs_between_images():
    base = noise(64, 64, seed=3).resize((320, 320), Image.Resampling.BICUBIC)
    a = inspect_image(encode(base, "JPEG", quality=95)).pdq
    b = inspect_image(encode(base.resize((260, 260)), "JPEG", quality=70)).pdq
    c = inspect_image(encode(noise(64, 64, seed=4).resize((320, 320)), "JPEG", quality=95)).pdq

    def hamming(x: bytes, y: bytes) -> int:
        return int(np.unpackbits(np.frombuffer(x, np.uint8) ^ np.frombuffer(y, np.uint8)).sum())

    assert hamming(a, b) <= 10 < hamming(a, c)


# --------------------------------------------------------------------------- categories


@pytest.mark.parametrize(
    ("basis", "remarks", "publisher", "category"),
    [
        ("PRESERVED_SPECIMEN", "", "", CATEGORY_MUSEUM),
        ("PreservedSpecimen", "", "iNaturalist.org", CATEGORY_MUSEUM),
        ("FOSSIL_SPECIMEN", "", "", CATEGORY_MUSEUM),
        ("MATERIAL_SAMPLE", "", "", CATEGORY_MUSEUM),
        ("OCCURRENCE", "", "Natural History Museum (London)", CATEGORY_MUSEUM),
        ("", "", "Herbarium Berolinense", CATEGORY_MUSEUM),
        ("MACHINE_OBSERVATION", "Camera Trap station 4", "", CATEGORY_CAMERA_TRAP),
        ("MACHINE_OBSERVATION", "camera-trap survey", "Smithsonian Museum", CATEGORY_CAMERA_TRAP),
        ("OCCURRENCE", "image from a TRAP CAMERA", "", CATEGORY_CAMERA_TRAP),
        ("HUMAN_OBSERVATION", "", "", CATEGORY_CITIZEN),
        ("HUMAN_OBSERVATION", "", "Museum für Naturkunde", CATEGORY_CITIZEN),
        ("OCCURRENCE", "", "iNaturalist.org", CATEGORY_CITIZEN),
        ("", "", "Observation.org", CATEGORY_CITIZEN),
        ("MACHINE_OBSERVATION", "acoustic recorder", "", CATEGORY_OTHER),
        ("", "", "", CATEGORY_OTHER),
    ],
)
def test_category_of(basis, remarks, publisher, category):
    assert category_of(basis, remarks, publisher) == category


# --------------------------------------------------------------------------- large JPEGs
# Decoded at a reduced DCT scale: sizes, crops and failures must not notice.


def test_large_jpeg_reports_source_size_and_crops_the_right_region():
    data = encode(quadrants(scale=6), "JPEG", quality=92)  # 3600x2400
    whole = inspect_image(data)
    assert (whole.reason, whole.width, whole.height) == ("", 3600, 2400)
    box = (1900, 1300, 1500, 1000)  # inside the yellow quadrant (from 1800,1200)
    result = inspect_image(data, bbox=box, out_size=64)
    assert (result.width, result.height) == (1500, 1000)
    pixels = np.asarray(decoded(result)).reshape(-1, 3).astype(int)
    assert np.abs(pixels - YELLOW).max() <= 12
    # A region too small to shrink is decoded at full scale and still found.
    small = inspect_image(data, bbox=(1790, 1190, 20, 20), min_size=10, out_size=16)
    assert (small.width, small.height) == (20, 20)
    out = np.asarray(decoded(small)).astype(int)
    assert close(out[2, 2], RED, 30) and close(out[13, 13], YELLOW, 30)


def test_large_truncated_jpeg_still_fails():
    data = encode(quadrants(scale=6), "JPEG", quality=92)
    assert inspect_image(data[: len(data) - 500]).reason.startswith("decode: image file is trunc")


def test_large_rotated_jpeg_takes_its_bbox_in_upright_pixels():
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned 90° clockwise: 2400 wide, 3600 high
    data = encode(quadrants(scale=6), "JPEG", quality=92, exif=exif)
    # Upright, the stored top-left red quadrant is the top-right one.
    result = inspect_image(data, bbox=(1300, 100, 1000, 1600), out_size=64)
    assert (result.reason, result.width, result.height) == ("", 1000, 1600)
    pixels = np.asarray(decoded(result)).reshape(-1, 3).astype(int)
    assert np.abs(pixels - RED).max() <= 12


def test_hash_of_a_large_jpeg_matches_the_same_picture_small():
    picture = noise(48, 32, seed=9)
    big = inspect_image(encode(picture.resize((3000, 2000), Image.Resampling.BICUBIC), "JPEG"))
    small = inspect_image(encode(picture.resize((360, 240), Image.Resampling.BICUBIC), "JPEG"))
    bits = np.unpackbits(np.frombuffer(big.pdq, np.uint8) ^ np.frombuffer(small.pdq, np.uint8))
    assert int(bits.sum()) <= 10
