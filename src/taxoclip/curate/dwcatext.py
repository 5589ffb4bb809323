"""The Darwin Core text format: ``meta.xml`` and the rows of the files it describes.

An archive is a folder or a ``.zip`` (its files at the top or in one sub-folder) holding
``meta.xml`` and the data files it names. ``meta.xml`` gives, per file: its ``rowType``,
``encoding``, ``fieldsTerminatedBy``, ``fieldsEnclosedBy``, ``linesTerminatedBy``,
``ignoreHeaderLines``, the ``<id>``/``<coreid>`` column and each field's column index, term
URI and ``default`` (attribute defaults as the text guide's schema, tdwg_dwc_text.xsd,
gives them). Terms are matched by their local name (``…/terms/scientificName`` →
``scientificName``). An archive without ``meta.xml`` is read as GBIF's simple layout:
``occurrence.txt`` (+ ``multimedia.txt``), tab-separated, a header of term names, the id
in ``gbifID`` (else ``id``, else ``occurrenceID``).

Rows are streamed: a zip's members are read in place (never unpacked unless a media path
in it is relative), one row at a time. Messages name the user's folder or zip, then the
member and line.
"""

from __future__ import annotations

import csv
import io
import sys
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from taxoclip.errors import InputError

OCCURRENCE = "Occurrence"


# --------------------------------------------------------------------------- meta.xml


@dataclass(frozen=True)
class Table:
    """One ``<core>`` or ``<extension>`` of meta.xml: a data file and how to read it."""

    row_type: str
    locations: tuple[str, ...]
    encoding: str = "UTF-8"
    delimiter: str = ","
    quote: str = '"'
    header_lines: int = 0
    id_index: int | None = None
    # term (local name) -> (column index or None, default value)
    fields: dict[str, tuple[int | None, str]] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The row type's local name: Occurrence, Event, Taxon, Multimedia …"""
        return local_name(self.row_type)

    def value(self, row: list[str], term: str) -> str:
        index, default = self.fields.get(term, (None, ""))
        value = row[index].strip() if index is not None and index < len(row) else ""
        return value or default  # the text guide: the default where a value is NULL

    def key(self, row: list[str]) -> str:
        i = self.id_index
        return row[i].strip() if i is not None and i < len(row) else ""


def local_name(uri: str) -> str:
    return uri.rstrip("/").replace("#", "/").rsplit("/", 1)[-1]


def _unescape(text: str) -> str:
    # meta.xml writes tab and line ends as the two characters \t, \n, \r
    return text.replace("\\t", "\t").replace("\\n", "\n").replace("\\r", "\r")


