"""Read raw sources into records (``RECORD_SCHEMA``): one record per image.

Sources: a GBIF Darwin Core Archive (folder or .zip; ``occurrence.txt`` + ``multimedia.txt``
joined on ``gbifID``), a CSV/TSV/Parquet manifest with a column map (presets for EOL-,
BIOSCAN- and FathomNet-style exports), an image folder with a ``taxa.csv``, and SynthToL's
raw-source output (its ``raw/dwca`` archive). Rows that cannot become an image record
(a media row of a sound, an occurrence without media, an empty URL) are returned as
rejections at stage ``ingest``, never dropped.
"""

from __future__ import annotations

import csv
import sys
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from taxoclip.curate.records import RECORD_COLUMNS, RECORD_SCHEMA, rejection
from taxoclip.errors import InputError, UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")

# Darwin Core term -> our record column (GBIF headers use the bare term names).
_DWC_OCCURRENCE = {
    "scientificName": "scientific_name",
    "kingdom": "kingdom",
    "phylum": "phylum",
    "class": "class_",
    "order": "order",
    "family": "family",
    "genus": "genus",
    "vernacularName": "vernacular_name",
    "basisOfRecord": "basis_of_record",
    "eventRemarks": "event_remarks",
    "publisher": "publisher",
    "license": "license",
}

# Column maps for manifests: our field -> the export's column. ``id`` and ``url`` are
# required; ``x, y, width, height`` (FathomNet boxes) become the crop box.
COLUMN_PRESETS: dict[str, dict[str, str]] = {
    # Encyclopedia of Life media manifest (as in TreeOfLife-10M's EOL part)
    "eol": {
        "id": "eol_content_id",
        "url": "eol_full_size_copy_url",
        "scientific_name": "scientific_name",
        "vernacular_name": "common_name",
        "license": "license_name",
        "publisher": "copyright_owner",
    },
    # BIOSCAN-1M / 5M insect metadata: taxonomy in columns, image file names relative
    "bioscan": {
        "id": "processid",
        "url": "image_file",
        "scientific_name": "species",
        "phylum": "phylum",
        "class_": "class",
        "order": "order",
        "family": "family",
        "genus": "genus",
    },
    # FathomNet bounding-box export: one row per box, the concept is the name
    "fathomnet": {
        "id": "uuid",
        "url": "url",
        "scientific_name": "concept",
        "x": "x",
        "y": "y",
        "width": "width",
        "height": "height",
    },
    # our own names: a manifest written with RECORD_SCHEMA's column names
    "taxoclip": {c: c for c in RECORD_COLUMNS if c not in ("record_id", "source")}
    | {"id": "record_id"},
}
_BOX_FIELDS = ("x", "y", "width", "height")


@dataclass
class Ingested:
    """Records of all sources and the rows that could not become records."""

    records: pa.Table
    rejected: list[dict[str, str]] = field(default_factory=list)
    sources: list[dict[str, object]] = field(default_factory=list)


def parse_column_map(spec: str | None) -> dict[str, str] | None:
    """``--columns``: a preset name, or ``field=column,field=column`` (may start with a preset)."""
    if not spec:
        return None
    mapping: dict[str, str] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if "=" not in part:
            if part not in COLUMN_PRESETS:
                raise UsageError(
                    f"--columns: unknown preset {part!r} (known: {', '.join(COLUMN_PRESETS)})"
                )
            mapping.update(COLUMN_PRESETS[part])
            continue
        key, column = (s.strip() for s in part.split("=", 1))
        allowed = set(RECORD_COLUMNS) - {"record_id", "source"} | {"id", *_BOX_FIELDS}
        if key not in allowed:
            raise UsageError(
                f"--columns: unknown field {key!r} (fields: {', '.join(sorted(allowed))})"
            )
        mapping[key] = column
    return mapping


