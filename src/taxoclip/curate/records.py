"""The raw record every source is read into, and the words curation reports with.

Each ingest reader yields Arrow tables with exactly ``RECORD_SCHEMA``; every later stage
adds columns but never drops a record: it leaves as kept or rejected with a stage and a
reason (``REJECT_STAGES``), so records in = kept + rejected can be checked at the end.
"""

from __future__ import annotations

import pyarrow as pa

# Higher ranks a source may give beside the name (Darwin Core terms, class as "class_").
GIVEN_RANKS = ("kingdom", "phylum", "class_", "order", "family", "genus")

RECORD_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),  # unique over the whole run: "<source>:<id>[:<media n>]"
        ("source", pa.string()),  # the SOURCE argument's label (folder or file name)
        ("url", pa.string()),  # absolute local path, file:// or http(s):// URL
        ("scientific_name", pa.string()),  # verbatim, authorship and all
        ("kingdom", pa.string()),
        ("phylum", pa.string()),
        ("class_", pa.string()),
        ("order", pa.string()),
        ("family", pa.string()),
        ("genus", pa.string()),
        ("vernacular_name", pa.string()),
        ("basis_of_record", pa.string()),  # Darwin Core basisOfRecord
        ("event_remarks", pa.string()),
        ("publisher", pa.string()),
        ("license", pa.string()),
        ("bbox", pa.string()),  # "x,y,w,h" in pixels of the source image, or ""
    ]
)
RECORD_COLUMNS = tuple(RECORD_SCHEMA.names)

# Resolution statuses (TaxonoPy's resolved / unsolved split: the last two are unsolved).
STATUS_EXACT = "exact"
STATUS_SYNONYM = "synonym"
STATUS_FUZZY = "fuzzy"
STATUS_HIGHER_RANK = "higher_rank"
STATUS_UNRESOLVED = "unresolved"
STATUSES = (STATUS_EXACT, STATUS_SYNONYM, STATUS_FUZZY, STATUS_HIGHER_RANK, STATUS_UNRESOLVED)
RESOLVED_STATUSES = (STATUS_EXACT, STATUS_SYNONYM, STATUS_FUZZY)

# Image categories split from metadata.
CATEGORY_MUSEUM = "museum_specimen"
CATEGORY_CAMERA_TRAP = "camera_trap"
CATEGORY_CITIZEN = "citizen_science"
CATEGORY_OTHER = "other"
CATEGORIES = (CATEGORY_MUSEUM, CATEGORY_CAMERA_TRAP, CATEGORY_CITIZEN, CATEGORY_OTHER)

# Where a record can be rejected, in pipeline order (names before fetch: no download is
# spent on a record whose name cannot be resolved).
REJECT_COLUMNS = ("record_id", "source", "url", "stage", "reason")


def rejection(record_id: str, source: str, url: str, stage: str, reason: str) -> dict[str, str]:
    """One row of ``rejected.parquet``."""
    return {"record_id": record_id, "source": source, "url": url, "stage": stage, "reason": reason}


REJECT_STAGES = (
    "ingest", "names", "category", "fetch", "image", "model_filter", "leak", "dedup",
)  # fmt: skip
