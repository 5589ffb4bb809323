"""Captions of every TreeOfLife-200M text type (docs/reference.md#shard-keys-and-captions).

Pure functions: a lineage and a common name in, a caption out. The captions are the
only place the hierarchy enters training, so their exact form is part of the contract.
"""

from __future__ import annotations

from enum import Enum

from .lineage import RANK_NAMES, Lineage, clean_name

UNKNOWN_TAXONOMY = "a photo of unknown taxonomy."


class TextType(str, Enum):
    """Caption types, named as the shard keys (``sci`` → ``sci.txt``)."""

    SCI = "sci"
    COM = "com"
    TAXON = "taxon"
    TAXON_TAG = "taxonTag"
    SCI_COM = "sci_com"
    TAXON_COM = "taxon_com"
    TAXON_TAG_COM = "taxonTag_com"

    @classmethod
    def parse(cls, value: str | TextType) -> TextType:
        if isinstance(value, TextType):
            return value
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(t.value for t in cls)
            raise ValueError(f"unknown text type {value!r}; expected one of {names}") from None


#: The mix BioCLIP 2 draws from, one type per step for the whole batch.
TRAINING_TEXT_TYPES: tuple[TextType, ...] = (
    TextType.SCI,
    TextType.COM,
    TextType.TAXON,
    TextType.SCI_COM,
    TextType.TAXON_COM,
)

#: Plain-name shard keys, then the caption keys, in TreeOfLife-200M's spelling.
NAME_KEYS: tuple[str, ...] = ("taxonomic_name", "scientific_name", "common_name")
SHARD_TEXT_KEYS: tuple[str, ...] = NAME_KEYS + tuple(t.value for t in TextType)


def tagged_name(lineage: Lineage) -> str:
    """``kingdom Animalia phylum Chordata … species hudsonia`` (missing ranks skipped)."""
    return " ".join(
        f"{rank} {name}" for rank, name in zip(RANK_NAMES, lineage.ranks, strict=True) if name
    )


def _subject(lineage: Lineage, text_type: TextType) -> str:
    if text_type in (TextType.SCI, TextType.SCI_COM):
        return lineage.scientific_name
    if text_type in (TextType.TAXON, TextType.TAXON_COM):
        return lineage.taxonomic_name
    if text_type in (TextType.TAXON_TAG, TextType.TAXON_TAG_COM):
        return tagged_name(lineage)
    return ""


def render_text(lineage: Lineage, common_name: str, text_type: TextType | str) -> str:
    """One caption.

    Fallbacks keep every sample captioned: a ``com`` caption without a common name uses
    the scientific name; a ``*_com`` caption without a common name is the plain caption;
    with no name at all the caption is ``a photo of unknown taxonomy.``
    """
    text_type = TextType.parse(text_type)
    common = clean_name(common_name)
    if text_type is TextType.COM:
        if common:
            return f"a photo of {common}."
        return render_text(lineage, "", TextType.SCI)
    subject = _subject(lineage, text_type)
    wants_common = text_type in (TextType.SCI_COM, TextType.TAXON_COM, TextType.TAXON_TAG_COM)
    if subject and wants_common and common:
        return f"a photo of {subject} with common name {common}."
    if subject:
        return f"a photo of {subject}."
    if common:
        return f"a photo of {common}."
    return UNKNOWN_TAXONOMY


def render_all(lineage: Lineage, common_name: str) -> dict[str, str]:
    """Every shard text key (without ``.txt``) → its value, plus ``txt`` (= ``taxon``)."""
    common = clean_name(common_name)
    texts = {
        "taxonomic_name": lineage.taxonomic_name,
        "scientific_name": lineage.scientific_name,
        "common_name": common,
    }
    for text_type in TextType:
        texts[text_type.value] = render_text(lineage, common, text_type)
    texts["txt"] = texts[TextType.TAXON.value]
    return texts