def detect_kind(path: Path) -> str:
    """What a SOURCE path is: dwca, synth, manifest or folder."""
    if path.is_file():
        if path.suffix.lower() == ".zip":
            return "dwca"
        if path.suffix.lower() in (".csv", ".tsv", ".txt", ".parquet"):
            return "manifest"
        raise InputError(
            f"source {path}: not a .zip archive, a .csv/.tsv/.parquet manifest or a folder"
        )
    if not path.is_dir():
        raise InputError(f"source {path}: no such file or folder")
    if (path / "occurrence.txt").is_file():
        return "dwca"
    if (path / "raw" / "dwca" / "occurrence.txt").is_file():
        return "synth"
    if (path / "taxa.csv").is_file():
        return "folder"
    raise InputError(
        f"source {path}: found neither occurrence.txt (a Darwin Core Archive), raw/dwca/ "
        "(SynthToL raw source, made by `taxoclip synth --raw-source`) nor taxa.csv (an image folder)"
    )


def ingest(
    sources: Iterable[str | Path],
    columns: Mapping[str, str] | None = None,
    extract_dir: Path | None = None,
) -> Ingested:
    """Read every source; record ids are prefixed with the source's label so they stay unique."""
    tables: list[pa.Table] = []
    rejected: list[dict[str, str]] = []
    described: list[dict[str, object]] = []
    labels: set[str] = set()
    for raw in sources:
        path = Path(raw).expanduser()
        kind = detect_kind(path)
        label = _unique_label(path, labels)
        table, bad, description = read_source(path, kind, label, columns, extract_dir)
        tables.append(table)
        rejected.extend(bad)
        described.append(description)
    records = pa.concat_tables(tables) if tables else RECORD_SCHEMA.empty_table()
    return Ingested(records=records, rejected=rejected, sources=described)


def source_labels(sources: Iterable[str | Path]) -> list[tuple[Path, str, str]]:
    """``(path, kind, label)`` of each source: what it is and its unique label (raises
    InputError for a source that is none of the known kinds)."""
    labels: set[str] = set()
    out = []
    for raw in sources:
        path = Path(raw).expanduser()
        out.append((path, detect_kind(path), _unique_label(path, labels)))
    return out


def read_source(
    path: Path,
    kind: str,
    label: str,
    columns: Mapping[str, str] | None = None,
    extract_dir: Path | None = None,
) -> tuple[pa.Table, list[dict[str, str]], dict[str, object]]:
    """One source's records (ids unique within it: a repeat is rejected), its rejected
    rows and its description for stats.json. Ids are prefixed with ``label``, so records
    of different sources never share an id."""
    if kind == "synth":
        path, kind = path / "raw" / "dwca", "dwca"
    if kind == "dwca":
        rows, bad = read_dwca(path, label, extract_dir)
    elif kind == "manifest":
        rows, bad = read_manifest(path, label, columns)
    else:
        rows, bad = read_folder(path, label)
    table, repeats = _drop_repeated_ids(_to_table(rows))
    description = {"source": label, "path": str(path), "kind": kind,
                   "records": len(rows), "rejected": len(bad)}  # fmt: skip
    return table, bad + repeats, description


# --------------------------------------------------------------------------- readers


