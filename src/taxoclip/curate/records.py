"""The raw record every source is read into, and the words curation reports with.

Each ingest reader yields Arrow tables with exactly ``RECORD_SCHEMA``; every later stage
adds columns but never drops a record: it leaves as kept or rejected with a stage and a
reason (``REJECT_STAGES``), so records in = kept + rejected can be checked at the end.
"""

from __future__ import annotations

import pyarrow as pa

# The status, category and stage words live in taxoclip.records (SynthToL writes its ground
# truth in them too); re-exported so curation's modules find everything here.
from taxoclip.records import (  # noqa: F401
    CATEGORIES,
    CATEGORY_CAMERA_TRAP,
    CATEGORY_CITIZEN,
    CATEGORY_MUSEUM,
    CATEGORY_OTHER,
    REJECT_STAGES,
    RESOLVED_STATUSES,
    STATUS_EXACT,
    STATUS_FUZZY,
    STATUS_HIGHER_RANK,
    STATUS_SYNONYM,
    STATUS_UNRESOLVED,
    STATUSES,
)

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

# Columns of ``rejected.parquet``: where (``stage``, one of REJECT_STAGES) and why.
REJECT_COLUMNS = ("record_id", "source", "url", "stage", "reason")


def rejection(record_id: str, source: str, url: str, stage: str, reason: str) -> dict[str, str]:
    """One row of ``rejected.parquet``."""
    return {"record_id": record_id, "source": source, "url": url, "stage": stage, "reason": reason}
