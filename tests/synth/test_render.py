"""The variant cues and body plans are what the analysis stage measures; pin them down."""

import numpy as np
import pytest

from taxoclip.synth.render import (
    CREST_RGB,
    JUVENILE_SCALE,
    render,
    sample_image_params,
)

TRAITS = {
    "hue": 0.6,
    "elongation": 2.0,
    "size": 0.6,
    "pattern": "stripes",
    "pattern_freq": 3.0,
    "beak_length": 0.2,
    "habitat": "terrestrial",
    "sex_strength": 1.0,
}


def canonical(traits=None, male=False, juvenile=False, size=64):
    params = sample_image_params(
        traits or TRAITS,
        1,
        np.random.default_rng(0),
        sex=np.array([male]),
        juvenile=np.array([juvenile]),
        individual_variation=False,
    )
    return render(params, size, np.random.default_rng(0))[0].astype(int)


def organism_mask(image, traits=None):
    # The canonical scene is a smooth gradient: anything far from the empty scene is organism.
    empty = canonical({**(traits or TRAITS), "size": 1e-3})
    return np.abs(image - empty).sum(axis=-1) > 30


def test_sex_mark_is_a_fixed_colour_crest_scaled_by_strength():
    female, male = canonical(), canonical(male=True)
    changed = np.abs(male - female).sum(axis=-1) > 30
    # a mark on the animal (a fifth of its pixels at most), not a different animal
    assert 5 <= changed.sum() <= 0.2 * organism_mask(female).sum()
    assert np.abs(male[changed] - np.array(CREST_RGB)).max(axis=-1).min() < 10
    rows = np.nonzero(changed)[0]
    assert rows.mean() < 32  # above the midline: the crest sits on the head
    weak = canonical({**TRAITS, "sex_strength": 0.5}, male=True)
    assert 0 < np.abs(weak - female).sum() < np.abs(male - female).sum()
    monomorphic = {**TRAITS, "sex_strength": 0.0}
    assert np.array_equal(canonical(monomorphic, male=True), canonical(monomorphic))


def test_juveniles_are_a_fixed_fraction_of_adult_size_and_carry_no_crest():
    adult, young = organism_mask(canonical()), organism_mask(canonical(juvenile=True))
    # Area scales with the square of the linear size; the larger head adds a little.
    ratio = young.sum() / adult.sum()
    assert JUVENILE_SCALE**2 * 0.9 < ratio < JUVENILE_SCALE**2 * 1.35
    assert np.array_equal(canonical(juvenile=True, male=True), canonical(juvenile=True))


def test_body_plan_follows_habitat_not_clade():
    land = canonical()
    for habitat in ("freshwater", "marine", "arboreal"):
        other = canonical({**TRAITS, "habitat": habitat})
        assert np.abs(other - land).sum(axis=-1).astype(bool).sum() > 40, habitat


def test_beak_length_is_visible():
    short = organism_mask(canonical({**TRAITS, "beak_length": 0.06}))
    long = organism_mask(canonical({**TRAITS, "beak_length": 0.4}))
    assert long.sum() > short.sum() + 20


def test_scene_and_pose_do_not_depend_on_species_or_habitat():
    def draw(traits):
        return sample_image_params(traits, 50, np.random.default_rng(7))

    a = draw(TRAITS)
    b = draw({**TRAITS, "habitat": "marine", "hue": 0.1, "size": 0.6})
    for field in ("scene", "angle", "flip", "cx", "cy", "brightness", "clutter_on", "male"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field


@pytest.mark.parametrize("size", [16, 32, 48, 128])
def test_any_size_renders(size):
    params = sample_image_params(TRAITS, 3, np.random.default_rng(1))
    images = render(params, size, np.random.default_rng(1))
    assert images.shape == (3, size, size, 3) and images.dtype == np.uint8
    assert images.std() > 10
