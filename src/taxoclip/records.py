"""Words a curated record is described with, shared by curation and SynthToL's raw source.

Stdlib only: SynthToL writes the ground truth curation is graded against in these words,
so both import them from here and neither imports the other.
"""

from __future__ import annotations

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
REJECT_STAGES = (
    "ingest",
    "names",
    "category",
    "fetch",
    "image",
    "model_filter",
    "leak",
    "dedup",
)
