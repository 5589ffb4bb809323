"""Every real Darwin Core Archive through ``taxoclip curate``, one run, its ledger exact.

The archives of ``../shared/real-samples/dwca`` (origins in its ORIGINS.md) go through
the real command in its own process: a local Ray, every stage. The backbone is a small
one written here holding a few of their names, so some records resolve and reach fetch;
the run is kept offline by pointing HTTP(S) at a closed port on 127.0.0.1, so every
download fails at once and no record survives: the command must still write the whole
ledger, with records in = what python-dwca-reader's rows describe (counted in
``test_dwca.expected_ledger``), each record once with its stage and reason, and end with
one clear line and exit status 1, never a traceback. (Its time is mostly Ray's start.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.curate.test_dwca import REAL, REAL_ARCHIVES, expected_ledger, reference

# kingdom … species of names in the archives (hawk: the lone star tick; rgbif-0084005:
# Bischofia; dwca-event-example: the colonial tuco-tuco)
LINEAGES = [
    ("Animalia", "Arthropoda", "Arachnida", "Ixodida", "Ixodidae", "Amblyomma", "americanum"),
    (
        "Plantae",
        "Tracheophyta",
        "Magnoliopsida",
        "Malpighiales",
        "Phyllanthaceae",
        "Bischofia",
        "javanica",
    ),
    ("Animalia", "Chordata", "Mammalia", "Rodentia", "Ctenomyidae", "Ctenomys", "sociabilis"),
]
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")


def write_backbone(folder: Path) -> Path:
    """A GBIF-format backbone (Taxon.tsv) with the lineages above."""
    folder.mkdir(parents=True)
    header = [
        "taxonID",
        "parentNameUsageID",
        "acceptedNameUsageID",
        "scientificName",
        "canonicalName",
        "taxonRank",
        "taxonomicStatus",
        *RANKS[:-1],
        "specificEpithet",
    ]
    ids: dict[tuple[str, ...], int] = {}
    rows = ["\t".join(header)]
    for lineage in LINEAGES:
        for depth in range(len(RANKS)):
            path = lineage[: depth + 1]
            if path in ids:
                continue
            ids[path] = len(ids) + 1
            name = f"{lineage[5]} {lineage[6]}" if depth == 6 else lineage[depth]
            cells = [*lineage[: min(depth + 1, 6)], *[""] * (6 - min(depth + 1, 6))]
            rows.append(
                "\t".join(
                    [
                        str(ids[path]),
                        str(ids.get(path[:-1], "")),
                        "",
                        name,
                        name,
                        RANKS[depth],
                        "accepted",
                        *cells,
                        lineage[6] if depth == 6 else "",
                    ]
                )
            )
    (folder / "Taxon.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_every_real_archive_through_curate_with_an_exact_ledger(tmp_path: Path) -> None:
    if not REAL_ARCHIVES:
        pytest.skip(f"{REAL} is not here (a clone without ../shared): no real archives to curate")
    expected_in, expected_ingest = 0, set()
    for name in REAL_ARCHIVES:
        label = Path(name).stem if name.endswith(".zip") else name
        kept, rejected = expected_ledger(reference(REAL / name), label)
        expected_in += len(kept) + len(rejected)
        expected_ingest |= rejected
    out = tmp_path / "out"
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens, downloads fail at once
    env = {**os.environ, "http_proxy": closed, "https_proxy": closed, "HF_HUB_OFFLINE": "1"}
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    command = [
        sys.executable,
        "-m",
        "taxoclip",
        "curate",
        *(str(REAL / n) for n in REAL_ARCHIVES),
        "--backbone",
        str(write_backbone(tmp_path / "backbone")),
        "--out",
        str(out),
        "--workers",
        "2",
        "--retries",
        "1",
        "--timeout",
        "5",
        "-q",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "no record survived" in done.stderr and str(out / "rejected.parquet") in done.stderr

    stats = json.loads((out / "stats.json").read_text())
    rejected = pq.read_table(out / "rejected.parquet").to_pylist()
    assert pq.read_table(out / "manifest.parquet").num_rows == 0
    assert stats["records_in"] == expected_in == len(rejected)
    assert len({r["record_id"] for r in rejected}) == len(rejected)  # each record once
    assert all(r["stage"] and r["reason"] for r in rejected)
    assert {r["record_id"] for r in rejected if r["stage"] == "ingest"} == expected_ingest
    # every name resolves (to the species, or to a kingdom the backbone holds: higher_rank,
    # kept), so every record read reaches fetch, and fails there offline
    by_stage = Counter(r["stage"] for r in rejected)
    assert by_stage == {"ingest": len(expected_ingest), "fetch": expected_in - len(expected_ingest)}
    assert stats["names"]["distinct_by_status"]["exact"] >= len(LINEAGES) - 1
    described = {s["source"]: s for s in stats["sources"]}
    assert set(described) == {Path(n).stem if n.endswith(".zip") else n for n in REAL_ARCHIVES}
    assert described["rgbif-0027702-210914110416597"]["records"] == 0  # the empty download
