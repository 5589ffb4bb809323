import pytest
from hypothesis import given

from taxoclip.taxonomy import (
    SHARD_TEXT_KEYS,
    TRAINING_TEXT_TYPES,
    UNKNOWN_TAXONOMY,
    Lineage,
    TextType,
    clean_name,
    render_all,
    render_text,
)

from .test_lineage import MAGPIE, lineages, name

COMMON = "black-billed magpie"
TAXON = "Animalia Chordata Aves Passeriformes Corvidae Pica hudsonia"
TAGGED = (
    "kingdom Animalia phylum Chordata class Aves order Passeriformes family Corvidae "
    "genus Pica species hudsonia"
)


def test_every_caption_matches_treeoflife_layout():
    texts = render_all(MAGPIE, COMMON)
    assert texts == {
        "taxonomic_name": TAXON,
        "scientific_name": "Pica hudsonia",
        "common_name": COMMON,
        "sci": "a photo of Pica hudsonia.",
        "com": "a photo of black-billed magpie.",
        "taxon": f"a photo of {TAXON}.",
        "taxonTag": f"a photo of {TAGGED}.",
        "sci_com": "a photo of Pica hudsonia with common name black-billed magpie.",
        "taxon_com": f"a photo of {TAXON} with common name black-billed magpie.",
        "taxonTag_com": f"a photo of {TAGGED} with common name black-billed magpie.",
        "txt": f"a photo of {TAXON}.",
    }
    assert set(texts) == set(SHARD_TEXT_KEYS) | {"txt"}


def test_missing_ranks_are_skipped_in_every_form():
    fish = Lineage("Animalia", "Chordata", "", "Salmoniformes", "Salmonidae", "Salmo", "trutta")
    assert render_text(fish, "", "taxon") == (
        "a photo of Animalia Chordata Salmoniformes Salmonidae Salmo trutta."
    )
    assert render_text(fish, "", "taxonTag") == (
        "a photo of kingdom Animalia phylum Chordata order Salmoniformes family Salmonidae "
        "genus Salmo species trutta."
    )


def test_fallbacks_without_common_name_or_taxonomy():
    assert render_text(MAGPIE, "", TextType.COM) == "a photo of Pica hudsonia."
    assert render_text(MAGPIE, "  ", "taxon_com") == f"a photo of {TAXON}."
    assert render_text(Lineage(), COMMON, "sci_com") == "a photo of black-billed magpie."
    for text_type in TextType:
        assert render_text(Lineage(), "", text_type) == UNKNOWN_TAXONOMY
    with pytest.raises(ValueError, match="unknown text type 'latin'"):
        render_text(MAGPIE, "", "latin")


def test_training_mix_is_the_papers():
    assert [t.value for t in TRAINING_TEXT_TYPES] == ["sci", "com", "taxon", "sci_com", "taxon_com"]


@given(lineages, name)
def test_captions_are_well_formed_for_any_lineage(lineage, common):
    texts = render_all(lineage, common)
    for text_type in TextType:
        caption = texts[text_type.value]
        assert caption.startswith("a photo of ") and caption.endswith(".")
        assert "  " not in caption
    if lineage.is_empty and not common:
        assert texts["taxon"] == UNKNOWN_TAXONOMY
    if lineage.taxonomic_name:
        assert lineage.taxonomic_name in texts["taxon_com"]
    if common and lineage.scientific_name:
        # Names are NFC-normalised (some characters, e.g. Bengali RRA, change under NFC).
        assert texts["sci_com"].endswith(f" with common name {clean_name(common)}.")
