"""Writing prediction rows (CSV / table / JSON), embeddings, and provenance logs."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from taxoclip import __version__
from taxoclip.errors import UsageError
from taxoclip.files import replacing, replacing_files, write_parquet_atomic, write_text_atomic
from taxoclip.runtime.rows import ERROR_KEY


def columns_of(rows: Iterable[dict]) -> list[str]:
    """Columns in first-seen order; ``error`` last and only when some row failed."""
    columns: dict[str, None] = {}
    failed = False
    for row in rows:
        for key in row:
            if key != ERROR_KEY:
                columns.setdefault(key)
            else:
                failed = True
    return [*columns, ERROR_KEY] if failed else list(columns)


def _format_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


#: Rows to write, read afresh on each call: the writers pass over them twice (the CSV's
#: and the table's columns, the table's widths come from every row).
RowSource = Callable[[], Iterable[dict]]


def write_rows(rows: Sequence[dict] | RowSource, fmt: str, handle: TextIO) -> None:
    """``rows`` (a list, or a function that reads them afresh) as csv, json or a table."""
    source: RowSource = rows if callable(rows) else (lambda: rows)
    if fmt not in ("csv", "json", "table"):
        raise UsageError(f"--format must be csv, table or json (got {fmt})")
    if fmt == "json":  # as json.dump(rows, indent=2), one row at a time
        first = True
        for row in source():
            text = json.dumps(row, indent=2, ensure_ascii=False).replace("\n", "\n  ")
            handle.write(("[\n  " if first else ",\n  ") + text)
            first = False
        handle.write("[]\n" if first else "\n]\n")
        return
    columns = columns_of(source())
    if fmt == "csv":
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n", restval="")
        writer.writeheader()
        for row in source():
            writer.writerow(row)
        return
    widths = [len(c) for c in columns]
    for row in source():
        for i, c in enumerate(columns):
            widths[i] = max(widths[i], len(_format_cell(row.get(c, ""))))
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    handle.write(rule + "\n")
    handle.write(
        "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |\n"
    )
    handle.write(rule + "\n")
    for row in source():
        cells = [_format_cell(row.get(c, "")) for c in columns]
        handle.write(
            "| " + " | ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True)) + " |\n"
        )
    handle.write(rule + "\n")


def is_file_output(output: str | None) -> bool:
    """``output`` names a file to write atomically (not stdout, not /dev/null or a pipe)."""
    if output in (None, "", "-", "stdout"):
        return False
    path = Path(output)
    return not path.exists() or path.is_file()


def emit_rows(rows: Sequence[dict] | RowSource, fmt: str, output: str | None) -> None:
    """Write rows to ``output`` (atomically: all or nothing) or to stdout."""
    if output in (None, "", "-", "stdout"):
        write_rows(rows, fmt, sys.stdout)
        return
    if not is_file_output(output):  # /dev/null, a named pipe: written as it is
        with open(output, "w", encoding="utf-8", newline="") as handle:
            write_rows(rows, fmt, handle)
        return
    with replacing(output) as tmp, tmp.open("w", encoding="utf-8", newline="") as handle:
        write_rows(rows, fmt, handle)


def write_embeddings(output: str, model: str, keys: list[str], features: np.ndarray) -> list[Path]:
    """``.npy`` (+ ``.files.txt``, one key per row), ``.parquet`` or pybioclip's ``.json``."""
    features = np.asarray(features, dtype=np.float32)
    return write_embedding_stream(
        output, model, lambda: iter([(list(keys), features)]), len(keys), features.shape[1]
    )


def write_embedding_stream(
    output: str,
    model: str,
    blocks: Callable[[], Iterator[tuple[list[str], np.ndarray]]],
    n: int,
    dim: int,
) -> list[Path]:
    """``n`` embeddings, read as blocks of keys and float32 (rows, ``dim``) features from
    ``blocks()`` (called again for each pass), in the format ``output``'s suffix
    names: ``.npy`` (+ ``.files.txt``, one key per row; as ``np.save``), ``.parquet`` (a
    row group per block) or pybioclip's ``.json`` (as ``json.dumps(…, indent=4)``).
    Memory holds one block at a time."""
    path = Path(output)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".parquet", ".json"):
        raise UsageError(f"--output must end in .npy, .parquet or .json (got {output})")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        listing = path.with_suffix(".files.txt")
        with replacing_files() as temp_for:
            with temp_for(path).open("wb") as handle:
                descr = np.lib.format.dtype_to_descr(np.dtype(np.float32))
                header = {"descr": descr, "fortran_order": False, "shape": (n, dim)}
                np.lib.format.write_array_header_1_0(handle, header)
                for _, block in blocks():
                    handle.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())
            with temp_for(listing).open("w", encoding="utf-8", newline="") as handle:
                for keys, _ in blocks():
                    handle.write("".join(key + "\n" for key in keys))
        return [path, listing]
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        if n == 0:
            empty = pa.table(
                {
                    "file_name": pa.array([], pa.string()),
                    "embedding": pa.array([], pa.list_(pa.float32())),
                }
            )
            write_parquet_atomic(path, empty)
            return [path]
        schema = pa.schema([("file_name", pa.string()), ("embedding", pa.list_(pa.float32(), dim))])
        with replacing(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
            for keys, block in blocks():
                block = np.ascontiguousarray(block, dtype=np.float32)
                names = pa.array(keys, pa.string())
                values = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), dim)
                writer.write_table(pa.Table.from_arrays([names, values], schema=schema))
        return [path]
    with replacing(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        # json.dumps({"model": model, "embeddings": {key: row, …}}, indent=4), streamed
        handle.write('{\n    "model": ' + json.dumps(model) + ',\n    "embeddings": ')
        if n == 0:
            handle.write("{}\n}")
            return [path]
        handle.write("{")
        start = 0
        for keys, block in blocks():
            for key, row in zip(keys, block.tolist(), strict=True):
                value = json.dumps(row, indent=4).replace("\n", "\n        ")
                lead = "\n        " if start == 0 else ",\n        "
                handle.write(lead + json.dumps(key) + ": " + value)
                start += 1
        handle.write("\n    }\n}")
    return [path]


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
