"""Read raw sources into records (``RECORD_SCHEMA``): one record per image.

Sources: a Darwin Core Archive (folder or .zip, read as its meta.xml says:
:mod:`taxoclip.curate.dwca`), a CSV/TSV/Parquet manifest with a column map (presets for
EOL-, BIOSCAN- and FathomNet-style exports), an image folder with a ``taxa.csv``, and
SynthToL's raw-source output (its ``raw/dwca`` archive). Rows that cannot become an image
record (a media row of a sound, an occurrence without media, an empty URL) are returned as
rejections at stage ``ingest``, never dropped. Each source is a :class:`Source`: an upper
bound of its records, then its records and rejections in chunks (an archive is streamed).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from taxoclip.curate.dwca import ArchiveReader
from taxoclip.curate.dwcatext import is_archive_folder
from taxoclip.curate.records import RECORD_COLUMNS, RECORD_SCHEMA, rejection
from taxoclip.errors import InputError, UsageError
from taxoclip.runtime.images import IMAGE_SUFFIXES  # what counts as an image, everywhere

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
    if is_archive_folder(path):
        return "dwca"
    if is_archive_folder(path / "raw" / "dwca"):
        return "synth"
    if (path / "taxa.csv").is_file():
        return "folder"
    raise InputError(
        f"source {path}: found no meta.xml or occurrence.txt (a Darwin Core Archive), no "
        "raw/dwca/ (SynthToL raw source, made by `taxoclip synth --raw-source`) and no taxa.csv "
        "(an image folder)"
    )


def ingest(
    sources: Iterable[str | Path],
    columns: Mapping[str, str] | None = None,
    extract_dir: Path | None = None,
) -> Ingested:
    """Read every source into memory (small inputs and tests; ``curate`` streams each
    source through :func:`read_source` instead). Record ids are prefixed with the
    source's label so they stay unique."""
    import tempfile

    tables: list[pa.Table] = []
    rejected: list[dict[str, str]] = []
    described: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="taxoclip-ingest-") as scratch:
        for path, kind, label in source_labels(sources):
            work = (extract_dir or Path(scratch)) / label
            source = read_source(path, kind, label, columns, work)
            for records, bad in source.chunks():
                tables.append(_to_table(records))
                rejected.extend(bad)
            described.append(source.description())
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


@dataclass
class Source:
    """One source, streamed: at most ``estimate`` records, then ``chunks()`` of
    ``(records, rejections)``; ``description()`` (for stats.json) once they are read."""

    label: str
    path: Path
    kind: str
    estimate: int
    read: Callable[[], Iterator[tuple[list[dict], list[dict]]]]
    records: int = 0
    rejected: int = 0

    def chunks(self) -> Iterator[tuple[list[dict], list[dict]]]:
        for records, rejected in self.read():
            self.records += len(records)
            self.rejected += len(rejected)
            yield records, rejected

    def description(self) -> dict[str, object]:
        return {
            "source": self.label,
            "path": str(self.path),
            "kind": self.kind,
            "records": self.records,
            "rejected": self.rejected,
        }


def read_source(
    path: Path,
    kind: str,
    label: str,
    columns: Mapping[str, str] | None = None,
    work: Path | None = None,
) -> Source:
    """One source as a :class:`Source`; ids are prefixed with ``label``, so records of
    different sources never share an id, and a repeated id within a source is rejected.
    An archive spills its join buckets (and unpacks a zip, if it must) under ``work``."""
    if kind == "synth":
        path, kind = path / "raw" / "dwca", "dwca"
    if kind == "dwca":
        if work is None:
            raise UsageError(f"source {path}: an archive needs a work folder")
        reader = ArchiveReader(path, label, work)
        return Source(label, path, kind, reader.spill(), reader.chunks)
    if kind == "manifest":
        rows, bad = read_manifest(path, label, columns)
    else:
        rows, bad = read_folder(path, label)
    table, repeats = _drop_repeated_ids(_to_table(rows))
    return Source(
        label, path, kind, table.num_rows, lambda: iter([(table.to_pylist(), bad + repeats)])
    )


# --------------------------------------------------------------------------- readers


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
            rejected.append(
                _reject(
                    f"{record_id}#repeat{seen[record_id]}",
                    row["source"],
                    row["url"],
                    f"record id {record_id} repeated in the source",
                )
            )
        else:
            seen[record_id] = 0
            keep.append(i)
    return (records.take(keep) if rejected else records), rejected
