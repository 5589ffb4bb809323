"""MegaDetector batch output in and out: ``taxoclip predict --detections MD.json``.

The input is MegaDetector's batch-output JSON, format 1.x (``info.format_version``,
``detection_categories`` ``{id: name}``, ``images[]`` with ``file`` and ``detections[]``
of ``category``, ``conf`` and ``bbox`` = normalised ``[x_min, y_min, width, height]``).
Every detection of the category named ``animal`` at or above the detection threshold is
cropped (optional padding, clipped to the image) and classified through the one
feature-extraction path (:mod:`taxoclip.predict.images`; each image is decoded once for
all its crops). The same document comes back with ``classification_categories``
(``{id: name}``), ``classification_category_descriptions`` (the lineage) and per-detection
``classifications`` (``[[class_id, score], …]``, top-k, ids as strings as MegaDetector
writes them); every other field is kept as read. Images that cannot be read get the
format's ``failure`` field. A flat CSV (one row per detection) is written beside it.
The format: docs/ecologists.md; the schema the output is checked against in the tests:
``schemas/megadetector-1.x.json``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from taxoclip import __version__
from taxoclip.errors import InputError, UsageError
from taxoclip.files import write_text_atomic
from taxoclip.taxonomy import RANK_NAMES

from .classifiers import ERROR_KEY, PRED_FILENAME_KEY, PRED_SCORE_KEY
from .images import auto_workers, describe_error, load_rgb

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).parent / "schemas" / "megadetector-1.x.json"
ANIMAL = "animal"
#: Lineage columns of a tree-of-life row, root first (``species_epithet`` at species).
LINEAGE_COLUMNS = (*RANK_NAMES[:-1], "species_epithet")
#: Crops held in memory before they are classified (a few MB at camera-trap sizes).
CHUNK_CROPS = 256
EXAMPLE_NOTES = 5  # notes printed on stderr; all are in the CSV
_EDGE = 2e-4  # MegaDetector rounds boxes to 4 decimals: that far past the edge is not "outside"

PredictRows = Callable[[list[Image.Image]], list[dict]]


# --------------------------------------------------------------------------- reading


def _fail(path: Path, where: str, why: str) -> InputError:
    return InputError(f"--detections {path}: {where}: {why} (not MegaDetector batch output 1.x)")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_detections(path: str | os.PathLike) -> dict:
    """Parse and check a MegaDetector batch-output file; errors name the field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"--detections {path}: cannot read ({exc})") from exc
    except ValueError as exc:
        raise InputError(f"--detections {path}: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise _fail(path, "top level", f"expected an object, got {type(data).__name__}")
    info = data.get("info")
    if not isinstance(info, dict):
        raise _fail(path, "info", "missing or not an object")
    version = info.get("format_version")
    if not isinstance(version, str) or not (version == "1" or version.startswith("1.")):
        raise _fail(path, "info.format_version", f"expected '1.x', got {version!r}")
    categories = data.get("detection_categories")
    if not isinstance(categories, dict) or not all(isinstance(v, str) for v in categories.values()):
        raise _fail(path, "detection_categories", "missing or not an object of id: name")
    images = data.get("images")
    if not isinstance(images, list):
        raise _fail(path, "images", "missing or not a list")
    for i, image in enumerate(images):
        where = f"images[{i}]"
        if not isinstance(image, dict):
            raise _fail(path, where, "not an object")
        if not isinstance(image.get("file"), str) or not image["file"]:
            raise _fail(path, f"{where}.file", "missing or not a path")
        detections = image.get("detections")
        if detections is None:
            continue  # a failed image (MegaDetector leaves detections out or null)
        if not isinstance(detections, list):
            raise _fail(path, f"{where}.detections", "not a list")
        for j, det in enumerate(detections):
            at = f"{where}.detections[{j}]"
            if not isinstance(det, dict):
                raise _fail(path, at, "not an object")
            if str(det.get("category")) not in categories:
                raise _fail(path, f"{at}.category", f"{det.get('category')!r} is not one of "
                            f"detection_categories ({', '.join(categories)})")  # fmt: skip
            if not _is_number(det.get("conf")):
                raise _fail(path, f"{at}.conf", f"expected a number, got {det.get('conf')!r}")
            box = det.get("bbox")
            if not (isinstance(box, list) and len(box) == 4 and all(map(_is_number, box))):
                raise _fail(path, f"{at}.bbox", f"expected [x_min, y_min, width, height], got "
                            f"{box!r}")  # fmt: skip
    return data


def animal_categories(data: dict, path: str | os.PathLike) -> set[str]:
    """The detection category ids named ``animal`` (MegaDetector: ``"1"``)."""
    ids = {str(k) for k, v in data["detection_categories"].items() if v.strip().lower() == ANIMAL}
    if not ids:
        raise InputError(
            f"--detections {path}: detection_categories has no category named '{ANIMAL}' "
            f"(it names {', '.join(map(repr, data['detection_categories'].values()))})"
        )
    return ids


# --------------------------------------------------------------------------- cropping


def crop_box(
    bbox: Sequence[float], width: int, height: int, padding: float = 0.0
) -> tuple[tuple[int, int, int, int] | None, str]:
    """Pixel box ``(x0, y0, x1, y1)`` of a normalised ``[x, y, w, h]`` box, padded by
    ``padding`` × the box's width and height on each side and clipped to the image;
    the note says what was clipped (or why there is no box)."""
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return None, f"empty box {list(bbox)}: not classified"
    note = ""
    if x < -_EDGE or y < -_EDGE or x + w > 1 + _EDGE or y + h > 1 + _EDGE:
        note = f"box {list(bbox)} reaches outside the image: clipped"
    x0, x1 = (x - padding * w) * width, (x + w + padding * w) * width
    y0, y1 = (y - padding * h) * height, (y + h + padding * h) * height
    box = (max(0, math.floor(x0)), max(0, math.floor(y0)),
           min(width, math.ceil(x1)), min(height, math.ceil(y1)))  # fmt: skip
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        return None, f"box {list(bbox)} lies outside the image: not classified"
    return box, note


# --------------------------------------------------------------------------- labels


def label_of(row: dict) -> tuple[str, str | None, str]:
    """``(name, description, rank)`` of one prediction row: the custom label, or the
    taxon's scientific name (a binomial at species), its lineage ``a;b;…;common`` and the
    rank of the deepest name the row holds (the rank it landed on)."""
    if "classification" in row:
        return str(row["classification"]), None, ""
    lineage = [str(row.get(c) or "") for c in LINEAGE_COLUMNS]
    depth = max((i for i, name in enumerate(lineage) if name), default=-1)
    if depth < 0:
        return "", None, ""
    if depth == 6:
        name = f"{lineage[5]} {lineage[6]}".strip()
    else:
        name = lineage[depth]
    description = ";".join(lineage[: depth + 1])
    common = str(row.get("common_name") or "")
    if depth == 6 and common:
        description += f";{common}"
    return name, description, RANK_NAMES[depth]


@dataclass
class _Categories:
    """``classification_categories`` built as labels are first seen (ids "0", "1", …)."""

    names: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    _ids: dict[str, str] = field(default_factory=dict)

    def id_of(self, name: str, description: str | None) -> str:
        key = description or name
        if key not in self._ids:
            new = str(len(self._ids))
            self._ids[key] = new
            self.names[new] = name
            if description:
                self.descriptions[new] = description
        return self._ids[key]


# --------------------------------------------------------------------------- the run


@dataclass
class DetectionsOutcome:
    """What ``--detections`` did: counts, failures (file → reason), notes, outputs."""

    n_images: int  # images with at least one detection to classify
    n_detections: int  # detections in the file
    n_classified: int
    failed: dict[str, str]
    notes: list[str]
    written: list[Path]
    rows: list[dict] = field(default_factory=list, repr=False)


@dataclass
class _Pending:
    image: int
    detection: int
    crop: Image.Image


def classify_detections(
    md_path: str | os.PathLike,
    output: str | os.PathLike,
    predict_rows: PredictRows,
    *,
    image_root: str | os.PathLike | None = None,
    threshold: float = 0.2,
    padding: float = 0.0,
    classifier_info: dict | None = None,
    chunk: int = CHUNK_CROPS,
    threads: int = 1,
) -> DetectionsOutcome:
    """Crop, classify and write back (``output`` .json and the flat .csv beside it).

    ``predict_rows(crops)`` classifies a list of PIL crops and returns pybioclip rows whose
    ``file_name`` is the crop's position — any of the predict modes (tree of life at a
    rank, ``--deepest-rank``, a region, custom labels). ``threads`` pictures are decoded
    at a time (JPEG decoding releases the GIL), each once for all its boxes.
    """
    md_path, output = Path(md_path), Path(output)
    if output.suffix.lower() != ".json":
        raise UsageError(f"with --detections, --output must be a .json file (got {output})")
    if output.resolve() == md_path.resolve():
        raise UsageError(f"--output {output} would overwrite --detections; choose a new name")
    data = read_detections(md_path)
    animals = animal_categories(data, md_path)
    root = Path(image_root) if image_root else md_path.parent
    categories = _Categories()
    top: dict[tuple[int, int], list[dict]] = {}  # (image, detection) → prediction rows
    notes: dict[tuple[int, int], str] = {}
    failed: dict[str, str] = {}
    pending: list[_Pending] = []
    n_detections = 0

    def flush() -> None:
        if not pending:
            return
        rows = predict_rows([p.crop for p in pending])
        by_position: dict[int, list[dict]] = {}
        for row in rows:
            by_position.setdefault(int(row[PRED_FILENAME_KEY]), []).append(row)
        for position, item in enumerate(pending):
            got = by_position.get(position, [])
            if got and ERROR_KEY in got[0]:
                notes[(item.image, item.detection)] = f"crop not classified: {got[0][ERROR_KEY]}"
                continue
            top[(item.image, item.detection)] = got
        pending.clear()

    replaced = _drop_previous_classifications(data)
    plan: list[tuple[int, list[int], Path]] = []  # (image, its boxes to classify, path)
    for i, image in enumerate(data["images"]):
        detections = image.get("detections") or []
        n_detections += len(detections)
        wanted = []
        for j, det in enumerate(detections):
            if str(det["category"]) not in animals:
                name = data["detection_categories"][str(det["category"])]
                notes[(i, j)] = f"category {name}: not classified"
            elif det["conf"] < threshold:
                notes[(i, j)] = f"conf {det['conf']} below --detection-threshold {threshold}"
            else:
                wanted.append(j)
        if wanted:
            path = Path(image["file"])
            plan.append((i, wanted, path if path.is_absolute() else root / path))
    n_images = len(plan)

    for (i, wanted, path), loaded in zip(plan, _decoded([p for _, _, p in plan], threads),
                                         strict=True):  # fmt: skip
        image = data["images"][i]
        picture, reason = loaded
        if picture is None:  # this image's failure, reported; the others go on
            failed[image["file"]] = reason
            log.warning("skipping %s: %s", path, reason)
            if not image.get("failure"):
                image["failure"] = f"taxoclip: cannot read image {path}: {reason}"
            continue
        for j in wanted:
            bbox = image["detections"][j]["bbox"]
            box, note = crop_box(bbox, picture.width, picture.height, padding)
            if note:
                notes[(i, j)] = note
            if box is not None:
                pending.append(_Pending(i, j, picture.crop(box)))
        del picture, loaded
        if len(pending) >= chunk:
            flush()
    flush()

    for (i, j), rows in top.items():
        classes = []
        for row in rows:
            name, description, _ = label_of(row)
            if name:
                classes.append([categories.id_of(name, description),
                                round(float(row[PRED_SCORE_KEY]), 4)])  # fmt: skip
        data["images"][i]["detections"][j]["classifications"] = classes
    if top:
        data["classification_categories"] = categories.names
        if categories.descriptions:
            data["classification_category_descriptions"] = categories.descriptions
    info = data["info"]
    info["classifier"] = f"taxoclip {__version__}"
    info["classification_completion_time"] = time.strftime("%Y-%m-%d %H:%M:%S")
    info["classifier_metadata"] = {
        **(classifier_info or {}),
        "detection_threshold": threshold,
        "crop_padding": padding,
        "n_classified": len(top),
    }

    flat = flat_rows(data, top, notes, failed)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    csv_path = output.with_suffix(".csv")
    write_text_atomic(csv_path, rows_to_csv(flat))
    note_list = [f"--detections {md_path}: replaced the classifications it held"] * replaced
    note_list += [
        f"{data['images'][i]['file']} detection {j}: {text}"
        for (i, j), text in sorted(notes.items())
        if "clipped" in text or "outside" in text or "empty box" in text or "crop not" in text
    ]
    return DetectionsOutcome(n_images=n_images, n_detections=n_detections,
                             n_classified=len(top), failed=failed, notes=note_list,
                             written=[output, csv_path], rows=flat)  # fmt: skip


def _decoded(paths: list[Path], threads: int):
    """``(picture, None)`` or ``(None, reason)`` per path, in order; at most ``2 × threads``
    decoded pictures are held at once."""
    if threads <= 1:
        for path in paths:
            yield _load(path)
        return
    with ThreadPoolExecutor(threads) as pool:
        window: deque = deque()
        for path in paths:
            window.append(pool.submit(_load, path))
            if len(window) >= 2 * threads:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def _load(path: Path) -> tuple[Image.Image | None, str | None]:
    try:
        return load_rgb(path), None
    except Exception as exc:  # any failure is this image's, reported, never fatal
        return None, describe_error(exc)


def _drop_previous_classifications(data: dict) -> bool:
    """A file already classified (by another classifier, or an earlier run): its
    categories and classifications are replaced as a whole, never mixed with ours."""
    had = "classification_categories" in data
    data.pop("classification_categories", None)
    data.pop("classification_category_descriptions", None)
    for image in data["images"]:
        for det in image.get("detections") or []:
            had = det.pop("classifications", None) is not None or had
    return had


def flat_rows(data: dict, top: dict, notes: dict, failed: dict) -> list[dict]:
    """One row per detection: where it is, what it is (top-1), how sure, and notes."""
    pred_columns: dict[str, None] = {}
    for rows in top.values():
        for key in rows[0] if rows else ():
            if key not in (PRED_FILENAME_KEY, PRED_SCORE_KEY, "rank", "rank_landed"):
                pred_columns.setdefault(key)
    out = []
    for i, image in enumerate(data["images"]):
        for j, det in enumerate(image.get("detections") or []):
            x, y, w, h = det["bbox"]
            row = {"file": image["file"], "detection": j,
                   "category": data["detection_categories"][str(det["category"])],
                   "conf": det["conf"], "bbox_x": x, "bbox_y": y, "bbox_w": w, "bbox_h": h}  # fmt: skip
            best = (top.get((i, j)) or [{}])[0]
            name, _, landed = label_of(best) if best else ("", None, "")
            row.update({c: best.get(c, "") for c in pred_columns})
            row["label"] = name
            row["rank"] = landed
            row["score"] = best.get(PRED_SCORE_KEY, "")
            row["note"] = notes.get((i, j), "")
            row[ERROR_KEY] = failed.get(image["file"], "")
            out.append(row)
    return out


def rows_to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    columns = list(rows[0]) if rows else ["file", "detection", "label", "rank", "score"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def predict_detections(config, predict_rows: PredictRows, log_record, notes: list[str]):
    """``taxoclip predict --detections``: the runner's branch (a ``PredictConfig`` in, a
    ``PredictResult`` out; exit 3 when some images could not be read)."""
    from .config import PredictResult

    root = Path(config.image_root or config.images[0])
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (with --detections, give the folder "
                         "MegaDetector ran on)")  # fmt: skip
    mode = ("custom labels" if config.cls else "bins" if config.bins
            else f"deepest rank >= {config.deepest_rank}" if config.deepest_rank is not None
            else f"tree of life, {config.rank or 'species'}")  # fmt: skip
    info = {"model": config.model, "pretrained": config.pretrained, "index": config.index,
            "mode": mode, "region": config.region, "deny": config.deny}  # fmt: skip
    outcome = classify_detections(
        config.detections, config.output, predict_rows, image_root=root,
        threshold=config.detection_threshold, padding=config.crop_padding,
        classifier_info={k: v for k, v in info.items() if v is not None},
        threads=max(1, auto_workers(config.workers)),
    )  # fmt: skip
    log_record.finish(n_images=outcome.n_images, n_detections=outcome.n_detections,
                      n_classified=outcome.n_classified, n_failed=len(outcome.failed),
                      failed=outcome.failed, output=[str(p) for p in outcome.written])  # fmt: skip
    shown = outcome.notes[:EXAMPLE_NOTES]
    more = len(outcome.notes) - len(shown)
    box_notes = [f"taxoclip predict: {n}" for n in shown]
    if more > 0:
        box_notes.append(f"taxoclip predict: … and {more} more notes (see the note column)")
    summary = [
        f"classified {outcome.n_classified} animal detections (of {outcome.n_detections} in "
        f"{config.detections}) in {outcome.n_images - len(outcome.failed)} images; wrote "
        + " and ".join(map(str, outcome.written))
    ]
    return PredictResult(n_images=outcome.n_images, failed=sorted(outcome.failed),
                         rows=outcome.rows, summary=summary, notes=[*notes, *box_notes])  # fmt: skip
