"""Darwin Core Archive ingest: time and peak memory at 1x and 10x records (or --scales).

Writes GBIF-download-shaped archives (zip, tab-separated occurrence.txt with 40 columns,
multimedia.txt with 0-3 images per occurrence, in another order than the core) of N and
10·N occurrences, then reads each in a fresh process the way ``curate``'s ingest task
does (``read_source`` → chunks → record parts), and prints records, seconds and the
process's peak RSS. Memory should stay flat while the records grow (the join is spilled
to Parquet buckets: taxoclip.curate.dwca)::

    python bench/dwca_ingest.py [--occurrences 50000] [--out bench/out/dwca]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from machine import describe

EXTRA = [f"field{i}" for i in range(30)]


def write_archive(path: Path, occurrences: int, seed: int = 0) -> int:
    """A zipped GBIF-style download; returns the number of media rows."""
    rng = random.Random(seed)
    columns = [
        "gbifID",
        "scientificName",
        "kingdom",
        "family",
        "genus",
        "basisOfRecord",
        "license",
        "publisher",
        "eventRemarks",
        "vernacularName",
        *EXTRA,
    ]
    media_rows = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("occurrence.txt", "w") as f:
            f.write(("\t".join(columns) + "\n").encode())
            for i in range(occurrences):
                row = [
                    str(i),
                    f"Genus{i % 997} species{i % 89} Author, 1900",
                    "Animalia",
                    f"Family{i % 101}",
                    f"Genus{i % 997}",
                    "HUMAN_OBSERVATION",
                    "CC0",
                    "iNaturalist",
                    "",
                    "",
                    *(f"value {i} {k}" for k in range(30)),
                ]
                f.write(("\t".join(row) + "\n").encode())
        with z.open("multimedia.txt", "w") as f:
            f.write(b"gbifID\ttype\tformat\tidentifier\tlicense\n")
            for i in rng.sample(range(occurrences), occurrences):
                for k in range(rng.choice((0, 1, 1, 2, 3))):
                    f.write(
                        f"{i}\tStillImage\timage/jpeg\thttps://ex.org/{i}/{k}.jpg\tCC-BY\n".encode()
                    )
                    media_rows += 1
    return media_rows


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM, which starts afresh at exec (Linux's
    ru_maxrss is carried over from the parent that forked us, here one that loaded torch)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_once(archive: str, work: str) -> dict:
    """Inside a fresh process: stream the archive into record parts, as curate does."""
    from taxoclip.curate.stages import ingest_source

    started = time.perf_counter()
    info = ingest_source(0, archive, "dwca", "bench", None, work, most=4096, least=64, workers=2)
    seconds = time.perf_counter() - started
    peak_mb = peak_rss_mb()
    return {
        "records": info["rows"],
        "rejected": info["rejected"],
        "parts": info["parts"],
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_mb, 1),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(read_once(sys.argv[2], sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--occurrences", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=Path("bench/out/dwca"))
    parser.add_argument("--scales", default="1,10", help="multiples of --occurrences")
    args = parser.parse_args()
    print(describe(), "| load average", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    rows = []
    for scale in (int(x) for x in args.scales.split(",")):
        n = args.occurrences * scale
        archive = args.out / f"gbif-{n}.zip"
        media = write_archive(archive, n)
        work = args.out / f"work-{n}"
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(archive), str(work)],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((scale, n, media, archive.stat().st_size / 1e6, result))
    print(
        "| scale | occurrences | media rows | zip MB | records | rejected | parts | s | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for scale, n, media, mb, r in rows:
        print(
            f"| {scale}x | {n:,} | {media:,} | {mb:.1f} | {r['records']:,} | {r['rejected']:,} | "
            f"{r['parts']} | {r['seconds']} | {r['peak_rss_mb']} |"
        )


if __name__ == "__main__":
    main()
