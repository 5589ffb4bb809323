"""Writing prediction rows (CSV / table / JSON), embeddings, and provenance logs."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from taxoclip import __version__
from taxoclip.errors import UsageError
from taxoclip.files import replacing, write_parquet_atomic, write_text_atomic
from taxoclip.runtime.rows import ERROR_KEY


def columns_of(rows: Sequence[dict]) -> list[str]:
    """Columns in first-seen order; ``error`` last and only when some row failed."""
    columns: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key != ERROR_KEY:
                columns.setdefault(key)
    names = list(columns)
    if any(ERROR_KEY in row for row in rows):
        names.append(ERROR_KEY)
    return names


def _format_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def write_rows(rows: Sequence[dict], fmt: str, handle: TextIO) -> None:
    columns = columns_of(rows)
    if fmt == "csv":
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n", restval="")
        writer.writeheader()
        writer.writerows(rows)
    elif fmt == "json":
        json.dump(list(rows), handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    elif fmt == "table":
        cells = [[_format_cell(row.get(c, "")) for c in columns] for row in rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
        handle.write(rule + "\n")
        handle.write(
            "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |\n"
        )
        handle.write(rule + "\n")
        for r in cells:
            handle.write(
                "| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |\n"
            )
        handle.write(rule + "\n")
    else:
        raise UsageError(f"--format must be csv, table or json (got {fmt})")


def emit_rows(rows: Sequence[dict], fmt: str, output: str | None) -> None:
    if output in (None, "", "-", "stdout"):
        write_rows(rows, fmt, sys.stdout)
        return
    buffer = io.StringIO()
    write_rows(rows, fmt, buffer)
    write_text_atomic(Path(output), buffer.getvalue())


def write_embeddings(output: str, model: str, keys: list[str], features: np.ndarray) -> list[Path]:
    """``.npy`` (+ ``.files.txt``, one key per row), ``.parquet`` or pybioclip's ``.json``."""
    path = Path(output)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        with replacing(path) as tmp, tmp.open("wb") as handle:
            np.save(handle, features.astype(np.float32))
        listing = path.with_suffix(".files.txt")
        write_text_atomic(listing, "".join(k + "\n" for k in keys))
        return [path, listing]
    if suffix == ".parquet":
        import pyarrow as pa

        table = pa.table(
            {
                "file_name": pa.array(keys, pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(features.astype(np.float32).reshape(-1)), features.shape[1]
                )
                if len(keys)
                else pa.array([], pa.list_(pa.float32())),
            }
        )
        write_parquet_atomic(path, table)
        return [path]
    if suffix == ".json":
        data = {
            "model": model,
            "embeddings": {k: v.tolist() for k, v in zip(keys, features, strict=True)},
        }
        write_text_atomic(path, json.dumps(data, indent=4))
        return [path]
    raise UsageError(f"--output must end in .npy, .parquet or .json (got {output})")


class ProvenanceLog:
    """``--log FILE``: a JSON record (``.json``) or appended text of what was run."""

    def __init__(self, path: str | None, **settings: Any) -> None:
        self.path = Path(path) if path else None
        if self.path and self.path.suffix == ".json" and self.path.exists():
            raise UsageError(f"log file {self.path} already exists; choose a new name")
        self.record: dict[str, Any] = {
            "tool": "taxoclip",
            "taxoclip_version": __version__,
            "command_line": " ".join(sys.argv),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **settings,
        }

    def finish(self, **results: Any) -> None:
        if not self.path:
            return
        self.record.update(results, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        if self.path.suffix == ".json":
            write_text_atomic(
                self.path, json.dumps(self.record, indent=2, ensure_ascii=False) + "\n"
            )
        else:
            with self.path.open("a", encoding="utf-8") as handle:
                for key, value in self.record.items():
                    handle.write(f"{key}: {value}\n")
                handle.write("\n")
