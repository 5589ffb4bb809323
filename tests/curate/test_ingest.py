"""Ingest: every source kind becomes records; nothing that cannot be a record is dropped."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from taxoclip.curate.ingest import detect_kind, ingest, parse_column_map
from taxoclip.curate.records import RECORD_COLUMNS
from taxoclip.errors import InputError, UsageError

OCCURRENCE = [
    [
        "gbifID",
        "basisOfRecord",
        "scientificName",
        "kingdom",
        "phylum",
        "class",
        "order",
        "family",
        "genus",
        "vernacularName",
        "eventRemarks",
        "publisher",
        "license",
    ],
    [
        "1",
        "HUMAN_OBSERVATION",
        "Aus bus L.",
        "Animalia",
        "Chordata",
        "Aves",
        "Passeriformes",
        "Fringillidae",
        "Aus",
        "bus finch",
        "",
        "iNat",
        "CC0",
    ],
    ["2", "PRESERVED_SPECIMEN", "Aus cus", "", "", "", "", "", "", "", "", "Museum", "CC-BY"],
    ["3", "MACHINE_OBSERVATION", "Dus eus", "", "", "", "", "", "", "", "camera trap", "", ""],
]
MULTIMEDIA = [
    ["gbifID", "type", "format", "identifier", "license", "publisher"],
    ["1", "StillImage", "image/jpeg", "media/a.jpg", "CC-BY-NC", ""],
    ["1", "StillImage", "image/jpeg", "media/b.jpg", "", ""],
    ["2", "Sound", "audio/wav", "media/c.wav", "", ""],
    ["9", "StillImage", "image/jpeg", "https://example.org/x.jpg", "", ""],
]


def write_tsv(path: Path, rows: list[list[str]]) -> None:
    path.write_text("\n".join("\t".join(r) for r in rows) + "\n", encoding="utf-8")


@pytest.fixture
def dwca(tmp_path: Path) -> Path:
    root = tmp_path / "dwca"
    (root / "media").mkdir(parents=True)
    write_tsv(root / "occurrence.txt", OCCURRENCE)
    write_tsv(root / "multimedia.txt", MULTIMEDIA)
    return root


def test_dwca_one_record_per_still_image_and_every_other_row_rejected(dwca: Path) -> None:
    result = ingest([dwca])
    rows = result.records.to_pylist()
    assert [r["record_id"] for r in rows] == ["dwca:1:0", "dwca:1:1"]
    first = rows[0]
    assert first["scientific_name"] == "Aus bus L."
    assert first["class_"] == "Aves" and first["genus"] == "Aus"
    assert first["url"] == str((dwca / "media" / "a.jpg").resolve())
    assert first["license"] == "CC-BY-NC"  # the media row's licence wins
    assert rows[1]["license"] == "CC0"  # else the occurrence's
    reasons = {r["record_id"]: r["reason"] for r in result.rejected}
    assert reasons == {
        "dwca:2:0": "not a still image (type Sound)",
        "dwca:9:0": "media row for core id 9 has no core row",
        "dwca:3": "occurrence has no image",
    }
    assert all(r["stage"] == "ingest" for r in result.rejected)
    assert result.records.schema.names == list(RECORD_COLUMNS)


def test_zipped_archive_is_unpacked_and_read_the_same(dwca: Path, tmp_path: Path) -> None:
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in ("occurrence.txt", "multimedia.txt"):
            zipped.write(dwca / name, name)
    result = ingest([archive], extract_dir=tmp_path / "x")
    assert detect_kind(archive) == "dwca"
    assert [r["record_id"] for r in result.records.to_pylist()] == [
        "download:1:0",
        "download:1:1",
    ]
    assert len(result.rejected) == 3


def test_same_source_name_twice_gets_distinct_labels(dwca: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "dwca"
    other.parent.mkdir()
    other.mkdir()
    write_tsv(other / "occurrence.txt", OCCURRENCE)
    write_tsv(other / "multimedia.txt", MULTIMEDIA)
    ids = ingest([dwca, other]).records.column("record_id").to_pylist()
    assert len(ids) == len(set(ids)) == 4
    assert {i.split(":")[0] for i in ids} == {"dwca", "dwca-2"}


def test_fathomnet_manifest_makes_one_record_per_box(tmp_path: Path) -> None:
    manifest = tmp_path / "fathomnet.csv"
    manifest.write_text(
        "uuid,url,concept,x,y,width,height\n"
        "u1,http://h/1.png,Aurelia aurita,10,20,300,240\n"
        "u1,http://h/1.png,Pycnopodia helianthoides,0,0,250.0,260\n"
        "u2,,Aurelia aurita,1,1,2,2\n"
        "u3,http://h/3.png,Aurelia aurita,a,1,2,2\n"
    )
    result = ingest([manifest])  # the preset is recognised from the header
    rows = result.records.to_pylist()
    assert [(r["record_id"], r["bbox"], r["scientific_name"]) for r in rows] == [
        ("fathomnet:u1:box0", "10,20,300,240", "Aurelia aurita"),
        ("fathomnet:u1:box1", "0,0,250,260", "Pycnopodia helianthoides"),
    ]
    reasons = sorted(r["reason"] for r in result.rejected)
    assert reasons[0] == "bounding box is not numeric: ['a', '1', '2', '2']"
    assert reasons[1] == "empty image URL"


def test_column_map_and_parquet_manifest(tmp_path: Path) -> None:
    image = tmp_path / "imgs" / "x.jpg"
    image.parent.mkdir()
    Image.new("RGB", (4, 4)).save(image)
    table = pa.table({"key": ["k1"], "path": ["imgs/x.jpg"], "taxon": ["Aus bus"], "fam": ["Idae"]})
    pq.write_table(table, tmp_path / "m.parquet")
    columns = parse_column_map("id=key,url=path,scientific_name=taxon,family=fam")
    rows = ingest([tmp_path / "m.parquet"], columns=columns).records.to_pylist()
    assert rows[0]["record_id"] == "m:k1"
    assert rows[0]["url"] == str(image.resolve())  # relative to the manifest
    assert rows[0]["family"] == "Idae"


def test_column_map_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown preset 'inat'"):
        parse_column_map("inat")
    with pytest.raises(UsageError, match="unknown field 'colour'"):
        parse_column_map("colour=c")
    manifest = tmp_path / "odd.csv"
    manifest.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="match no preset"):
        ingest([manifest])
    with pytest.raises(InputError, match="columns not in the file"):
        ingest([manifest], columns=parse_column_map("id=a,url=nope"))


def test_folder_with_taxa_csv(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for rel in ("owls/1.jpg", "owls/2.png", "loose.jpg", "unnamed/3.jpg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(root / rel)
    (root / "taxa.csv").write_text(
        "folder,filepath,scientific_name,class\nowls,,Strix aluco,Aves\n,loose.jpg,Bubo bubo,\n"
    )
    result = ingest([root])
    rows = {r["record_id"]: r for r in result.records.to_pylist()}
    assert set(rows) == {"photos:owls/1.jpg", "photos:owls/2.png", "photos:loose.jpg"}
    assert rows["photos:owls/1.jpg"]["scientific_name"] == "Strix aluco"
    assert rows["photos:owls/1.jpg"]["class_"] == "Aves"
    assert [r["reason"] for r in result.rejected] == ["no row of taxa.csv names it"]


def test_unknown_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        ingest([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="found no meta.xml or occurrence.txt"):
        ingest([tmp_path / "empty"])
