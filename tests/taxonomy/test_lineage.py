import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxoclip.taxonomy import N_RANKS, RANK_NAMES, Lineage, Rank, taxonomic_distance

MAGPIE = Lineage("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "hudsonia")

# Names as real data has them: unicode letters, hyphens, apostrophes; "" marks a hole.
name = st.text(
    alphabet=st.characters(categories=("L", "Pd"), include_characters="'. ", max_codepoint=0x2FFF),
    max_size=12,
).map(lambda s: " ".join(s.split()))
lineages = st.lists(name, min_size=N_RANKS, max_size=N_RANKS).map(Lineage.from_ranks)


def test_rank_names_match_pybioclip():
    assert [r.get_label() for r in Rank] == [
        "kingdom",
        "phylum",
        "class",
        "order",
        "family",
        "genus",
        "species",
    ]
    assert Rank.parse("Genus") is Rank.GENUS
    assert Rank.parse(2) is Rank.CLASS
    with pytest.raises(ValueError, match="unknown rank 'tribe'"):
        Rank.parse("tribe")


def test_lineage_names_and_holes():
    assert MAGPIE.taxonomic_name == "Animalia Chordata Aves Passeriformes Corvidae Pica hudsonia"
    assert MAGPIE.scientific_name == "Pica hudsonia"
    assert MAGPIE[Rank.CLASS] == "Aves" and MAGPIE["class"] == "Aves"
    # The GBIF backbone gives ray-finned fishes no class: the hole is skipped, never fatal.
    trout = Lineage("Animalia", "Chordata", None, "Salmoniformes", "Salmonidae", "Salmo", "trutta")
    assert trout.taxonomic_name == "Animalia Chordata Salmoniformes Salmonidae Salmo trutta"
    assert trout.to_list()[2] == ""
    assert trout.depth == 7
    genus_only = MAGPIE.truncate(Rank.GENUS)
    assert genus_only.scientific_name == "Pica"
    assert genus_only.deepest_rank is Rank.GENUS
    assert Lineage().is_empty and Lineage().depth == 0 and Lineage().scientific_name == ""


def test_from_mapping_reads_pybioclip_and_metadata_columns():
    row = {"kingdom": "Animalia", "class": "Aves", "genus": "Pica", "species": "Pica hudsonia"}
    assert Lineage.from_mapping(row) == Lineage("Animalia", "", "Aves", "", "", "Pica", "hudsonia")
    row = {"class": "label", "class_": "Aves", "species_epithet": "hudsonia", "genus": "Pica"}
    assert Lineage.from_mapping(row) == Lineage("", "", "Aves", "", "", "Pica", "hudsonia")
    assert Lineage.from_mapping({"kingdom": float("nan")}).is_empty


def test_names_are_normalised():
    assert Lineage("  Plantae ", "Tracheo\nphyta").ranks[:2] == ("Plantae", "Tracheo phyta")
    # NFC: a decomposed é equals the composed one.
    assert Lineage(genus="Me\u0301lia") == Lineage(genus="M\u00e9lia")
    with pytest.raises(ValueError, match="at most 7 ranks"):
        Lineage.from_ranks(["a"] * 8)


@pytest.mark.parametrize(
    ("other", "expected"),
    [
        (MAGPIE, 0),
        (Lineage("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "pica"), 1),
        (
            Lineage("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corax"),
            2,
        ),
        (Lineage("Animalia", "Chordata", "Aves", "Strigiformes", "Strigidae", "Bubo", "bubo"), 4),
        (
            Lineage("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rosaceae", "Rosa", "x"),
            7,
        ),
        (MAGPIE.truncate(Rank.GENUS), 1),  # a species beside its own genus
        (Lineage("Animalia", "Chordata", "", "Passeriformes", "Corvidae", "Pica", "hudsonia"), 0),
        (Lineage(), 7),
    ],
)
def test_taxonomic_distance_examples(other, expected):
    assert taxonomic_distance(MAGPIE, other) == expected
    assert taxonomic_distance(other, MAGPIE) == expected


@given(lineages, lineages)
def test_distance_is_symmetric_bounded_and_zero_on_self(a, b):
    d = taxonomic_distance(a, b)
    assert d == taxonomic_distance(b, a)
    assert 0 <= d <= N_RANKS
    assert taxonomic_distance(a, a) == 0


@given(lineages)
def test_hole_punched_lineages_keep_every_present_rank(lineage):
    present = [n for n in lineage.ranks if n]
    assert lineage.taxonomic_name == " ".join(present)
    assert lineage.depth == (max(i for i, n in enumerate(lineage.ranks) if n) + 1 if present else 0)
    assert Lineage.from_ranks(lineage.to_list()) == lineage
    assert Lineage.from_mapping(lineage.to_dict(class_key="class_")) == lineage
    assert list(lineage.to_dict()) == [*RANK_NAMES[:-1], "species_epithet"]
