"""Offline name resolution against a small GBIF-format backbone written as real TSV files."""

from __future__ import annotations

from pathlib import Path

import pytest

from taxoclip.curate.names import Backbone, NameResolver, Resolution
from taxoclip.curate.records import (
    STATUS_EXACT,
    STATUS_FUZZY,
    STATUS_HIGHER_RANK,
    STATUS_SYNONYM,
    STATUS_UNRESOLVED,
)
from taxoclip.errors import InputError, UsageError
from taxoclip.taxonomy import Lineage

TAXON_HEADER = [
    "taxonID",
    "parentNameUsageID",
    "acceptedNameUsageID",
    "scientificName",
    "canonicalName",
    "taxonRank",
    "taxonomicStatus",
    "kingdom",
    "phylum",
    "class",
    "order",
    "family",
    "genus",
    "specificEpithet",
]

BIRD = ("Animalia", "Chordata", "Aves", "Passeriformes")
FINCHES = (*BIRD, "Fringillidae")
PLANT = ("Plantae", "Tracheophyta", "Magnoliopsida", "Apiales", "Apiaceae")


def _row(taxon_id, parent, accepted, scientific, canonical, rank, status, ranks=(), epithet=""):
    higher = [*ranks, "", "", "", "", "", ""][:6]
    return [
        str(taxon_id),
        str(parent),
        str(accepted),
        scientific,
        canonical,
        rank,
        status,
        *higher,
        epithet,
    ]


# GBIF mixes lower- and upper-case ranks and statuses; both appear on purpose.
# fmt: off
TAXA = [
    _row(1, "", "", "Animalia", "Animalia", "kingdom", "accepted", ("Animalia",)),
    _row(2, 1, "", "Chordata", "Chordata", "phylum", "accepted", ("Animalia", "Chordata")),
    _row(3, 2, "", "Aves", "Aves", "class", "accepted", BIRD[:3]),
    _row(4, 3, "", "Passeriformes", "Passeriformes", "order", "accepted", BIRD),
    _row(5, 4, "", "Fringillidae", "Fringillidae", "family", "accepted", FINCHES),
    _row(6, 5, "", "Fringilla L.", "Fringilla", "genus", "accepted", (*FINCHES, "Fringilla")),
    _row(7, 6, "", "Fringilla coelebs Linnaeus, 1758", "Fringilla coelebs", "SPECIES",
         "ACCEPTED", (*FINCHES, "Fringilla"), "coelebs"),
    _row(8, 6, "", "Fringilla montifringilla L.", "Fringilla montifringilla", "species",
         "accepted", (*FINCHES, "Fringilla"), "montifringilla"),
    _row(9, 6, "", "Fringilla teydea Webb et al.", "Fringilla teydea", "species", "accepted",
         (*FINCHES, "Fringilla"), "teydea"),
    _row(10, 7, "", "Fringilla coelebs canariensis Vieillot", "Fringilla coelebs canariensis",
         "subspecies", "accepted", (*FINCHES, "Fringilla"), "coelebs"),
    _row(11, 5, "", "Carduelis Brisson", "Carduelis", "genus", "accepted",
         (*FINCHES, "Carduelis")),
    _row(12, 11, "", "Carduelis carduelis (L.)", "Carduelis carduelis", "species", "accepted",
         (*FINCHES, "Carduelis"), "carduelis"),
    # Spinus and its species carry no higher-rank columns: the parents fill them.
    _row(13, 5, "", "Spinus Koch", "Spinus", "genus", "accepted"),
    _row(14, 13, "", "Spinus spinus (L.)", "Spinus spinus", "species", "accepted"),
    _row(15, "", 14, "Carduelis spinus (L.)", "Carduelis spinus", "species",
         "homotypic synonym", (*FINCHES, "Carduelis"), "spinus"),
    _row(20, "", 13, "Spinarius Smith", "Spinarius", "GENUS", "HETEROTYPIC_SYNONYM",
         (*FINCHES, "Spinarius")),
    _row(16, 4, "", "Paridae", "Paridae", "family", "accepted", (*BIRD, "Paridae")),
    _row(17, 16, "", "Parus L.", "Parus", "genus", "accepted", (*BIRD, "Paridae", "Parus")),
    _row(18, 17, "", "Parus major L.", "Parus major", "species", "accepted",
         (*BIRD, "Paridae", "Parus"), "major"),
    _row(19, 17, "", "Parus minor Temminck", "Parus minor", "species", "accepted",
         (*BIRD, "Paridae", "Parus"), "minor"),
    # Oenanthe is a bird genus and a plant genus; "Oenanthe crocata" is in both here.
    _row(30, 4, "", "Muscicapidae", "Muscicapidae", "family", "accepted",
         (*BIRD, "Muscicapidae")),
    _row(31, 30, "", "Oenanthe Vieillot", "Oenanthe", "genus", "accepted",
         (*BIRD, "Muscicapidae", "Oenanthe")),
    _row(32, 31, "", "Oenanthe crocata Auct.", "Oenanthe crocata", "species", "accepted",
         (*BIRD, "Muscicapidae", "Oenanthe"), "crocata"),
    _row(33, 31, "", "Oenanthe oenanthe (L.)", "Oenanthe oenanthe", "species", "accepted",
         (*BIRD, "Muscicapidae", "Oenanthe"), "oenanthe"),
    _row(40, "", "", "Plantae", "Plantae", "kingdom", "accepted", ("Plantae",)),
    _row(41, 40, "", "Tracheophyta", "Tracheophyta", "phylum", "accepted", PLANT[:2]),
    _row(42, 41, "", "Magnoliopsida", "Magnoliopsida", "class", "accepted", PLANT[:3]),
    _row(43, 42, "", "Apiales", "Apiales", "order", "accepted", PLANT[:4]),
    _row(44, 43, "", "Apiaceae", "Apiaceae", "family", "accepted", PLANT),
    _row(45, 44, "", "Oenanthe L.", "Oenanthe", "genus", "accepted", (*PLANT, "Oenanthe")),
    _row(46, 45, "", "Oenanthe crocata L.", "Oenanthe crocata", "species", "accepted",
         (*PLANT, "Oenanthe"), "crocata"),
    _row(47, 6, "", "Fringilla dubia Smith", "Fringilla dubia", "species", "doubtful",
         (*FINCHES, "Fringilla"), "dubia"),
]
# fmt: on

