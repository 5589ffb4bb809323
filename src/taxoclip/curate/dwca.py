"""Records from a Darwin Core Archive: its organisms joined with their media.

One record per media row of a gbif Multimedia or Image extension (the URL in
``identifier``) or an Audubon Core extension (``accessURI``, else ``identifier`` when it
is a URL), with the organism it shows: the core row for an Occurrence or Taxon core; for
an Event core, the row of the Occurrence extension it names (by ``occurrenceID``, or the
event's only occurrence). Archives with no media extension give the URLs of
``associatedMedia``. Everything else is a rejection with its reason: sounds and videos,
media without a URL or an organism, organisms without media, repeated ids. How the files
are read: :mod:`taxoclip.curate.dwcatext`.

Memory: the organism–media join is a hash join over buckets spilled to Parquet
(:class:`_Spill`): pass 1 streams every table into buckets by join key, pass 2 joins one
bucket at a time. A bucket holds about 64 MB of source text, so memory grows with that
(and the 8,192-record chunks handed on), not with the records; the spill takes disk about
the size of the fields kept, and is removed after the source is read.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from taxoclip.curate.dwcatext import OCCURRENCE, Archive, Table, local_name
from taxoclip.curate.records import RECORD_COLUMNS, rejection
from taxoclip.errors import InputError

# Darwin Core term (local name) -> our record column (and the order of the spilled fields).
ORGANISM_TERMS = {
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
EVENT, TAXON = "Event", "Taxon"
# rowType URI -> where the media URL is: gbif's extensions in identifier, Audubon Core in
# accessURI (its identifier is often a UUID)
MEDIA_ROW_TYPES = {
    "http://rs.gbif.org/terms/1.0/Multimedia": "gbif",
    "http://rs.gbif.org/terms/1.0/Image": "gbif",
    "http://rs.tdwg.org/ac/terms/Multimedia": "ac",
}
STILL_TYPES = ("", "stillimage", "image", "photograph", "photo")
_MEDIA_FIELDS = ("url", "type", "format", "license", "publisher")
_BUCKET_BYTES = 64 << 20  # source text per join bucket: what the reader holds at once
_CHUNK = 8192  # records per chunk handed to the caller
_SPILL_ROWS = 16384  # rows a bucket buffers before it writes a row group


# --------------------------------------------------------------------------- the join


class _Spill:
    """Rows hash-partitioned by key into ``n`` Parquet files, written as they fill."""

    def __init__(self, folder: Path, name: str, columns: tuple[str, ...], n: int) -> None:
        self.columns = ("key", "seq", "line", *columns)
        self.schema = pa.schema(
            [(c, pa.int64() if c in ("seq", "line") else pa.string()) for c in self.columns]
        )
        self.paths = [folder / f"{name}-{b:04d}.parquet" for b in range(n)]
        self.buffers: list[list[tuple]] = [[] for _ in range(n)]
        self.writers: list[pq.ParquetWriter | None] = [None] * n
        self.count = 0

    def add(self, key: str, seq: int, line: int, values: tuple[str, ...]) -> None:
        b = zlib.crc32(key.encode()) % len(self.paths)
        self.buffers[b].append((key, seq, line, *values))
        self.count += 1
        if len(self.buffers[b]) >= _SPILL_ROWS:
            self._flush(b)

    def _flush(self, b: int) -> None:
        rows = self.buffers[b]
        if self.writers[b] is None:
            self.writers[b] = pq.ParquetWriter(self.paths[b], self.schema)
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in self.columns]
        self.writers[b].write_table(
            pa.table(dict(zip(self.columns, columns, strict=True)), schema=self.schema)
        )
        self.buffers[b] = []

    def close(self) -> None:
        for b in range(len(self.paths)):
            self._flush(b)
            self.writers[b].close()

    def bucket(self, b: int) -> list[dict]:
        """Bucket ``b``'s rows in source order."""
        return pq.read_table(self.paths[b]).sort_by("seq").to_pylist()


@dataclass
class Counts:
    """What the reader met, for stats.json and the tests."""

    organisms: int = 0
    media_rows: int = 0
    records: int = 0
    rejected: int = 0