def parse_meta(text: bytes, shown: str) -> tuple[Table, list[Table]]:
    """The core and the extensions ``meta.xml`` describes (attribute defaults as in the
    text guide's schema: ``,`` ``"`` ``\\n``, no header line, UTF-8)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise InputError(f"source {shown}: meta.xml is not well-formed XML ({exc})") from exc
    tables: dict[str, list[Table]] = {"core": [], "extension": []}
    for element in root:
        tag = local_name(element.tag.split("}")[-1])
        if tag in tables:
            tables[tag].append(_table(element, tag, shown))
    if len(tables["core"]) != 1:
        raise InputError(f"source {shown}: meta.xml has {len(tables['core'])} <core> elements")
    return tables["core"][0], tables["extension"]


def _table(element: ET.Element, tag: str, shown: str) -> Table:
    def child(name: str) -> list[ET.Element]:
        return [c for c in element.iter() if c.tag.split("}")[-1] == name]

    a = element.attrib
    locations = tuple((c.text or "").strip() for c in child("location") if (c.text or "").strip())
    if not locations:
        raise InputError(f"source {shown}: meta.xml: a <{tag}> names no <location>")
    id_tag = child("id" if tag == "core" else "coreid")
    id_index = id_tag[0].get("index") if id_tag else None
    fields: dict[str, tuple[int | None, str]] = {}
    for f in child("field"):
        term = local_name(f.get("term", ""))
        index = f.get("index")
        # the first field of a term wins (dc:type and dcterms:type mean the same here)
        fields.setdefault(
            term, (int(index) if index not in (None, "") else None, f.get("default", ""))
        )
    try:
        header = int(a.get("ignoreHeaderLines", "0") or 0)
    except ValueError:
        raise InputError(f"source {shown}: meta.xml: ignoreHeaderLines is not a number") from None
    return Table(
        row_type=a.get("rowType", "http://rs.tdwg.org/dwc/xsd/simpledarwincore/SimpleDarwinRecord"),
        locations=locations,
        encoding=a.get("encoding", "UTF-8") or "UTF-8",
        delimiter=_unescape(a.get("fieldsTerminatedBy", ",")),
        quote=_unescape(a.get("fieldsEnclosedBy", '"')),
        header_lines=header,
        id_index=int(id_index) if id_index not in (None, "") else None,
        fields=fields,
    )


# --------------------------------------------------------------------------- the archive


class Archive:
    """A folder or zip and its tables; reads rows as streams, names the user's path."""

    def __init__(self, path: Path, extract_dir: Path | None = None) -> None:
        self.path = path
        self.extract_dir = extract_dir
        self.zip = zipfile.ZipFile(path) if path.is_file() else None
        self.prefix = ""  # the folder inside the zip (or below the folder) holding the files
        names = self._names()
        meta = _shallowest(names, "meta.xml")
        if meta is not None:
            self.prefix = meta[: -len("meta.xml")]
            self.core, self.extensions = parse_meta(self._read(meta), str(path))
            self.has_meta = True
        else:
            occurrence = _shallowest(names, "occurrence.txt")
            if occurrence is None:
                what = "the zip holds" if self.zip else "the folder holds"
                raise InputError(
                    f"source {path}: {what} neither meta.xml nor occurrence.txt "
                    "(not a Darwin Core Archive)"
                )
            self.prefix = occurrence[: -len("occurrence.txt")]
            self.core, self.extensions = self._simple_layout(names)
            self.has_meta = False
        self._media_base: Path | None = None

    def _names(self) -> list[str]:
        if self.zip is not None:
            return [
                n
                for n in self.zip.namelist()
                if not n.endswith("/") and not n.startswith("__MACOSX/")
            ]
        return [p.relative_to(self.path).as_posix() for p in self.path.glob("*/meta.xml")] + [
            p.name for p in self.path.iterdir() if p.is_file()
        ]

    def shown(self, location: str = "") -> str:
        """How a message names a file of the archive: the user's path, then the member."""
        return f"{self.path}" + (f" ({self.prefix}{location})" if location else "")

    def _read(self, name: str) -> bytes:
        if self.zip is not None:
            return self.zip.read(name)
        return (self.path / name).read_bytes()

    def _open(self, location: str) -> io.BufferedIOBase:
        name = self.prefix + location
        try:
            if self.zip is not None:
                return self.zip.open(name)
            return (self.path / name).open("rb")
        except (KeyError, FileNotFoundError):
            raise InputError(
                f"source {self.shown()}: meta.xml names {location}, which is not in the archive"
            ) from None

    def rows(self, table: Table) -> Iterator[tuple[int, list[str]]]:
        """``(line, fields)`` of every data row of the table's files, header lines skipped."""
        csv.field_size_limit(sys.maxsize)  # GBIF remarks can be long
        encoding = (
            "utf-8-sig"
            if table.encoding.lower().replace("_", "-") in ("utf-8", "utf8")
            else table.encoding
        )
        try:
            "".encode(encoding)
        except LookupError:
            raise InputError(
                f"source {self.shown(table.locations[0])}: unknown encoding {table.encoding!r}"
            ) from None
        options = {"delimiter": table.delimiter or ",", "strict": False}
        if table.quote:
            options["quotechar"] = table.quote
        else:
            options["quoting"] = csv.QUOTE_NONE
        for location in table.locations:
            line = 0
            with self._open(location) as raw:
                # newline="": the csv module splits \n, \r\n and \r itself (linesTerminatedBy)
                text = io.TextIOWrapper(raw, encoding=encoding, newline="")
                reader = csv.reader(text, **options)
                try:
                    for line, row in enumerate(reader, start=1):
                        if line <= table.header_lines or not any(row):
                            continue
                        yield line, row
                except UnicodeDecodeError as exc:
                    raise InputError(
                        f"source {self.shown(location)}: after line {line}: not {table.encoding} "
                        f"text as meta.xml declares ({exc.reason})"
                    ) from None
                except csv.Error as exc:
                    raise InputError(f"source {self.shown(location)}: line {line}: {exc}") from None

    def media_base(self) -> Path:
        """Where a relative media path points: the archive folder (a zip is unpacked once,
        into ``extract_dir``, only when such a path is met)."""
        if self._media_base is None:
            if self.zip is None:
                self._media_base = (self.path / self.prefix).resolve()
            else:
                if self.extract_dir is None:
                    raise InputError(
                        f"source {self.path}: relative media paths in a zip need a folder to "
                        "unpack into"
                    )
                self.zip.extractall(self.extract_dir)
                self._media_base = (self.extract_dir / self.prefix).resolve()
        return self._media_base

    def _simple_layout(self, names: list[str]) -> tuple[Table, list[Table]]:
        """No meta.xml: GBIF's simple layout, tab-separated files with term-name headers."""
        core = self._headed(OCCURRENCE, "occurrence.txt", ("gbifID", "id", "occurrenceID"))
        extensions = []
        if self.prefix + "multimedia.txt" in names:
            key = next(t for t, (i, _) in core.fields.items() if i == core.id_index)
            media = self._headed(
                "http://rs.gbif.org/terms/1.0/Multimedia",
                "multimedia.txt",
                (key, "coreid", "id", "gbifID"),
            )
            extensions.append(media)
        return core, extensions

    def _headed(self, row_type: str, location: str, id_columns: tuple[str, ...]) -> Table:
        with self._open(location) as raw:
            header = io.TextIOWrapper(raw, encoding="utf-8-sig").readline().rstrip("\r\n")
        columns = [c.strip() for c in header.split("\t")]
        id_column = next((c for c in id_columns if c in columns), None)
        if id_column is None:
            raise InputError(
                f"source {self.shown(location)}: no meta.xml, and the header has no id column "
                f"({' or '.join(id_columns)})"
            )
        return Table(
            row_type=row_type if "/" in row_type else f"http://rs.tdwg.org/dwc/terms/{row_type}",
            locations=(location,),
            delimiter="\t",
            quote="",
            header_lines=1,
            id_index=columns.index(id_column),
            fields={local_name(c): (i, "") for i, c in reversed(list(enumerate(columns)))},
        )


def _shallowest(names: list[str], filename: str) -> str | None:
    """The member called ``filename`` nearest the top (at most one folder down)."""
    found = [n for n in names if n.rsplit("/", 1)[-1] == filename and n.count("/") <= 1]
    return min(found, key=lambda n: n.count("/"), default=None)


def is_archive_folder(path: Path) -> bool:
    """A folder with meta.xml (at the top or one folder down) or occurrence.txt."""
    return (
        (path / "meta.xml").is_file()
        or (path / "occurrence.txt").is_file()
        or any(path.glob("*/meta.xml"))
    )
