"""Darwin Core Archives read as meta.xml says, held to python-dwca-reader on real archives.

Every archive of ``../shared/real-samples/dwca`` (real files from GBIF, IPTs and portals;
origins in its ORIGINS.md) and every fixture here is read by our reader and by
python-dwca-reader (installed apart, run in its own process: ``dwca_reference.py``), and
the ledger we write is compared with one derived in this file from the reference's rows:
one record per still-image media row with a URL and an organism, one rejection per other
media row and per organism without media. The fixtures are written from the Darwin Core
text guide (not from our reader) for what the real samples lack: Latin-1 text, CRLF
line ends, quoted CSV without a header, Sound and MovingImage rows, Audubon Core media,
an Event core whose media name an event, associatedMedia, a Taxon core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest

from taxoclip.curate import dwca
from taxoclip.curate.ingest import detect_kind, ingest
from taxoclip.errors import InputError

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "real-samples" / "dwca"
REAL_ARCHIVES = sorted(p.name for p in REAL.iterdir()) if REAL.is_dir() else []
COMPAT = Path(sys.prefix) / "compat" / "python-dwca-reader-0.17.1"
DWC, DC, GBIF, AC = (
    "http://rs.tdwg.org/dwc/terms/",
    "http://purl.org/dc/terms/",
    "http://rs.gbif.org/terms/1.0/",
    "http://rs.tdwg.org/ac/terms/",
)
MEDIA = {GBIF + "Multimedia", GBIF + "Image", AC + "Multimedia"}
STILL = {"", "stillimage", "image", "photograph", "photo"}


# --------------------------------------------------------------------------- the reference


def reference(path: Path) -> dict:
    """The archive as python-dwca-reader reads it (core and extension rows)."""
    if not (COMPAT / "dwca").is_dir():
        pytest.skip(
            f"{COMPAT} missing: run `make venv` (pip install --target … python-dwca-reader)"
        )
    env = {**os.environ, "PYTHONPATH": str(COMPAT)}
    script = Path(__file__).with_name("dwca_reference.py")
    done = subprocess.run(
        [sys.executable, str(script), str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def expected_ledger(ref: dict, label: str) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """Kept ``{record_id: (url, scientificName)}`` and rejected ids, from the reference rows
    by the rules in taxoclip.curate.dwca's docstring."""
    organisms: dict[str, dict] = {}
    repeats: list[str] = []
    event_members: dict[str, list[str]] = defaultdict(list)

    def add(key: str, data: dict) -> None:
        if key in organisms:
            repeats.append(key)
        else:
            organisms[key] = data

    core = ref["core"]
    if core["rowtype"].endswith("/Event"):
        events = {r["id"].strip(): r["data"] for r in core["rows"]}
        for ext in ref["extensions"]:
            if ext["rowtype"] == DWC + "Occurrence":
                for row in ext["rows"]:
                    event = row["core_id"].strip()
                    key = row["data"].get("occurrenceID", "").strip() or (
                        f"{event}/{len(event_members[event])}"
                    )
                    event_members[event].append(key)
                    data = dict(events.get(event, {}))
                    data.update({k: v for k, v in row["data"].items() if v.strip()})
                    add(key, data)
    else:
        for row in core["rows"]:
            add(row["id"].strip(), row["data"])
    media_tables = [e for e in ref["extensions"] if e["rowtype"] in MEDIA]
    media: list[tuple[str, str, str, str]] = []  # (key, url, type, format)
    for ext in media_tables:
        audubon = ext["rowtype"].startswith(AC)
        for row in ext["rows"]:
            data = {k: (v or "").strip() for k, v in row["data"].items()}
            url = data.get("accessURI", "") if audubon else data.get("identifier", "")
            if audubon and not url and "://" in data.get("identifier", ""):
                url = data["identifier"]
            media.append(
                (row["core_id"].strip(), url, data.get("type", ""), data.get("format", ""))
            )
    if not media_tables:  # associatedMedia stands in for a media extension
        for key, data in organisms.items():
            for url in (data.get("associatedMedia") or "").replace(";", "|").split("|"):
                if "://" in url:
                    media.append((key, url.strip(), "", ""))
    kept: dict[str, tuple[str, str]] = {}
    rejected = {f"{label}:{k}#repeat{i + 1}" for i, k in enumerate(repeats)}
    shown: dict[str, int] = defaultdict(int)
    for key, url, kind, mime in media:
        members = event_members.get(key)
        if members is not None and len(members) != 1:
            rejected.add(f"{label}:{key}:")  # ambiguous: compared by prefix below
            continue
        key = members[0] if members else key
        record_id = f"{label}:{key}:{shown[key]}"
        shown[key] += 1
        still = kind.rsplit("/", 1)[-1].lower() in STILL and not mime.lower().startswith(
            ("audio/", "video/")
        )
        if key in organisms and still and url:
            kept[record_id] = (url, organisms[key].get("scientificName", "").strip())
        else:
            rejected.add(record_id)
    rejected |= {f"{label}:{k}" for k in organisms if k not in shown}
    return kept, rejected