class ArchiveReader:
    """Records and rejections of one archive, streamed in chunks (see the module doc).

    Record ids are ``<source>:<organism id>:<n>``, n the media row's place among that
    organism's media; the organism id is the core id (for an Event core, the occurrence's
    ``occurrenceID``, else ``<event id>/<k>``, its k-th occurrence). An organism without
    media is rejected as ``<source>:<organism id>``.
    """

    def __init__(self, path: Path, label: str, work: Path) -> None:
        self.label = label
        self.work = work
        self.archive = Archive(path, work / "unpacked")
        core = self.archive.core
        if core.kind not in (OCCURRENCE, EVENT, TAXON):
            raise InputError(
                f"source {self.archive.shown(core.locations[0])}: core rowType {core.row_type} "
                "is not an Occurrence, Event or Taxon core: no organisms to read"
            )
        self.occurrences = [t for t in self.archive.extensions if t.kind == OCCURRENCE]
        if core.kind == EVENT and not self.occurrences:
            raise InputError(
                f"source {self.archive.shown()}: an Event core without an Occurrence extension "
                "names no organisms"
            )
        self.media = [t for t in self.archive.extensions if t.row_type in MEDIA_ROW_TYPES]
        for table in [core, *self.occurrences, *self.media]:
            if table.id_index is None:
                what = "<id>" if table is core else "<coreid>"
                raise InputError(
                    f"source {self.archive.shown(table.locations[0])}: meta.xml gives no "
                    f"{what} index: its rows cannot be joined"
                )
        self.counts = Counts()
        self._spilled: tuple[_Spill, _Spill] | None = None
        self._early: list[dict] = []  # rejections made while spilling (event media)

    # the organisms and media, spilled by join key ---------------------------------------

    def spill(self) -> int:
        """Pass 1: stream every table into join buckets; returns the number of media rows
        (an upper bound of the records)."""
        folder = self.work / "spill"
        folder.mkdir(parents=True, exist_ok=True)
        n = max(1, -(-self._source_bytes() // _BUCKET_BYTES))
        organisms = _Spill(folder, "organisms", tuple(ORGANISM_TERMS.values()), n)
        media = _Spill(folder, "media", _MEDIA_FIELDS, n)
        if self.archive.core.kind == EVENT:
            self._spill_events(folder, n, organisms, media)
        else:
            self._spill_organisms(self.archive.core, organisms, media, key_of=None)
            self._spill_media(media)
        organisms.close()
        media.close()
        self._spilled = (organisms, media)
        self.counts.organisms = organisms.count
        self.counts.media_rows = media.count + len(self._early)
        return self.counts.media_rows

    def _source_bytes(self) -> int:
        tables = [self.archive.core, *self.archive.extensions]
        locations = {loc for t in tables for loc in t.locations}
        if self.archive.zip is not None:
            sizes = {i.filename: i.file_size for i in self.archive.zip.infolist()}
            return sum(sizes.get(self.archive.prefix + loc, 0) for loc in locations)
        base = self.archive.path / self.archive.prefix
        return sum((base / loc).stat().st_size for loc in locations if (base / loc).is_file())

    def _spill_organisms(self, table: Table, organisms: _Spill, media: _Spill, key_of) -> None:
        """Organism rows keyed by their id; with no media extension, their associatedMedia."""
        seq = organisms.count
        for line, row in self.archive.rows(table):
            key = key_of(row) if key_of else table.key(row)
            values = tuple(table.value(row, term) for term in ORGANISM_TERMS)
            organisms.add(key, seq, line, values)
            seq += 1
            if not self.media:
                for url in _split_media(table.value(row, "associatedMedia")):
                    media.add(key, media.count, line, (url, "", "", "", ""))

    def _spill_media(self, media: _Spill, key_of=None) -> None:
        for table in self.media:
            audubon = MEDIA_ROW_TYPES[table.row_type] == "ac"
            for line, row in self.archive.rows(table):
                identifier = table.value(row, "identifier")
                url = table.value(row, "accessURI") if audubon else identifier
                if audubon and not url and "://" in identifier:
                    url = identifier
                values = (
                    url,
                    table.value(row, "type"),
                    table.value(row, "format"),
                    table.value(row, "license")
                    or table.value(row, "UsageTerms")
                    or table.value(row, "rights"),
                    table.value(row, "publisher"),
                )
                key = key_of(table.key(row)) if key_of else table.key(row)
                media.add(key, media.count, line, values)

    def _spill_events(self, folder: Path, n: int, organisms: _Spill, media: _Spill) -> None:
        """An Event core: events and their occurrences joined first (bucketed by event id);
        each occurrence goes on keyed by its own id, and each media row naming an event is
        re-keyed to that event's only occurrence (or rejected when it has several)."""
        columns = tuple(ORGANISM_TERMS.values())
        events = _Spill(folder, "events", columns, n)
        for line, row in self.archive.rows(self.archive.core):
            core = self.archive.core
            events.add(
                core.key(row), events.count, line, tuple(core.value(row, t) for t in ORGANISM_TERMS)
            )
        events.close()
        members = _Spill(folder, "members", (*columns, "occurrence_id"), n)
        for table in self.occurrences:
            for line, row in self.archive.rows(table):
                values = tuple(table.value(row, t) for t in ORGANISM_TERMS)
                members.add(
                    table.key(row), members.count, line, (*values, table.value(row, "occurrenceID"))
                )
        members.close()
        raw_media = _Spill(folder, "event-media", _MEDIA_FIELDS, n)
        self._spill_media(raw_media)
        raw_media.close()
        for b in range(n):
            event_rows = {}
            for row in events.bucket(b):
                event_rows.setdefault(row["key"], row)
            of_event: dict[str, list[str]] = defaultdict(list)
            for row in members.bucket(b):
                event = event_rows.get(row["key"], {})
                of_event[row["key"]].append(
                    key := row["occurrence_id"] or f"{row['key']}/{len(of_event[row['key']])}"
                )
                values = tuple(row[c] or event.get(c, "") or "" for c in columns)
                organisms.add(key, row["seq"], row["line"], values)
            for row in raw_media.bucket(b):
                values = tuple(row[c] for c in _MEDIA_FIELDS)
                event = row["key"]
                if event in of_event and len(of_event[event]) == 1:
                    media.add(of_event[event][0], row["seq"], row["line"], values)
                elif event in of_event:
                    self._early.append(
                        self._reject(
                            f"{event}:{row['seq']}",
                            row["url"],
                            f"media row names event {event}, which has {len(of_event[event])} "
                            "occurrences: which one it shows is not said",
                        )
                    )
                else:  # not an event id: it may name an occurrence by its occurrenceID
                    media.add(event, row["seq"], row["line"], values)

    # pass 2: the join, bucket by bucket -----------------------------------------------

    def chunks(self) -> Iterator[tuple[list[dict], list[dict]]]:
        """``(records, rejections)`` in chunks of at most ``_CHUNK`` records."""
        if self._spilled is None:
            self.spill()
        organisms, media = self._spilled
        records: list[dict] = []
        rejected: list[dict] = list(self._early)
        for b in range(len(organisms.paths)):
            for record, reject in self._join(organisms.bucket(b), media.bucket(b)):
                (records if record else rejected).append(record or reject)
                if len(records) >= _CHUNK or len(rejected) >= _CHUNK:
                    yield self._tally(records, rejected)
                    records, rejected = [], []
        if records or rejected:
            yield self._tally(records, rejected)

    def _tally(self, records: list[dict], rejected: list[dict]):
        self.counts.records += len(records)
        self.counts.rejected += len(rejected)
        return records, rejected

    def _join(self, organisms: list[dict], media: list[dict]):
        first: dict[str, dict] = {}
        repeats: dict[str, int] = defaultdict(int)
        for row in organisms:
            key = row["key"]
            if not key:
                yield (
                    None,
                    self._reject(
                        f"line{row['line']}", "", f"core row at line {row['line']} has an empty id"
                    ),
                )
            elif key in first:
                repeats[key] += 1
                yield (
                    None,
                    self._reject(
                        f"{key}#repeat{repeats[key]}", "", f"record id {key} repeated in the source"
                    ),
                )
            else:
                first[key] = row
        shown: dict[str, int] = defaultdict(int)
        for row in media:
            key, url = row["key"], row["url"]
            n, shown[key] = shown[key], shown[key] + 1
            record_id = f"{key}:{n}"
            organism = first.get(key)
            reason = _media_problem(row)
            if organism is None:
                reason = f"media row for core id {key} has no core row"
            if reason:
                yield None, self._reject(record_id, url, reason)
                continue
            record = {c: organism[c] or "" for c in ORGANISM_TERMS.values()}
            for column in ("license", "publisher"):  # the media row's describe the image
                if row[column]:
                    record[column] = row[column]
            url = url if "://" in url else str(self._media_path(url))
            record.update(
                record_id=f"{self.label}:{record_id}", source=self.label, url=url, bbox=""
            )
            yield {c: record.get(c, "") for c in RECORD_COLUMNS}, None
        for key in first.keys() - shown.keys():
            yield None, self._reject(key, "", "occurrence has no image")

    def _media_path(self, identifier: str) -> Path:
        path = Path(identifier).expanduser()
        return path if path.is_absolute() else (self.archive.media_base() / path).resolve()

    def _reject(self, record_id: str, url: str, reason: str) -> dict[str, str]:
        return rejection(f"{self.label}:{record_id}", self.label, url, "ingest", reason)


def _media_problem(row: dict) -> str:
    """Why a media row cannot be an image record ("" when it can)."""
    kind = local_name(row["type"] or "").lower()
    mime = (row["format"] or "").lower()
    if kind not in STILL_TYPES:
        return f"not a still image (type {row['type']})"
    if mime.startswith(("audio/", "video/")):
        return f"not a still image (format {row['format']})"
    if not row["url"]:
        return "no image URL (identifier or accessURI empty)"
    return ""


def _split_media(value: str) -> list[str]:
    """associatedMedia: URLs separated by ``|`` (the Darwin Core recommendation) or ``;``."""
    parts = value.replace(";", "|").split("|")
    return [p.strip() for p in parts if "://" in p]