def read_dwca(
    path: Path, label: str, extract_dir: Path | None = None
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """One record per StillImage row of ``multimedia.txt``, its occurrence joined on gbifID.

    Relative identifiers are resolved against the archive folder. A zip is unpacked into
    ``extract_dir`` first (GBIF downloads arrive zipped).
    """
    if path.is_file():
        path = _unzip(path, label, extract_dir)
    occurrences: dict[str, dict[str, str]] = {}
    for row in _read_delimited(path / "occurrence.txt", "\t", required=("gbifID",)):
        occurrences[row["gbifID"]] = row
    multimedia = path / "multimedia.txt"
    if not multimedia.is_file():
        raise InputError(f"source {path}: occurrence.txt has no multimedia.txt beside it")
    records, rejected = [], []
    media_seen: dict[str, int] = {}
    for row in _read_delimited(multimedia, "\t", required=("gbifID", "identifier")):
        gbif_id = row["gbifID"]
        index = media_seen.get(gbif_id, 0)
        media_seen[gbif_id] = index + 1
        record_id = f"{label}:{gbif_id}:{index}"
        url = _resolve_url(row.get("identifier", ""), path)
        occurrence = occurrences.get(gbif_id)
        media_type = (row.get("type") or "StillImage").strip()
        reason = ""
        if occurrence is None:
            reason = f"multimedia row for gbifID {gbif_id} has no occurrence"
        elif media_type.lower() not in ("stillimage", "image", ""):
            reason = f"not a still image (type {media_type})"
        elif not url:
            reason = "empty identifier (no image URL)"
        if reason:
            rejected.append(_reject(record_id, label, url, reason))
            continue
        record = {ours: occurrence.get(term, "") for term, ours in _DWC_OCCURRENCE.items()}
        # the media row's licence and publisher describe the image itself
        for key in ("license", "publisher"):
            if row.get(key):
                record[key] = row[key]
        record.update(record_id=record_id, source=label, url=url, bbox="")
        records.append(record)
    for gbif_id in occurrences.keys() - media_seen.keys():
        rejected.append(_reject(f"{label}:{gbif_id}", label, "", "occurrence has no image"))
    return records, rejected


def read_manifest(
    path: Path, label: str, columns: Mapping[str, str] | None
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """A CSV/TSV/Parquet export mapped through ``columns`` (our field -> its column)."""
    if path.suffix.lower() == ".parquet":
        rows = pq.read_table(path).to_pylist()
        header = list(rows[0]) if rows else pq.read_schema(path).names
    else:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
        rows = list(_read_delimited(path, delimiter))
        header = list(rows[0]) if rows else []
    mapping = dict(columns) if columns else _guess_columns(header, path)
    missing = [f"{k} (column {v!r})" for k, v in mapping.items() if v not in header]
    for required in ("id", "url"):
        if required not in mapping:
            raise InputError(f"source {path}: the column map gives no {required!r} column")
    if missing and rows:
        raise InputError(f"source {path}: columns not in the file: {', '.join(missing)}")
    records, rejected = [], []
    box_count: dict[str, int] = {}
    for row in rows:
        value = {k: _text(row.get(v)) for k, v in mapping.items()}
        raw_id = value.pop("id")
        box = [value.pop(k, "") for k in _BOX_FIELDS]
        url = _resolve_url(value.pop("url"), path.parent)
        record_id = f"{label}:{raw_id}"
        if any(box):
            n = box_count.get(raw_id, 0)
            box_count[raw_id] = n + 1
            record_id = f"{record_id}:box{n}"
        reason = ""
        if not raw_id:
            reason, record_id = "empty id", f"{label}:row{len(records) + len(rejected)}"
        elif not url:
            reason = "empty image URL"
        bbox = ""
        if any(box):
            try:
                bbox = ",".join(str(round(float(b))) for b in box)
            except ValueError:
                reason = f"bounding box is not numeric: {box}"
        if reason:
            rejected.append(_reject(record_id, label, url, reason))
            continue
        record = {c: "" for c in RECORD_COLUMNS}
        record.update(value, record_id=record_id, source=label, url=url, bbox=bbox)
        records.append(record)
    return records, rejected


def read_folder(path: Path, label: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Images under ``path`` named by ``taxa.csv``.

    ``taxa.csv`` has ``scientific_name`` (plus optional rank columns and
    ``vernacular_name``) and either ``filepath`` (one image) or ``folder`` (every image
    under that sub-folder). Images that no row names are rejected, not silently skipped.
    """
    rows = list(_read_delimited(path / "taxa.csv", ",", required=("scientific_name",)))
    images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    records, rejected = [], []
    named: set[Path] = set()
    for row in rows:
        if row.get("filepath"):
            targets = [path / row["filepath"]]
        elif row.get("folder"):
            targets = [p for p in images if (path / row["folder"]) in p.parents]
        else:
            raise InputError(f"source {path / 'taxa.csv'}: each row needs filepath or folder")
        for image in targets:
            rel = image.relative_to(path).as_posix()
            record = {c: "" for c in RECORD_COLUMNS}
            record.update(
                {c: row.get("class" if c == "class_" else c, "") or "" for c in RECORD_COLUMNS}
            )
            record.update(
                record_id=f"{label}:{rel}", source=label, url=str(image.resolve()), bbox=""
            )
            records.append(record)
            named.add(image)
    for image in images:
        if image not in named:
            rel = image.relative_to(path).as_posix()
            rejected.append(
                _reject(f"{label}:{rel}", label, str(image), "no row of taxa.csv names it")
            )
    return records, rejected


# --------------------------------------------------------------------------- helpers


def _read_delimited(path: Path, delimiter: str, required: tuple[str, ...] = ()):
    if not path.is_file():
        raise InputError(f"source {path}: file not found")
    csv.field_size_limit(sys.maxsize)  # GBIF remarks can be long
    with path.open(newline="", encoding="utf-8-sig") as handle:
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        reader = csv.DictReader(handle, delimiter=delimiter, quoting=quoting)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"source {path}: missing column(s) {', '.join(missing)}")
        for row in reader:
            yield {k: (v or "").strip() for k, v in row.items() if k is not None}


def _resolve_url(identifier: str, base: Path) -> str:
    identifier = (identifier or "").strip()
    if not identifier or "://" in identifier:
        return identifier
    local = Path(identifier).expanduser()
    return str((local if local.is_absolute() else base / local).resolve())


def _unzip(archive: Path, label: str, extract_dir: Path | None) -> Path:
    if extract_dir is None:
        raise UsageError(f"source {archive}: a zipped archive needs a folder to unpack into")
    target = extract_dir / label
    if not (target / "occurrence.txt").is_file():
        try:
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(target)
        except zipfile.BadZipFile as exc:
            raise InputError(f"source {archive}: not a readable zip ({exc})") from exc
    if not (target / "occurrence.txt").is_file():
        raise InputError(f"source {archive}: the zip holds no occurrence.txt")
    return target


def _guess_columns(header: list[str], path: Path) -> dict[str, str]:
    """With no --columns: the first preset whose id, url and name columns are all present,
    with whichever of its other columns the file has."""
    for name in ("taxoclip", "fathomnet", "bioscan", "eol"):
        preset = COLUMN_PRESETS[name]
        if all(preset[f] in header for f in ("id", "url", "scientific_name")):
            return {f: column for f, column in preset.items() if column in header}
    raise InputError(
        f"source {path}: columns {header[:12]} match no preset; give --columns "
        f"(a preset: {', '.join(COLUMN_PRESETS)}, or field=column pairs)"
    )


def _unique_label(path: Path, taken: set[str]) -> str:
    base = (path.stem if path.is_file() else path.name) or "source"
    label, n = base, 2
    while label in taken:
        label, n = f"{base}-{n}", n + 1
    taken.add(label)
    return label


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _reject(record_id: str, source: str, url: str, reason: str) -> dict[str, str]:
    return rejection(record_id, source, url, "ingest", reason)


def _to_table(rows: list[dict[str, str]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{c: row.get(c, "") or "" for c in RECORD_COLUMNS} for row in rows], schema=RECORD_SCHEMA
    )


def _drop_repeated_ids(records: pa.Table) -> tuple[pa.Table, list[dict[str, str]]]:
    ids = records.column("record_id").to_pylist()
    seen: dict[str, int] = {}
    keep, rejected = [], []
    for i, record_id in enumerate(ids):
        if record_id in seen:
            # the repeat gets its own id so every record in the ledger stays unique
            seen[record_id] += 1
            row = records.slice(i, 1).to_pylist()[0]
            rejected.append(_reject(f"{record_id}#repeat{seen[record_id]}", row["source"],
                                    row["url"], f"record id {record_id} repeated in the source"))  # fmt: skip
        else:
            seen[record_id] = 0
            keep.append(i)
    return (records.take(keep) if rejected else records), rejected