VERNACULAR = [
    ("7", "Buchfink", "de"),
    ("7", "Common Chaffinch", "en"),
    ("7", "Chaffinch", "en"),
    ("14", "Erlenzeisig", "de"),
    ("14", "Eurasian Siskin", "eng"),
    ("33", "Northern Wheatear", "en"),
    ("46", "Hemlock Water-dropwort", "en"),
    ("6", "Chaffinches", "en"),
]

VERSION = "GBIF Backbone Taxonomy 2023-08-28 (test)"


def write_backbone(folder: Path, taxa=TAXA, vernacular=VERNACULAR, version=VERSION) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(TAXON_HEADER)] + ["\t".join(row) for row in taxa]
    (folder / "Taxon.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    names = ["taxonID\tvernacularName\tlanguage"] + ["\t".join(row) for row in vernacular]
    (folder / "VernacularName.tsv").write_text("\n".join(names) + "\n", encoding="utf-8")
    if version is not None:
        (folder / "VERSION").write_text(version + "\n", encoding="utf-8")
    return folder


FINCH_LINEAGE = Lineage(*FINCHES, "Fringilla", "coelebs")


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory) -> Path:
    return write_backbone(tmp_path_factory.mktemp("backbone"))


@pytest.fixture(scope="module")
def resolver(backbone_dir) -> NameResolver:
    return NameResolver(Backbone.load(backbone_dir))


def _check(result: Resolution, status: str, lineage: Lineage, taxon_id: str) -> None:
    assert (result.status, result.lineage, result.taxon_id) == (status, lineage, taxon_id), result


def test_backbone_reads_version_lineages_and_english_names(backbone_dir):
    backbone = Backbone.load(backbone_dir)
    assert backbone.version == VERSION
    assert len(backbone) == len(TAXA) - 2  # every row but the two synonyms
    # Spinus rows have no rank columns: the parent chain Spinus → Fringillidae fills them.
    assert backbone.lineage("14") == Lineage(*FINCHES, "Spinus", "spinus")
    assert backbone.lineage("13") == Lineage(*FINCHES, "Spinus")
    assert backbone.lineage("5") == Lineage(*FINCHES)
    # the first English name in file order; German and later English names are skipped
    assert backbone.english["7"] == "Common Chaffinch"
    assert backbone.english["14"] == "Eurasian Siskin"
    assert backbone.synonym_targets("carduelis spinus") == ("14",)
    assert backbone.accepted_ids("oenanthe crocata") == ("32", "46")
    assert backbone.epithets("parus") == {"major", "minor"}


