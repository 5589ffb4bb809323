"""taxoclip curate when nothing, or nothing more, is left to curate: a GBIF download of zero
records, one whose occurrences have no image, names none of which resolves, images that
are all evaluation leaks, and a run whose ingest wrote no part at all. Each goes through
every stage and writes its whole ledger (rejected.parquet with every rejection, an empty
manifest.parquet, stats.json) before the run ends with "no record survived"."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from taxoclip.curate import CurateConfig, curate, driver, plan
from taxoclip.curate.pipeline import ray_session, write_ledger
from taxoclip.errors import TaxoclipError
from taxoclip.synth import SynthConfig, generate
from tests.curate.test_pipeline import run_cli

REAL_EMPTY = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "real-samples"
    / "dwca"
    / "rgbif-0027702-210914110416597.zip"
)

# GBIF's download layout: occurrence.txt (core) and multimedia.txt (extension, joined on
# gbifID), tab-separated with a header line, described by meta.xml.
OCCURRENCE = {"gbifID": "http://rs.gbif.org/terms/1.0/gbifID"} | {
    term: f"http://rs.tdwg.org/dwc/terms/{term}"
    for term in (
        "basisOfRecord",
        "scientificName",
        "kingdom",
        "phylum",
        "class",
        "order",
        "family",
        "genus",
    )
}
MULTIMEDIA = {"gbifID": "http://rs.gbif.org/terms/1.0/gbifID"} | {
    term: f"http://purl.org/dc/terms/{term}"
    for term in (
        "type",
        "format",
        "identifier",
        "references",
        "title",
        "description",
        "source",
        "audience",
        "created",
        "creator",
        "contributor",
        "publisher",
        "license",
        "rightsHolder",
    )
}
PUMA = [
    "HUMAN_OBSERVATION",
    "Puma concolor",
    "Animalia",
    "Chordata",
    "Mammalia",
    "Carnivora",
    "Felidae",
    "Puma",
]


def meta_xml() -> str:
    tab = (
        'encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" '
        'fieldsEnclosedBy="" ignoreHeaderLines="1"'
    )

    def fields(terms: dict[str, str]) -> str:
        return "\n".join(
            f'    <field index="{i}" term="{uri}"/>' for i, uri in enumerate(terms.values())
        )

    return f"""<?xml version="1.0" encoding="UTF-8"?>
<archive xmlns="http://rs.tdwg.org/dwc/text/" metadata="metadata.xml">
  <core {tab} rowType="http://rs.tdwg.org/dwc/terms/Occurrence">
    <files><location>occurrence.txt</location></files>
    <id index="0"/>
{fields(OCCURRENCE)}
  </core>
  <extension {tab} rowType="http://rs.gbif.org/terms/1.0/Multimedia">
    <files><location>multimedia.txt</location></files>
    <coreid index="0"/>
{fields(MULTIMEDIA)}
  </extension>
