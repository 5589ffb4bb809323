"""Batched, anti-aliased rendering of synthetic organisms with numpy.

Every shape is a signed distance in the organism's own frame (body length = 1), turned
into coverage with a one-pixel ramp, so edges stay smooth at 32 px. A whole batch is
drawn with one set of array operations; per-image choices (fins or legs, pattern type,
sex mark) are 0/1 weights rather than branches.

Variant cues are species-independent by construction: the sex mark is a crest of fixed
form, colour and place (its opacity is the species' dimorphism strength); juveniles are
a fixed 0.68× size with a 1.3× head and faded pattern. Backgrounds and clutter are drawn
independently of species and habitat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tree import HABITATS, PATTERNS

SEXES = ("female", "male")
LIFE_STAGES = ("adult", "juvenile")
JUVENILE_SCALE = 0.68
JUVENILE_HEAD = 1.3
JUVENILE_PATTERN = 0.3
JUVENILE_RATE = 0.25
CREST_RGB = (248.0, 248.0, 248.0)
# The crest in body lengths: from the top of the head, back and up, this thick. Pilots
# with a crest of radius 0.045 reaching 0.15 above the head (about 2 x 5 px on a 19-px
# adult at 32 px) found no CLIP learned it from captions, while a supervised CNN did;
# this one is about 3 x 10 px there (docs/analyze.md): still a fixed mark of one form,
# colour and place in every species, its opacity the species' strength.
CREST_TIP = (-0.2, 0.3)
CREST_RADIUS = 0.085
BEAK_RGB = (235.0, 180.0, 40.0)
EYE_RGB = (15.0, 15.0, 15.0)
N_CLUTTER = 3

# Scene palettes (top, bottom); chosen per image, independent of habitat.
_SCENES = np.array(
    [
        [(170, 200, 225), (215, 200, 160)],
        [(150, 150, 150), (90, 90, 95)],
        [(190, 215, 170), (110, 125, 70)],
        [(225, 210, 180), (140, 105, 70)],
        [(160, 200, 235), (40, 80, 140)],
        [(235, 235, 235), (185, 185, 190)],
        [(120, 100, 150), (225, 150, 90)],
        [(60, 70, 60), (120, 140, 110)],
    ],
    dtype=np.float32,
)


@dataclass
class ImageParams:
    """Everything that decides one batch of images; every array has the batch first."""

    hue: np.ndarray
    elongation: np.ndarray
    size: np.ndarray
    pattern: np.ndarray  # index into PATTERNS
    pattern_freq: np.ndarray
    beak: np.ndarray
    habitat: np.ndarray  # index into HABITATS
    sex_strength: np.ndarray
    male: np.ndarray  # bool
    juvenile: np.ndarray  # bool
    angle: np.ndarray  # radians
    flip: np.ndarray  # +1 faces right, -1 left
    cx: np.ndarray
    cy: np.ndarray
    scale: np.ndarray  # individual size jitter
    brightness: np.ndarray
    cast: np.ndarray  # (B, 3)
    noise_sigma: np.ndarray
    scene: np.ndarray  # index into _SCENES
    clutter_xy: np.ndarray  # (B, K, 2)
    clutter_r: np.ndarray  # (B, K)
    clutter_rgb: np.ndarray  # (B, K, 3)
    clutter_on: np.ndarray  # (B, K) 0/1

    def __len__(self) -> int:
        return len(self.hue)


def sample_image_params(
    traits: dict[str, object],
    n: int,
    rng: np.random.Generator,
    sex: np.ndarray | None = None,
    juvenile: np.ndarray | None = None,
    individual_variation: bool = True,
) -> ImageParams:
    """``n`` images of one species (``traits``: a row of species.csv).

    ``sex``/``juvenile`` force the variants (the preview uses this); otherwise sex is
    50/50 and a quarter of images are juveniles. Without individual variation, images
    are in a canonical pose on a plain scene.
    """
    ones = np.ones(n, dtype=np.float32)
    male = rng.random(n) < 0.5 if sex is None else np.asarray(sex, dtype=bool)
    young = rng.random(n) < JUVENILE_RATE if juvenile is None else np.asarray(juvenile, bool)
    vary = 1.0 if individual_variation else 0.0
    return ImageParams(
        hue=ones * float(traits["hue"]),
        elongation=ones * float(traits["elongation"]),
        size=ones * float(traits["size"]),
        pattern=(ones * PATTERNS.index(str(traits["pattern"]))).astype(np.int64),
        pattern_freq=ones * float(traits["pattern_freq"]),
        beak=ones * float(traits["beak_length"]),
        habitat=(ones * HABITATS.index(str(traits["habitat"]))).astype(np.int64),
        sex_strength=ones * float(traits["sex_strength"]),
        male=male,
        juvenile=young,
        angle=vary * rng.uniform(-0.35, 0.35, n).astype(np.float32),
        flip=np.where(rng.random(n) < 0.5 * vary, -1.0, 1.0).astype(np.float32),
        cx=0.5 + vary * rng.uniform(-0.08, 0.08, n).astype(np.float32),
        cy=0.5 + vary * rng.uniform(-0.08, 0.08, n).astype(np.float32),
        scale=1.0 + vary * rng.uniform(-0.1, 0.1, n).astype(np.float32),
        brightness=1.0 + vary * rng.uniform(-0.18, 0.18, n).astype(np.float32),
        cast=vary * rng.normal(0.0, 8.0, (n, 3)).astype(np.float32),
        noise_sigma=vary * rng.uniform(0.0, 7.0, n).astype(np.float32),
        scene=rng.integers(0, len(_SCENES), n) if individual_variation else np.zeros(n, int),
        clutter_xy=rng.uniform(0.0, 1.0, (n, N_CLUTTER, 2)).astype(np.float32),
        clutter_r=rng.uniform(0.04, 0.14, (n, N_CLUTTER)).astype(np.float32),
        clutter_rgb=rng.uniform(40, 220, (n, N_CLUTTER, 3)).astype(np.float32),
        clutter_on=vary * (rng.random((n, N_CLUTTER)) < 0.5).astype(np.float32),
    )


def hsv_to_rgb(h: np.ndarray, s: float, v: float) -> np.ndarray:
    """Hue array in [0, 1) → (B, 3) RGB in 0–255."""
    h6 = (h % 1.0) * 6.0
    channels = []
    for offset in (5.0, 3.0, 1.0):  # r, g, b
        k = (offset + h6) % 6.0
        channels.append(v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return np.stack(channels, axis=-1).astype(np.float32) * 255.0


def _col(x: np.ndarray) -> np.ndarray:
    """(B,) → (B, 1, 1) float32 for broadcasting over pixels."""
    return np.asarray(x, dtype=np.float32)[:, None, None]


def _capsule(u, v, ax, ay, bx, by, radius):
    """Signed distance to a thick segment from (ax, ay) to (bx, by)."""
    pax, pay = u - ax, v - ay
    bax, bay = bx - ax, by - ay
    h = np.clip((pax * bax + pay * bay) / (bax * bax + bay * bay), 0.0, 1.0)
    return np.hypot(pax - bax * h, pay - bay * h) - radius


def _blend(img: np.ndarray, alpha: np.ndarray, rgb: np.ndarray) -> None:
    """In place: img ← img + alpha·(rgb − img); rgb is (B,3) or (B,S,S,3)."""
    if rgb.ndim == 2:
        rgb = rgb[:, None, None, :]
    step = rgb - img
    step *= alpha[..., None]
    img += step


def render(
    params: ImageParams, size: int, rng: np.random.Generator, organism: np.ndarray | None = None
) -> np.ndarray:
    """Draw the batch: (B, size, size, 3) uint8. ``rng`` supplies the pixel noise.

    ``organism`` (B,) 0/1 leaves the organism out where 0: the scene alone, as the web
    corpus's non-organism images are drawn (synth/web.py). Back to front: the scene, the
    appendages, the body and head, the features on top, then the camera.
    """
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    X, Y = grid[None, None, :], grid[None, :, None]
    img = _scene(params, X, Y, size)
    frame = _Frame.of(params, X, Y, size, organism)
    body_rgb = hsv_to_rgb(params.hue, 0.65, 0.82)
    _blend(img, _limbs(params.habitat, frame), body_rgb * 0.62)
    head = _body_and_head(img, params, frame, body_rgb)
    _features(img, params, frame, head)
    return _camera(img, params, rng)


def _scene(params: ImageParams, X: np.ndarray, Y: np.ndarray, size: int) -> np.ndarray:
    """The background: a vertical gradient, then clutter blobs behind the organism (one
    blend: the blobs rarely overlap, so the most opaque one gives the colour)."""
    n = len(params)
    scene = _SCENES[params.scene]
    t = Y[..., None]
    img = np.broadcast_to(
        scene[:, None, None, 0] * (1 - t) + scene[:, None, None, 1] * t, (n, size, size, 3)
    ).copy()
    if params.clutter_on.any():
        cx, cy = params.clutter_xy[..., 0], params.clutter_xy[..., 1]
        d = np.hypot(X[:, None] - cx[..., None, None], Y[:, None] - cy[..., None, None])
        d -= params.clutter_r[..., None, None]
        alphas = np.clip(0.5 - d * size, 0.0, 1.0) * (params.clutter_on * 0.8)[..., None, None]
        colour = np.einsum("bkij,bkc->bijc", alphas, params.clutter_rgb, optimize=True)
        total = alphas.sum(axis=1)
        colour /= np.maximum(total, 1e-6)[..., None]
        _blend(img, np.minimum(total, 1.0), colour)
    return img


@dataclass
class _Frame:
    """The organism's frame: ``u`` along the body (head at +u), ``v`` up, body length 1;
    :meth:`cover` turns a signed distance in it into coverage with a one-pixel ramp."""

    u: np.ndarray
    v: np.ndarray
    b: np.ndarray  # the body's half-height
    ramp: np.ndarray  # 1 / pixel size in body lengths
    shown: np.ndarray  # 0 where the image has no organism

    @classmethod
    def of(cls, params: ImageParams, X: np.ndarray, Y: np.ndarray, size: int, organism) -> _Frame:
        length = _col(params.size * params.scale * np.where(params.juvenile, JUVENILE_SCALE, 1.0))
        theta = _col(params.angle)
        dx, dy = X - _col(params.cx), _col(params.cy) - Y
        cos, sin = np.cos(theta), np.sin(theta)
        # Centre the whole animal (tail tip at -0.7, beak tip at ~0.6 + beak), not the body,
        # so long beaks stay in frame.
        shift = _col((params.beak - 0.1) / 2.0)
        u = (dx * cos + dy * sin) / length * _col(params.flip) + shift
        v = (-dx * sin + dy * cos) / length
        shown = _col(np.ones(len(params)) if organism is None else organism)
        return cls(u, v, _col(0.5 / params.elongation), length * size, shown)

    def cover(self, d: np.ndarray) -> np.ndarray:
        return np.clip(0.5 - d * self.ramp, 0.0, 1.0) * self.shown


def _limbs(habitat: np.ndarray, frame: _Frame) -> np.ndarray:
    """Appendages behind the body: fins for aquatic plans, legs and tails for land plans.
    A batch is usually one species, so whole plans are skipped when nobody needs them."""
    u, v, b, cover = frame.u, frame.v, frame.b, frame.cover
    limbs = np.zeros_like(u)
    if (habitat <= 1).any():
        marine, freshwater = _col(habitat == 1), _col(habitat == 0)
        tail_t = (-0.4 - u) / 0.3
        tail = np.maximum(np.maximum(np.abs(v) - 0.22 * tail_t, u + 0.4), -0.7 - u)
        forked_tail = np.maximum(tail, 0.22 * 1.6 * (tail_t - 0.45) - np.abs(v))
        round_tail = np.hypot(u + 0.6, v) - 0.16
        dorsal_h = np.float32(0.12) + np.float32(0.08) * marine
        across = np.abs(u + 0.05)
        dorsal = np.maximum(
            np.maximum(v - (b * 0.6 + dorsal_h * (1 - across / 0.18)), b * 0.6 - v),
            across - 0.18,
        )
        fins = np.maximum(cover(forked_tail) * marine, cover(round_tail) * freshwater)
        limbs = np.maximum(limbs, np.maximum(fins, cover(dorsal) * (marine + freshwater)))
    if (habitat == 2).any():
        legs = cover(_capsule(u, v, -0.45, 0.0, -0.66, -0.06, 0.035))
        for ux in (-0.27, -0.1, 0.1, 0.27):
            leg = _capsule(u, v, ux, -0.6 * b, ux + 0.02, -b - 0.14, 0.035)
            legs = np.maximum(legs, cover(leg))
        limbs = np.maximum(limbs, legs * _col(habitat == 2))
    if (habitat == 3).any():
        climber = cover(_capsule(u, v, -0.45, 0.05, -0.85, 0.3, 0.025))
        for ux in (-0.15, 0.17):
            limb = _capsule(u, v, ux, -0.6 * b, ux + 0.08, -b - 0.26, 0.03)
            climber = np.maximum(climber, cover(limb))
        limbs = np.maximum(limbs, climber * _col(habitat == 3))
    return limbs


@dataclass
class _Head:
    x: float  # centre, in the organism's frame
    y: np.ndarray
    r: np.ndarray  # radius


def _body_and_head(
    img: np.ndarray, params: ImageParams, frame: _Frame, body_rgb: np.ndarray
) -> _Head:
    """The body with its pattern (faded in juveniles) and countershading (marine plan);
    the head, in plain body colour, goes into the same blend."""
    u, v, b, cover = frame.u, frame.v, frame.b, frame.cover
    habitat = params.habitat
    body = cover((np.sqrt((u / 0.5) ** 2 + (v / b) ** 2) - 1.0) * b)
    pattern = np.zeros_like(u)
    freq = _col(params.pattern_freq)
    if (params.pattern == 1).any():
        stripes = np.clip((np.cos(2 * np.pi * freq * u) - 0.25) * 3.0, 0.0, 1.0)
        pattern += stripes * _col(params.pattern == 1)
    if (params.pattern == 2).any():
        su, sv = u * freq, v * freq * 1.3
        spots = np.clip((0.3 - np.hypot(su - np.round(su), sv - np.round(sv))) * 8.0, 0.0, 1.0)
        pattern += spots * _col(params.pattern == 2)
    pattern *= _col(1.0 - params.juvenile.astype(np.float32) * (1.0 - JUVENILE_PATTERN))
    head_r = _col(np.minimum(0.8 * 0.5 / params.elongation, 0.2))
    head_r = head_r * _col(np.where(params.juvenile, JUVENILE_HEAD, 1.0))
    hx, hy = 0.42, 0.15 * b
    head = cover(np.hypot(u - hx, v - hy) - head_r)
    darken = 1.0 - 0.55 * pattern * (1.0 - head)
    shade = darken[..., None] * body_rgb[:, None, None, :]
    if (habitat == 1).any():
        belly = np.clip(-v / b, 0.0, 1.0) * 0.45 * _col(habitat == 1) * (1.0 - head)
        shade += belly[..., None] * (255.0 - shade)
    _blend(img, np.maximum(body, head), shade)
    return _Head(hx, hy, head_r)


def _features(img: np.ndarray, params: ImageParams, frame: _Frame, head: _Head) -> None:
    """The features on top, in one blend (they barely overlap): sex crest, eye, beak."""
    u, v, cover = frame.u, frame.v, frame.cover
    hx, hy, head_r = head.x, head.y, head.r
    beak_x0 = hx + 0.85 * head_r
    beak_len = _col(params.beak)
    beak_w = 0.3 * head_r + 0.01
    beak_t = (u - beak_x0) / beak_len
    beak = cover(
        np.maximum(
            np.maximum(np.abs(v - (hy - 0.1 * head_r)) - beak_w * (1.0 - beak_t), beak_x0 - u),
            u - beak_x0 - beak_len,
        )
    )
    eye_r = np.maximum(0.3 * head_r, 0.035)
    eye = cover(np.hypot(u - (hx + 0.4 * head_r), v - (hy + 0.25 * head_r)) - eye_r)
    features = [(beak, BEAK_RGB), (eye, EYE_RGB)]
    crest_alpha = params.sex_strength * params.male * (1.0 - params.juvenile.astype(np.float32))
    if crest_alpha.any():
        tip_u, tip_v = CREST_TIP
        crest = _capsule(u, v, hx, hy + 0.7 * head_r, hx + tip_u, hy + head_r + tip_v, CREST_RADIUS)
        features.append((cover(crest) * _col(crest_alpha), CREST_RGB))
    alphas = np.stack([a for a, _ in features])
    rgbs = np.asarray([rgb for _, rgb in features], dtype=np.float32)
    total = alphas.sum(axis=0)
    colour = np.tensordot(alphas, rgbs, axes=([0], [0]))  # (B, S, S, 3)
    colour /= np.maximum(total, 1e-6)[..., None]
    _blend(img, np.minimum(total, 1.0), colour)


def _camera(img: np.ndarray, params: ImageParams, rng: np.random.Generator) -> np.ndarray:
    """Exposure, colour cast, sensor noise; then to 8-bit pixels."""
    img *= _col(params.brightness)[..., None]
    img += params.cast[:, None, None, :]
    sigma = params.noise_sigma[:, None, None, None]
    if np.any(sigma > 0):
        img += rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