def check_against_reference(path: Path, tmp_path: Path) -> tuple[int, int]:
    """Our ledger equals the one derived from python-dwca-reader's rows."""
    label = path.stem if path.is_file() else path.name
    kept, rejected = expected_ledger(reference(path), label)
    ours = ingest([path], extract_dir=tmp_path / "work")
    rows = ours.records.to_pylist()
    assert {r["record_id"]: (r["url"], r["scientific_name"]) for r in rows} == kept
    ours_rejected = {r["record_id"] for r in ours.rejected}
    ambiguous = {r for r in rejected if r.endswith(":")}
    assert (
        ours_rejected - {r for r in ours_rejected if any(r.startswith(a) for a in ambiguous)}
        == rejected - ambiguous
    )
    assert all(r["stage"] == "ingest" and r["reason"] for r in ours.rejected)
    return len(rows), len(ours.rejected)


# --------------------------------------------------------------------------- real archives


@pytest.mark.parametrize("name", REAL_ARCHIVES or ["(none)"])
def test_real_archive_ledger_equals_the_reference_readers(name: str, tmp_path: Path) -> None:
    if not REAL_ARCHIVES:
        pytest.skip(f"{REAL} is not here (a clone without ../shared): no real archives to read")
    path = REAL / name
    assert detect_kind(path) == "dwca"
    kept, rejected = check_against_reference(path, tmp_path)
    ref = reference(path)
    organisms = len(ref["core"]["rows"])
    if ref["core"]["rowtype"].endswith("/Event"):
        organisms = sum(
            len(e["rows"]) for e in ref["extensions"] if e["rowtype"] == DWC + "Occurrence"
        )
    media = sum(len(e["rows"]) for e in ref["extensions"] if e["rowtype"] in MEDIA)
    # every media row is a record or a rejection; so is every organism without media
    assert kept + rejected >= max(media, organisms)
    assert kept <= media or media == 0


def test_real_archives_read_as_origins_describe(tmp_path: Path) -> None:
    """The counts ORIGINS.md gives for what a reader honouring meta.xml finds."""
    if not REAL_ARCHIVES:
        pytest.skip(f"{REAL} is not here (a clone without ../shared)")
    expect = {  # name: (records, rejected)
        "rgbif-0084005-210914110416597.zip": (79, 0),  # 68 occurrences, 79 images
        "rgbif-0000066-140928181241064.zip": (210, 261),  # 256 without media, 5 empty URLs
        "rgbif-0027702-210914110416597.zip": (0, 0),  # zero records
        "hawk-gbif-download": (1362, 236),  # 1,310 occurrences, 1,362 media rows
        "dwcaio-csv-json-escaped-quotes": (4, 0),  # one specimen, four images
        "dwca-event-example": (1, 2),  # 3 occurrences of one event; tuco1's photo
        "pdr-gbif-results.zip": (0, 158),  # no header line, no media
        "pdr-dwca-simple-subdir.zip": (0, 2),  # in a sub-folder, no media
    }
    for name, (records, rejected) in expect.items():
        result = ingest([REAL / name], extract_dir=tmp_path / name)
        assert (result.records.num_rows, len(result.rejected)) == (records, rejected), name
    hawk = ingest([REAL / "hawk-gbif-download"], extract_dir=tmp_path / "h").records
    # the multimedia row whose gbifID carries a trailing space still finds its occurrence
    assert not any(" " in i for i in hawk.column("record_id").to_pylist())


