"""Dump a Darwin Core Archive as python-dwca-reader reads it, as JSON on stdout.

Run in its own process with python-dwca-reader on the path (kept apart from our venv,
``make venv`` installs it under ``.venv/compat``): ``python dwca_reference.py ARCHIVE``.
Terms are given by their local name, ids as the reader returns them.
"""

import json
import sys

from dwca.read import DwCAReader


def local(term: str) -> str:
    return term.rstrip("/").replace("#", "/").rsplit("/", 1)[-1]


def dump(path: str) -> dict:
    with DwCAReader(path) as archive:
        core = archive.core_file
        out = {
            "core": {
                "rowtype": core.file_descriptor.type,
                "rows": [
                    {"id": row.id, "data": {local(k): v for k, v in row.data.items()}}
                    for row in core.iter_rows()
                ],
            },
            "extensions": [],
        }
        for extension in archive.extension_files:
            out["extensions"].append(
                {
                    "rowtype": extension.file_descriptor.type,
                    "rows": [
                        {"core_id": row.core_id, "data": {local(k): v for k, v in row.data.items()}}
                        for row in extension.iter_rows()
                    ],
                }
            )
    return out


if __name__ == "__main__":
    json.dump(dump(sys.argv[1]), sys.stdout)