def test_version_without_version_file_is_a_short_hash_of_taxon_tsv(tmp_path):
    first = Backbone.load(write_backbone(tmp_path / "a", version=None)).version
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 16
    assert Backbone.load(write_backbone(tmp_path / "b", version=None)).version == first
    changed = Backbone.load(write_backbone(tmp_path / "c", taxa=TAXA[:-1], version=None))
    assert changed.version != first


@pytest.mark.parametrize(
    "name",
    [
        "Fringilla coelebs",
        "Fringilla coelebs (Smith, 1850)",
        "Fringilla coelebs L.",
        "Fringilla coelebs Linnaeus, 1758",
        "  fringilla   coelebs ",
        "FRINGILLA COELEBS",
        "Fringilla cf. coelebs",
    ],
)
def test_exact_match_after_stripping_authorship_case_and_space(resolver, name):
    result = resolver.resolve(name)
    _check(result, STATUS_EXACT, FINCH_LINEAGE, "7")
    assert (result.accepted_name, result.common_name, result.score) == (
        "Fringilla coelebs",
        "Common Chaffinch",
        100.0,
    )
    assert result.backbone_version == VERSION
    assert result.resolved


@pytest.mark.parametrize(
    "name",
    [
        "Fringilla coelebs canariensis",
        "Fringilla coelebs subsp. zzzz Smith",
        "Fringilla coelebs var. coelebs",
    ],
)
def test_infraspecific_names_resolve_to_their_species(resolver, name):
    _check(resolver.resolve(name), STATUS_EXACT, FINCH_LINEAGE, "7")


def test_synonym_resolves_to_accepted_taxon_with_its_lineage_and_common_name(resolver):
    result = resolver.resolve("Carduelis spinus (Linnaeus, 1758)")
    _check(result, STATUS_SYNONYM, Lineage(*FINCHES, "Spinus", "spinus"), "14")
    assert (result.accepted_name, result.common_name, result.score) == (
        "Spinus spinus",
        "Eurasian Siskin",
        100.0,
    )


@pytest.mark.parametrize(
    ("name", "taxon_id", "epithet"),
    [
        ("Fringilla coelebz", "7", "coelebs"),  # substitution
        ("Fringilla montifrignilla", "8", "montifringilla"),  # transposition
        ("Fringilla teyda", "9", "teydea"),  # deletion
        ("Fringilla montifringila", "8", "montifringilla"),  # deletion in a long epithet
        ("Fringilla montefringila", "8", "montifringilla"),  # 2 edits, epithet >= 8 letters
        ("Fringila coelebs L.", "7", "coelebs"),  # misspelt genus, exact epithet
    ],
)
def test_misspellings_resolve_fuzzy_to_the_true_species(resolver, name, taxon_id, epithet):
    result = resolver.resolve(name)
    _check(result, STATUS_FUZZY, Lineage(*FINCHES, "Fringilla", epithet), taxon_id)
    assert 80 < result.score < 100
    assert "fuzzy" in result.note


def test_misspelt_synonym_resolves_fuzzy_to_the_accepted_taxon(resolver):
    result = resolver.resolve("Carduelis spinnus")
    _check(result, STATUS_FUZZY, Lineage(*FINCHES, "Spinus", "spinus"), "14")
    assert result.common_name == "Eurasian Siskin"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Fringilla cxxlebx", "nothing within 1 edit"),  # 3 edits
        ("Fringilla mantafrongilla", "nothing within 2 edits"),  # 3 edits in a long epithet
        ("Parus mijor", "ambiguous: 'major', 'minor'"),  # 1 edit from each of two
    ],
)
def test_distant_or_ambiguous_misspellings_fall_back_to_the_genus(resolver, name, why):
    result = resolver.resolve(name)
    assert result.status == STATUS_HIGHER_RANK, result
    assert result.lineage.species == "" and result.lineage.genus == name.split()[0]
    assert why in result.note