# --------------------------------------------------------------------------- fixtures


def meta(core: str, *extensions: str) -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<archive xmlns="http://rs.tdwg.org/dwc/text/">'
        f"\n{core}\n{''.join(extensions)}</archive>\n"
    )


def table(
    tag: str, row_type: str, location: str, fields: list[str], attrs: str = "", id_index: int = 0
) -> str:
    """A <core> or <extension>: fields as 'index:termURI' or ':termURI=default'."""
    lines = [
        f'<{tag} rowType="{row_type}" {attrs}>',
        f"<files><location>{location}</location></files>",
        f'<{"id" if tag == "core" else "coreid"} index="{id_index}"/>',
    ]
    for spec in fields:
        index, term = spec.split(":", 1)
        term, _, default = term.partition("=")
        at = f' index="{index}"' if index else ""
        lines.append(
            f'<field{at} term="{term}"' + (f' default="{default}"' if default else "") + "/>"
        )
    return "\n".join(lines) + f"\n</{tag}>\n"


# encoding is optional (UTF-8) in the text guide's schema, but python-dwca-reader 0.17.1
# fails without it, so the fixtures it reads give it (test_attribute_defaults does not)
TAB = 'encoding="UTF-8" fieldsTerminatedBy="\\t" fieldsEnclosedBy="" ignoreHeaderLines="1"'


def latin1_crlf(root: Path) -> Path:
    """ISO-8859-1 text, CRLF line ends, a default licence, Sound and MovingImage rows."""
    root.mkdir(parents=True)
    attrs = TAB.replace("UTF-8", "ISO-8859-1") + ' linesTerminatedBy="\\r\\n"'
    (root / "meta.xml").write_text(
        meta(
            table(
                "core",
                DWC + "Occurrence",
                "occ.txt",
                [
                    "0:" + DWC + "occurrenceID",
                    "1:" + DWC + "scientificName",
                    "2:" + DWC + "vernacularName",
                    ":" + DC + "license=CC-BY-4.0",
                    ":" + DWC + "basisOfRecord=HumanObservation",
                ],
                attrs,
            ),
            table(
                "extension",
                GBIF + "Multimedia",
                "media.txt",
                ["1:" + DC + "type", "2:" + DC + "format", "3:" + DC + "identifier"],
                attrs,
            ),
        ),
        encoding="utf-8",
    )
    occ = [
        ["id", "scientificName", "vernacularName"],
        ["o1", "Lacerta agilis Linnaeus, 1758", "Lézard des souches"],
        ["o2", "Turdus merula", "Merle noir"],
        ["o3", "Bufo bufo", "Crapaud commun"],
    ]
    media = [
        ["coreid", "type", "format", "identifier"],
        ["o1", "StillImage", "image/jpeg", "https://example.org/l%C3%A9zard.jpg"],
        ["o2", "Sound", "audio/mpeg", "https://example.org/merle.mp3"],
        ["o2", "MovingImage", "video/mp4", "https://example.org/merle.mp4"],
        ["o2", "http://purl.org/dc/dcmitype/StillImage", "image/png", "https://example.org/m.png"],
        ["o3", "StillImage", "", ""],
    ]
    for name, rows in (("occ.txt", occ), ("media.txt", media)):
        (root / name).write_bytes("".join("\t".join(r) + "\r\n" for r in rows).encode("latin-1"))
    return root