</archive>
"""


def gbif_download(folder: Path, occurrences: int) -> Path:
    """A GBIF download of ``occurrences`` occurrences of Puma concolor, none with an image
    (multimedia.txt holds its header only)."""
    folder.mkdir(parents=True)
    rows = [list(OCCURRENCE)] + [[str(1000 + i), *PUMA] for i in range(occurrences)]
    (folder / "occurrence.txt").write_text("".join("\t".join(r) + "\n" for r in rows))
    (folder / "multimedia.txt").write_text("\t".join(MULTIMEDIA) + "\n")
    (folder / "meta.xml").write_text(meta_xml())
    return folder


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """A SynthToL raw source: its backbone, media files and evaluation images."""
    root = tmp_path_factory.mktemp("empty") / "synth"
    generate(
        root, SynthConfig(species=20, images_per_species=6, seed=3, raw_source=True), progress=False
    )
    return root


@pytest.fixture(scope="module")
def ray_local():
    with ray_session(None, 2):
        yield


def curate_nothing(raw: Path, sources: list[Path], out: Path) -> dict:
    """Run curate where no record survives: it raises after writing the ledger; returns
    stats.json and the ledger rows."""
    config = CurateConfig(
        sources=[str(s) for s in sources],
        backbone=str(raw / "raw" / "backbone"),
        out=str(out),
        exclude_eval=[str(raw / "test")],
        image_size=32,
        workers=2,
    )
    with pytest.raises(TaxoclipError, match="no record survived"):
        curate(config, progress=False)
    return ledger_of(out)


def ledger_of(out: Path) -> dict:
    assert not (out / ".work").exists() and not list(out.glob("shard-*.tar"))
    return {
        "stats": json.loads((out / "stats.json").read_text()),
        "kept": pq.read_table(out / "manifest.parquet").num_rows,
        "rejected": pq.read_table(out / "rejected.parquet").to_pylist(),
    }


def test_occurrences_without_images_are_all_in_the_ledger(raw, tmp_path) -> None:
    source = gbif_download(tmp_path / "no-images", occurrences=68)
    out = tmp_path / "out"
    done = run_cli(
        [
            "curate",
            str(source),
            "--backbone",
            str(raw / "raw" / "backbone"),
            "--out",
            str(out),
            "--workers",
            "2",
            "-q",
        ],
        timeout=300,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"taxoclip curate: error: curate: no record survived (68 rejected); "
        f"see {out / 'rejected.parquet'}"
    )
    ledger = ledger_of(out)
    rejected = ledger["rejected"]
    assert ledger["kept"] == 0 and len(rejected) == 68
    assert len({r["record_id"] for r in rejected}) == 68
    assert {(r["stage"], r["reason"]) for r in rejected} == {("ingest", "occurrence has no image")}
    stats = ledger["stats"]
    assert (stats["records_in"], stats["kept"], stats["rejected"]) == (68, 0, 68)
    assert stats["rejected_by_stage"]["ingest"] == 68
    assert stats["names"]["distinct_names"] == 0


@pytest.mark.parametrize("kind", ["fixture", "real"])
def test_a_download_of_zero_records_writes_an_empty_ledger(raw, ray_local, tmp_path, kind):
    if kind == "real" and not REAL_EMPTY.is_file():
        pytest.skip(f"{REAL_EMPTY} is not here (a clone without ../shared)")
    source = gbif_download(tmp_path / "empty", 0) if kind == "fixture" else REAL_EMPTY
    ledger = curate_nothing(raw, [source], tmp_path / "out")
    assert ledger["kept"] == 0 and ledger["rejected"] == []
    stats = ledger["stats"]
    assert (stats["records_in"], stats["kept"], stats["rejected"]) == (0, 0, 0)
    assert [s["records"] for s in stats["sources"]] == [0]


def synth_manifest(raw: Path, path: Path, fault: str, name: str | None = None) -> int:
    """A manifest of the raw source's media with ``fault`` ("" for clean ones), named by
    their true name or ``name``; returns how many rows it has."""
    with (raw / "raw" / "truth.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["faults"] == fault]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["record_id", "url", "scientific_name"])
        for r in rows:  # an occurrence may have several images: one id per media row
            media = raw / "raw" / "dwca" / r["file"]
            record_id = f"{r['gbifID']}-{r['media_index']}"
            writer.writerow([record_id, str(media), name or r["true_name"]])
    return len(rows)


def test_no_name_resolved_leaves_nothing_for_the_image_stages(raw, ray_local, tmp_path):
    source = tmp_path / "unknown.csv"
    n = synth_manifest(raw, source, fault="", name="Nonexistus nullus")
    ledger = curate_nothing(raw, [source], tmp_path / "out")
    assert n and len(ledger["rejected"]) == n
    assert {r["stage"] for r in ledger["rejected"]} == {"names"}
    assert ledger["stats"]["dedup"]["exact_duplicates"] == 0


def test_every_image_a_leak_leaves_nothing_after_dedup(raw, ray_local, tmp_path):
    source = tmp_path / "leaks.csv"
    n = synth_manifest(raw, source, fault="leak")
    ledger = curate_nothing(raw, [source], tmp_path / "out")
    assert n and len(ledger["rejected"]) == n
    assert {r["stage"] for r in ledger["rejected"]} == {"leak"}
    assert ledger["stats"]["dedup"]["leaks"] == n


def test_stages_after_an_ingest_that_wrote_no_part(raw, ray_local, tmp_path):
    """Every stage over zero parts: no names to resolve, no image part, no bucket."""
    out = tmp_path / "out"
    config = CurateConfig(
        sources=[str(raw)],
        backbone=str(raw / "raw" / "backbone"),
        out=str(out),
        exclude_eval=[str(raw / "test")],
        workers=2,
    )
    work = driver.Work(out / ".work")
    work.state["ingest"] = {"records_in": 0, "records": 0, "sources": []}
    curation = driver.Run(config, work, plan.stages(), backbone=Path(config.backbone))
    counts = curation.all()  # ingest is done (with nothing): every later stage runs on nothing
    assert counts["names"].distinct_names == 0
    assert counts["near"].near_duplicates == 0
    assert counts["shards"].sizes == {}
    ledger = write_ledger(work, out)
    assert (ledger["kept"], ledger["rejected"]) == (0, 0)
    assert pq.read_table(out / "manifest.parquet").num_rows == 0
    assert pq.read_table(out / "rejected.parquet").num_rows == 0