def test_homonym_is_told_apart_by_the_given_kingdom(resolver):
    plant = resolver.resolve("Oenanthe crocata L.", {"kingdom": "Plantae", "family": ""})
    _check(plant, STATUS_EXACT, Lineage(*PLANT, "Oenanthe", "crocata"), "46")
    assert plant.common_name == "Hemlock Water-dropwort"
    bird = resolver.resolve("Oenanthe crocata", {"kingdom": "animalia"})  # case does not matter
    _check(bird, STATUS_EXACT, Lineage(*BIRD, "Muscicapidae", "Oenanthe", "crocata"), "32")
    by_class = resolver.resolve("Oenanthe crocata", {"class_": "Magnoliopsida"})
    assert by_class.taxon_id == "46"


def test_homonym_without_deciding_ranks_is_unresolved_with_a_note(resolver):
    unranked = resolver.resolve("Oenanthe crocata")
    assert (unranked.status, unranked.taxon_id, unranked.lineage) == (
        STATUS_UNRESOLVED,
        "",
        Lineage(),
    )
    assert unranked.note == "homonym: 2 candidates, no higher ranks given"
    undecided = resolver.resolve("Oenanthe crocata", {"kingdom": "Fungi"})
    assert undecided.status == STATUS_UNRESOLVED
    assert undecided.note == "homonym: 2 candidates, given ranks do not decide"
    # the genus is a homonym too: "Oenanthe sp." needs a rank to pick one
    assert resolver.resolve("Oenanthe sp.").status == STATUS_UNRESOLVED
    plant_genus = resolver.resolve("Oenanthe sp.", {"family": "Apiaceae"})
    _check(plant_genus, STATUS_HIGHER_RANK, Lineage(*PLANT, "Oenanthe"), "45")


def test_sunk_genus_resolves_to_its_accepted_genus(resolver):
    result = resolver.resolve("Spinarius sp.")
    _check(result, STATUS_HIGHER_RANK, Lineage(*FINCHES, "Spinus"), "13")
    assert "accepted name of 'Spinarius'" in result.note


def test_fuzzy_cutoff_zero_turns_fuzzy_matching_off(backbone_dir):
    strict = NameResolver(Backbone.load(backbone_dir), fuzzy_cutoff=0)
    assert strict.resolve("Fringilla coelebz").status == STATUS_HIGHER_RANK
    assert strict.resolve("Fringila coelebs").status == STATUS_UNRESOLVED
    with pytest.raises(UsageError):
        NameResolver(strict.backbone, fuzzy_cutoff=-1)


def test_given_ranks_that_disagree_do_not_block_a_unique_match(resolver):
    result = resolver.resolve("Fringilla coelebs", {"kingdom": "Plantae", "family": "Paridae"})
    _check(result, STATUS_EXACT, FINCH_LINEAGE, "7")


@pytest.mark.parametrize(
    "name", ["Fringilla sp.", "Fringilla spp.", "Fringilla", "Fringilla indet."]
)
def test_genus_only_names_resolve_to_the_genus(resolver, name):
    result = resolver.resolve(name)
    _check(result, STATUS_HIGHER_RANK, Lineage(*FINCHES, "Fringilla"), "6")
    assert (result.accepted_name, result.common_name) == ("Fringilla", "Chaffinches")
    assert not result.resolved


def test_names_that_are_not_one_species_stop_at_the_genus(resolver):
    near = resolver.resolve("Fringilla aff. coelebs")
    _check(near, STATUS_HIGHER_RANK, Lineage(*FINCHES, "Fringilla"), "6")
    assert "aff." in near.note
    aggregate = resolver.resolve("Fringilla coelebs agg.")
    assert (aggregate.status, aggregate.taxon_id) == (STATUS_HIGHER_RANK, "6")


def test_uninomial_and_given_ranks_give_higher_rank_matches(resolver):
    family = resolver.resolve("Fringillidae Leach, 1820")
    _check(family, STATUS_HIGHER_RANK, Lineage(*FINCHES), "5")
    unknown_species = resolver.resolve("Xenops rutilans", {"family": "Paridae", "genus": "Xenops"})
    _check(unknown_species, STATUS_HIGHER_RANK, Lineage(*BIRD, "Paridae"), "16")
    nameless = resolver.resolve("", {"order": "Passeriformes"})
    _check(nameless, STATUS_HIGHER_RANK, Lineage(*BIRD), "4")
    assert "empty name" in nameless.note