def event_audubon(root: Path) -> Path:
    """An Event core with Occurrence and Audubon Core extensions: media name an event with
    one occurrence, an event with two, an occurrenceID; accessURI or a URL identifier."""
    root.mkdir(parents=True)
    (root / "meta.xml").write_text(
        meta(
            table(
                "core",
                DWC + "Event",
                "event.txt",
                ["1:" + DWC + "eventRemarks", "2:" + DWC + "eventDate"],
                TAB,
            ),
            table(
                "extension",
                DWC + "Occurrence",
                "occurrence.txt",
                [
                    "1:" + DWC + "occurrenceID",
                    "2:" + DWC + "scientificName",
                    "3:" + DWC + "basisOfRecord",
                ],
                TAB,
            ),
            table(
                "extension",
                AC + "Multimedia",
                "multimedia.txt",
                [
                    "1:" + DC + "identifier",
                    "2:http://purl.org/dc/elements/1.1/type",
                    "3:" + AC + "accessURI",
                    "4:http://purl.org/dc/elements/1.1/format",
                ],
                TAB,
            ),
        ),
        encoding="utf-8",
    )
    rows = {
        "event.txt": [
            ["id", "eventRemarks", "eventDate"],
            ["e1", "camera trap", "2024-05-01"],
            ["e2", "", "2024-05-02"],
        ],
        "occurrence.txt": [
            ["id", "occurrenceID", "scientificName", "basisOfRecord"],
            ["e1", "occ-1", "Vulpes vulpes", "MachineObservation"],
            ["e2", "occ-2", "Meles meles", "HumanObservation"],
            ["e2", "", "Sciurus vulgaris", "HumanObservation"],
        ],
        "multimedia.txt": [
            ["coreid", "identifier", "type", "accessURI", "format"],
            ["e1", "1f0c-uuid", "StillImage", "https://ex.org/fox.jpg", "image/jpeg"],
            ["e2", "2a1d-uuid", "StillImage", "https://ex.org/both.jpg", "jpeg"],
            ["occ-2", "https://ex.org/badger.jpg", "StillImage", "", "jpeg"],
            ["occ-2", "3b2e-uuid", "StillImage", "", "jpeg"],
            ["occ-2", "4c3f-uuid", "Sound", "https://ex.org/badger.wav", "audio/wav"],
        ],
    }
    for name, data in rows.items():
        (root / name).write_text("".join("\t".join(r) + "\n" for r in data), encoding="utf-8")
    return root


def quoted_zip(tmp_path: Path) -> Path:
    """Comma-separated, quoted fields holding commas, quotes and a line break, no header
    line, fields out of order, the files in a sub-folder of the zip; a Taxon core."""
    attrs = (
        'encoding="UTF-8" fieldsTerminatedBy="," fieldsEnclosedBy="&quot;" ignoreHeaderLines="0"'
    )
    core = table(
        "core",
        DWC + "Taxon",
        "taxa.csv",
        ["2:" + DWC + "scientificName", "1:" + DWC + "family", "0:" + DWC + "taxonID"],
        attrs,
    )
    media = table(
        "extension",
        GBIF + "Multimedia",
        "media.csv",
        ["1:" + DC + "identifier", "2:" + DC + "license"],
        attrs,
    )
    taxa = (
        't1,Felidae,"Felis catus Linnaeus, 1758"\n'
        't2,"Canidae","Canis ""lupus"" L."\n'
        't3,Ursidae,"Ursus\narctos"\n'
    )
    images = (
        't1,https://ex.org/cat.jpg,"CC-BY, 4.0"\nt2,https://ex.org/wolf.jpg,\n'
        "t9,https://ex.org/orphan.jpg,\n"
    )
    archive = tmp_path / "checklist.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("checklist/meta.xml", meta(core, media))
        z.writestr("checklist/taxa.csv", taxa)
        z.writestr("checklist/media.csv", images)
    return archive


def associated_media(root: Path) -> Path:
    """No media extension: the URLs of associatedMedia, separated by |."""
    root.mkdir(parents=True)
    (root / "meta.xml").write_text(
        meta(
            table(
                "core",
                DWC + "Occurrence",
                "occurrence.txt",
                [
                    "0:" + DWC + "occurrenceID",
                    "1:" + DWC + "scientificName",
                    "2:" + DWC + "associatedMedia",
                ],
                TAB,
            )
        ),
        encoding="utf-8",
    )
    (root / "occurrence.txt").write_text(
        "occurrenceID\tscientificName\tassociatedMedia\n"
        "a\tPica pica\thttps://ex.org/1.jpg | https://ex.org/2.jpg\n"
        "b\tCorvus corax\t\n",
        encoding="utf-8",
    )
    return root


FIXTURES = {
    "latin1_crlf": latin1_crlf,
    "event_audubon": event_audubon,
    "associated_media": associated_media,
}


@pytest.mark.parametrize("name", [*FIXTURES, "quoted_zip"])
def test_fixture_ledger_equals_the_reference_readers(name: str, tmp_path: Path) -> None:
    path = quoted_zip(tmp_path) if name == "quoted_zip" else FIXTURES[name](tmp_path / name)
    check_against_reference(path, tmp_path)


def test_latin1_crlf_values(tmp_path: Path) -> None:
    result = ingest([latin1_crlf(tmp_path / "a")], extract_dir=tmp_path / "w")
    kept = {r["record_id"]: r for r in result.records.to_pylist()}
    # the full dcmitype URI StillImage is a still image as much as the bare word
    assert set(kept) == {"a:o1:0", "a:o2:2"}
    record = kept["a:o1:0"]
    assert record["vernacular_name"] == "Lézard des souches"  # Latin-1 decoded, no \r left
    assert (record["license"], record["basis_of_record"]) == ("CC-BY-4.0", "HumanObservation")
    reasons = {r["record_id"]: r["reason"] for r in result.rejected}
    assert reasons == {
        "a:o2:0": "not a still image (type Sound)",
        "a:o2:1": "not a still image (type MovingImage)",
        "a:o3:0": "no image URL (identifier or accessURI empty)",
    }


def test_event_core_media_find_their_occurrence(tmp_path: Path) -> None:
    result = ingest([event_audubon(tmp_path / "ev")], extract_dir=tmp_path / "w")
    kept = {r["record_id"]: r for r in result.records.to_pylist()}
    assert set(kept) == {"ev:occ-1:0", "ev:occ-2:0"}
    fox = kept["ev:occ-1:0"]
    assert (fox["url"], fox["scientific_name"]) == ("https://ex.org/fox.jpg", "Vulpes vulpes")
    assert fox["event_remarks"] == "camera trap"  # the event's fields reach its occurrences
    assert kept["ev:occ-2:0"]["url"] == "https://ex.org/badger.jpg"  # a URL identifier
    reasons = {r["record_id"]: r["reason"] for r in result.rejected}
    assert reasons["ev:occ-2:1"] == "no image URL (identifier or accessURI empty)"  # a UUID
    assert reasons["ev:occ-2:2"].startswith("not a still image")
    assert reasons["ev:e2/1"] == "occurrence has no image"  # no occurrenceID: event/k
    ambiguous = [r for k, r in reasons.items() if k.startswith("ev:e2:")]
    assert ambiguous == [
        "media row names event e2, which has 2 occurrences: which one it shows is not said"
    ]


def test_zip_subfolder_quoted_taxon_core(tmp_path: Path) -> None:
    archive = quoted_zip(tmp_path)
    result = ingest([archive], extract_dir=tmp_path / "w")
    kept = {r["record_id"]: r for r in result.records.to_pylist()}
    assert kept["checklist:t1:0"]["scientific_name"] == "Felis catus Linnaeus, 1758"
    assert kept["checklist:t1:0"]["license"] == "CC-BY, 4.0"
    assert kept["checklist:t2:0"]["scientific_name"] == 'Canis "lupus" L.'
    assert kept["checklist:t2:0"]["family"] == "Canidae"
    reasons = {r["record_id"]: r["reason"] for r in result.rejected}
    assert reasons == {
        "checklist:t9:0": "media row for core id t9 has no core row",
        "checklist:t3": "occurrence has no image",
    }
    assert not (tmp_path / "w").exists() or not any(
        (tmp_path / "w").rglob("taxa.csv")
    )  # read in place