@pytest.mark.parametrize(
    ("name", "note"),
    [
        ("Xenops rutilans", "no species match for 'Xenops rutilans'"),
        ("Xenops", "no match for 'Xenops'"),
        ("Tobacco mosaic virus", "parse failed: "),
        ("", "empty name"),
        ("Fringilla coelebs", None),  # control: resolves
    ],
)
def test_unknown_and_unparsable_names_are_unresolved_with_the_reason(resolver, name, note):
    result = resolver.resolve(name)
    if note is None:
        assert result.status == STATUS_EXACT
        return
    assert (result.status, result.lineage, result.taxon_id, result.score) == (
        STATUS_UNRESOLVED,
        Lineage(),
        "",
        0.0,
    )
    assert note in result.note
    assert result.backbone_version == VERSION


def test_doubtful_taxon_matches_with_a_note(resolver):
    result = resolver.resolve("Fringilla dubia")
    _check(result, STATUS_EXACT, Lineage(*FINCHES, "Fringilla", "dubia"), "47")
    assert "doubtful" in result.note


def test_resolve_many_resolves_each_distinct_query_once(backbone_dir):
    resolver = NameResolver(Backbone.load(backbone_dir))
    calls = []
    resolve = resolver.resolve
    resolver.resolve = lambda name, given=None: calls.append(name) or resolve(name, given)
    distinct = [
        ("Fringilla coelebs L.", {}),
        ("Carduelis spinus", {"family": "Fringillidae"}),
        ("Oenanthe crocata", {"kingdom": "Plantae"}),
        ("Oenanthe crocata", {"kingdom": "Animalia"}),
        ("Xenops rutilans", None),
    ]
    queries = [distinct[i % 5] for i in range(1000)]
    results = resolver.resolve_many(queries)
    assert len(calls) == 5
    assert len(results) == 1000
    assert [r.taxon_id for r in results[:5]] == ["7", "14", "46", "32", ""]
    assert results[5] is results[0] and results[999] is results[4]


def test_missing_or_malformed_backbone_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no Taxon.tsv"):
        Backbone.load(tmp_path)
    (tmp_path / "Taxon.tsv").write_text("taxonID\tscientificName\n1\tAus bus\n", encoding="utf-8")
    with pytest.raises(InputError, match="missing columns canonicalName"):
        Backbone.load(tmp_path)


def test_predict_read_backbone_species_is_unchanged(backbone_dir):
    from taxoclip.predict.backbone import read_backbone_species
    from taxoclip.predict.index import read_taxa

    # As before the move: accepted species rows only, rank columns as written (no parent
    # walk: Spinus spinus keeps its holes), first English name.
    expected = [
        (
            [
                "Animalia",
                "Chordata",
                "Aves",
                "Passeriformes",
                "Fringillidae",
                "Fringilla",
                "coelebs",
            ],
            "Common Chaffinch",
        ),
        (
            [
                "Animalia",
                "Chordata",
                "Aves",
                "Passeriformes",
                "Fringillidae",
                "Fringilla",
                "montifringilla",
            ],
            "",
        ),
        (
            [
                "Animalia",
                "Chordata",
                "Aves",
                "Passeriformes",
                "Fringillidae",
                "Fringilla",
                "teydea",
            ],
            "",
        ),
        (
            [
                "Animalia",
                "Chordata",
                "Aves",
                "Passeriformes",
                "Fringillidae",
                "Carduelis",
                "carduelis",
            ],
            "",
        ),
        (["", "", "", "", "", "", "spinus"], "Eurasian Siskin"),
        (["Animalia", "Chordata", "Aves", "Passeriformes", "Paridae", "Parus", "major"], ""),
        (["Animalia", "Chordata", "Aves", "Passeriformes", "Paridae", "Parus", "minor"], ""),
        (
            [
                "Animalia",
                "Chordata",
                "Aves",
                "Passeriformes",
                "Muscicapidae",
                "Oenanthe",
                "crocata",
            ],
            "",
        ),
        (
            [
                "Animalia",
                "Chordata",
                "Aves",
                "Passeriformes",
                "Muscicapidae",
                "Oenanthe",
                "oenanthe",
            ],
            "Northern Wheatear",
        ),
        (
            [
                "Plantae",
                "Tracheophyta",
                "Magnoliopsida",
                "Apiales",
                "Apiaceae",
                "Oenanthe",
                "crocata",
            ],
            "Hemlock Water-dropwort",
        ),
    ]
    got = [(lineage.to_list(), common) for lineage, common in read_backbone_species(backbone_dir)]
    assert got == expected
    assert [(lineage.to_list(), c) for lineage, c in read_taxa(backbone_dir)] == expected