def test_join_over_many_buckets_equals_one(tmp_path: Path, monkeypatch) -> None:
    """The hash join spilled over many buckets and row groups gives the same ledger."""
    root = tmp_path / "big"
    root.mkdir()
    (root / "meta.xml").write_text(
        meta(
            table(
                "core",
                DWC + "Occurrence",
                "occurrence.txt",
                ["0:" + GBIF + "gbifID", "1:" + DWC + "scientificName"],
                TAB,
            ),
            table(
                "extension", GBIF + "Multimedia", "multimedia.txt", ["1:" + DC + "identifier"], TAB
            ),
        ),
        encoding="utf-8",
    )
    occ = ["gbifID\tscientificName"] + [f"{i}\tSpecies {i % 97}" for i in range(3000)]
    # media in another order than the core, some occurrences with 2 images, some none
    media = ["gbifID\tidentifier"] + [
        f"{i}\thttps://ex.org/{i}/{k}.jpg" for i in range(2999, -1, -3) for k in range(1 + i % 2)
    ]
    (root / "occurrence.txt").write_text("\n".join(occ) + "\n", encoding="utf-8")
    (root / "multimedia.txt").write_text("\n".join(media) + "\n", encoding="utf-8")

    def ledger(work: str):
        result = ingest([root], extract_dir=tmp_path / work)
        records = sorted((r["record_id"], r["url"]) for r in result.records.to_pylist())
        return records, sorted((r["record_id"], r["reason"]) for r in result.rejected)

    one = ledger("one")
    monkeypatch.setattr(dwca, "_BUCKET_BYTES", 2048)  # ~30 buckets
    monkeypatch.setattr(dwca, "_SPILL_ROWS", 7)  # many row groups per bucket
    many = ledger("many")
    assert one == many
    assert len(one[0]) == len(media) - 1 and len(one[1]) == 2000
    assert ("big:2999:1", "https://ex.org/2999/1.jpg") in one[0]


def test_attribute_defaults_are_the_schemas(tmp_path: Path) -> None:
    """No attributes but rowType: comma-separated, '"'-quoted, no header line, UTF-8."""
    root = tmp_path / "bare"
    root.mkdir()
    (root / "meta.xml").write_text(
        meta(
            table("core", DWC + "Occurrence", "o.csv", ["1:" + DWC + "scientificName"]),
            table("extension", GBIF + "Multimedia", "m.csv", ["1:" + DC + "identifier"]),
        ),
        encoding="utf-8",
    )
    (root / "o.csv").write_text('1,"Æthia cristatella, Pallas"\n', encoding="utf-8")
    (root / "m.csv").write_text("1,https://ex.org/a.jpg\n", encoding="utf-8")
    (record,) = ingest([root]).records.to_pylist()
    assert (record["record_id"], record["scientific_name"]) == (
        "bare:1:0",
        "Æthia cristatella, Pallas",
    )


# --------------------------------------------------------------------------- errors


def test_errors_name_the_users_file_and_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "declared-utf8.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr(
            "meta.xml",
            meta(
                table(
                    "core",
                    DWC + "Occurrence",
                    "occurrence.txt",
                    ["1:" + DWC + "scientificName"],
                    TAB,
                )
            ),
        )
        z.writestr("occurrence.txt", "id\tscientificName\n1\tAus\n2\tB\xe9us\n".encode("latin-1"))
    with pytest.raises(InputError) as caught:
        ingest([bad], extract_dir=tmp_path / "w")
    message = str(caught.value)
    assert str(bad) in message and "occurrence.txt" in message and "not UTF-8" in message
    assert str(tmp_path / "w") not in message  # never a temporary copy

    missing = tmp_path / "missing-file"
    missing.mkdir()
    (missing / "meta.xml").write_text(
        meta(table("core", DWC + "Occurrence", "occ.txt", ["1:" + DWC + "scientificName"], TAB))
    )
    with pytest.raises(InputError, match="meta.xml names occ.txt, which is not in the archive"):
        ingest([missing])

    (missing / "meta.xml").write_text("<archive><core>")
    with pytest.raises(InputError, match="meta.xml is not well-formed XML"):
        ingest([missing])

    nothing = tmp_path / "nothing.zip"
    with zipfile.ZipFile(nothing, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(InputError, match="neither meta.xml nor occurrence.txt"):
        ingest([nothing], extract_dir=tmp_path / "w2")

    checklist = tmp_path / "resources"
    checklist.mkdir()
    (checklist / "meta.xml").write_text(
        meta(
            table(
                "core",
                "http://rs.gbif.org/terms/1.0/Reference",
                "refs.txt",
                ["1:" + DC + "title"],
                TAB,
            )
        )
    )
    (checklist / "refs.txt").write_text("id\ttitle\n")
    with pytest.raises(InputError, match="not an Occurrence, Event or Taxon core"):
        ingest([checklist])
