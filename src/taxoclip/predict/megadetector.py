"""MegaDetector batch output in and out: ``taxoclip predict --detections MD.json``.

The input is MegaDetector's batch-output JSON, format 1.x (``info.format_version``,
``detection_categories`` ``{id: name}``, ``images[]`` with ``file`` and ``detections[]``
of ``category``, ``conf`` and ``bbox`` = normalised ``[x_min, y_min, width, height]``).
Every detection of the chosen categories (``--detection-categories``; by default all but
people, vehicles and empties, so renamed categories such as AddaxAI's work) at or above the
detection threshold is cropped (optional padding, clipped to the image) and classified
through the one engine (:mod:`taxoclip.runtime`: the encoding loop and the scorer every
other prediction uses; each image is decoded once for all its crops). The same document comes back with our categories added to
``classification_categories`` (``{id: name}``, ids after any earlier classifier's),
``classification_category_descriptions`` (the taxonomy strings MegaDetector's smoothing
parses) and per-detection ``classifications`` (``[[class_id, score], …]``, top-k);
every other field is kept as read, an earlier classifier's classifications included where
we did not classify. A flat CSV (one row per detection) is written beside it.
The format: docs/ecologists.md; the schema the output is checked against in the tests:
``schemas/megadetector-1.x.json`` (and MegaDetector's own validator).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
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
from taxoclip.runtime.images import auto_workers, describe_error, load_rgb
from taxoclip.runtime.rows import ERROR_KEY, LINEAGE_COLUMNS, PRED_FILENAME_KEY, PRED_SCORE_KEY
from taxoclip.taxonomy import RANK_NAMES

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).parent / "schemas" / "megadetector-1.x.json"
#: Detection categories left alone unless ``--detection-categories`` names them: people and
#: vehicles (MegaDetector's "person" and "vehicle", and other tools' words for them) and
#: "empty" boxes (animl's category 0). Every other category, however named, holds animals.
NOT_ANIMALS = frozenset(
    {
        "person",
        "people",
        "human",
        "humans",
        "vehicle",
        "vehicles",
        "car",
        "cars",
        "truck",
        "trucks",
        "empty",
        "blank",
    }
)
#: The format version the output declares at least: the fields we add exist from 1.2 on,
#: MegaDetector's validator reads 1.3 and later, and its converters write 1.4. A newer
#: version read is kept (1.5 and 1.6 only ask more of fields we do not write).
MIN_WRITTEN_VERSION = 4
#: ``classifier_metadata.typical_classification_threshold`` (a default for downstream tools)
#: without ``--deepest-rank``: a label that scores 0.5 is likelier than all others together,
#: and MegaDetector's smoothing ignores classifications below 0.5 by default.
TYPICAL_CLASSIFICATION_THRESHOLD = 0.5
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
    format_minor(data, path)
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
                raise _fail(
                    path,
                    f"{at}.category",
                    f"{det.get('category')!r} is not one of "
                    f"detection_categories ({', '.join(categories)})",
                )
            if not _is_number(det.get("conf")):
                raise _fail(path, f"{at}.conf", f"expected a number, got {det.get('conf')!r}")
            box = det.get("bbox")
            if not (isinstance(box, list) and len(box) == 4 and all(map(_is_number, box))):
                raise _fail(
                    path, f"{at}.bbox", f"expected [x_min, y_min, width, height], got {box!r}"
                )
    return data


def format_minor(data: dict, path: str | os.PathLike) -> int | None:
    """The minor version of ``info.format_version`` (4 for 1.4), given as text or, as some
    tools write it, a number; None when the file does not say (zamba writes ``"info": {}``).
    A version other than 1.x is refused: no MegaDetector format 2 or 3 exists (the newest
    is 1.6), so such a file follows another tool's rules, which we do not guess."""
    version = data["info"].get("format_version")
    if version is None:
        return None
    if isinstance(version, str):
        text = version.strip()
    else:
        text = str(version) if _is_number(version) else ""  # 1.4 → "1.4"
    match = re.fullmatch(r"1(?:\.([0-9]+))?", text)
    if match is None:
        raise _fail(
            Path(path),
            "info.format_version",
            f"expected 1.x (MegaDetector's formats are 1.0 to 1.6), got {version!r}",
        )
    return int(match.group(1) or 0)


def written_version(data: dict, path: str | os.PathLike) -> tuple[str, str | None]:
    """The ``format_version`` the output declares (text, at least 1.4) and a note when it
    differs from what the file said."""
    minor = format_minor(data, path)
    written = f"1.{max(minor or 0, MIN_WRITTEN_VERSION)}"
    said = data["info"].get("format_version")
    if said == written:
        return written, None
    if said is None:
        note = f"no info.format_version: read as 1.x, written as {written!r}"
    else:
        note = f"info.format_version {said!r} written as {written!r}"
    return written, f"--detections {path}: {note}"


def chosen_categories(
    data: dict, path: str | os.PathLike, names: Sequence[str] | None = None
) -> dict[str, str]:
    """The detection categories to crop, ``{id: name}``: those ``names`` gives (names in
    any case, or ids), else every category but :data:`NOT_ANIMALS`."""
    categories = {str(k): v for k, v in data["detection_categories"].items()}
    has = ", ".join(f"{k} {v!r}" for k, v in categories.items()) or "none"
    if names is None:
        chosen = {k: v for k, v in categories.items() if v.strip().lower() not in NOT_ANIMALS}
        if not chosen:
            raise InputError(
                f"--detections {path}: no animal category to classify (its "
                f"detection categories: {has}); --detection-categories "
                "chooses among them"
            )
        return chosen
    chosen, unknown = {}, []
    for name in names:
        key = name.strip().lower()
        ids = [k for k, v in categories.items() if v.strip().lower() == key]
        ids = ids or [k for k in categories if k == name.strip()]
        chosen.update({k: categories[k] for k in ids})
        if not ids:
            unknown.append(name)
    if unknown:
        raise UsageError(
            f"--detection-categories {', '.join(map(repr, unknown))}: not in "
            f"--detections {path}, whose detection categories are {has}"
        )
    return chosen


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
    box = (
        max(0, math.floor(x0)),
        max(0, math.floor(y0)),
        min(width, math.ceil(x1)),
        min(height, math.ceil(y1)),
    )
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        return None, f"box {list(bbox)} lies outside the image: not classified"
    return box, note


# --------------------------------------------------------------------------- labels


def label_of(row: dict) -> tuple[str, str | None, str]:
    """``(name, description, rank)`` of one prediction row: the custom label, or the
    taxon's scientific name (a binomial at species), its :func:`taxonomy_string` and the
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
    common = str(row.get("common_name") or "") if depth == 6 else ""
    return name, taxonomy_string(lineage[: depth + 1], common or name), RANK_NAMES[depth]


def taxonomy_string(lineage: Sequence[str], name: str) -> str:
    """A taxon as MegaDetector's smoothing parses a classification description
    (``megadetector.utils.wi_taxonomy_utils.clean_taxonomy_string``):
    the Wildlife Insights prediction string ``id;class;order;family;genus;epithet;name``,
    lower case (``;mammalia;carnivora;canidae;vulpes;vulpes;red fox``). It starts at class,
    so kingdom and phylum are left out (they stay in the CSV), and a taxon above class
    reads as non-taxonomic (``;;;;;;chordata``), as does one whose class is unknown."""
    ranks = [*lineage[2:7], *[""] * 5][:5]
    return ";".join(_token(t) for t in ["", *ranks, name])


def untaxonomic(name: str) -> str:
    """The description of a category without a lineage (a custom label, an earlier
    classifier's category that had none): a name and no taxonomy, as MegaDetector writes
    its own "animal" and "vehicle" strings."""
    return taxonomy_string([], name)


def _token(text: str) -> str:
    # ";" separates the parts and "|" separates several descriptions: neither may appear.
    return text.strip().lower().replace(";", ",").replace("|", "/")


@dataclass
class _Categories:
    """Our ``classification_categories``, numbered as labels are first seen from ``first``
    (after the ids an earlier classifier used, so that no id changes meaning in a file)."""

    first: int = 0
    names: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    _ids: dict[tuple[str, str | None], str] = field(default_factory=dict)

    def id_of(self, name: str, description: str | None) -> str:
        key = (name, description)
        if key not in self._ids:
            new = str(self.first + len(self._ids))
            self._ids[key] = new
            self.names[new] = name
            if description:
                self.descriptions[new] = description
        return self._ids[key]


def _first_free_id(data: dict) -> int:
    """The id after every classification category id the file holds."""
    ids = [int(k) for k in data.get("classification_categories") or {} if str(k).isdigit()]
    return max(ids, default=-1) + 1


def _merge_categories(data: dict, ours: _Categories) -> None:
    """The output's categories: the earlier classifier's that a detection still refers to
    (as read) and ours. The format wants descriptions for all categories or none: when any
    has one, those without get :func:`untaxonomic` ones."""
    earlier = data.pop("classification_categories", None) or {}
    earlier_descriptions = data.pop("classification_category_descriptions", None) or {}
    used = {
        str(c[0]) for _, det in _numbered_detections(data) for c in det.get("classifications") or []
    }
    names = {k: v for k, v in earlier.items() if k in used} | ours.names
    if not names:
        return
    described = {k: v for k, v in earlier_descriptions.items() if k in names}
    described |= ours.descriptions
    data["classification_categories"] = names
    if described:
        data["classification_category_descriptions"] = {
            k: described.get(k) or untaxonomic(name) for k, name in names.items()
        }


def _numbered_detections(data: dict):
    """``((image, detection), detection)`` for every detection of the file."""
    for i, image in enumerate(data["images"]):
        for j, det in enumerate(image.get("detections") or []):
            yield (i, j), det


def _write_classifications(data: dict, top: dict, ours: _Categories) -> None:
    """Each classified detection's ``classifications``: ours, in place of any earlier ones
    (a list is one classifier's ranking; two classifiers' scores in one would mean nothing)."""
    for (i, j), rows in top.items():
        classes = []
        for row in rows:
            name, description, _ = label_of(row)
            if name:
                classes.append(
                    [ours.id_of(name, description), round(float(row[PRED_SCORE_KEY]), 4)]
                )
        data["images"][i]["detections"][j]["classifications"] = classes


# --------------------------------------------------------------------------- the run


@dataclass
class DetectionsOutcome:
    """What ``--detections`` did: counts, failures (file → reason), notes, outputs."""

    n_images: int  # images with at least one detection to classify
    n_detections: int  # detections in the file
    n_classified: int
    failed: dict[str, str]
    notes: list[str]  # per box (the CSV's note column too)
    written: list[Path]
    rows: list[dict] = field(default_factory=list, repr=False)
    categories: list[str] = field(default_factory=list)  # detection categories cropped
    file_notes: list[str] = field(default_factory=list)  # about the file: version, earlier classes


@dataclass
class _Pending:
    image: int
    detection: int
    crop: Image.Image


#: What ``info`` says about a classifier; an earlier one's is kept in our metadata while
#: the output still holds some of its classifications.
_CLASSIFIER_INFO = ("classifier", "classification_completion_time", "classifier_metadata")


def classify_detections(
    md_path: str | os.PathLike,
    output: str | os.PathLike,
    predict_rows: PredictRows,
    *,
    image_root: str | os.PathLike | None = None,
    categories: Sequence[str] | None = None,
    threshold: float = 0.2,
    padding: float = 0.0,
    typical_threshold: float = TYPICAL_CLASSIFICATION_THRESHOLD,
    classifier_info: dict | None = None,
    chunk: int = CHUNK_CROPS,
    threads: int = 1,
) -> DetectionsOutcome:
    """Crop, classify and write back (``output`` .json and the flat .csv beside it).

    ``predict_rows(crops)`` classifies a list of PIL crops and returns pybioclip rows whose
    ``file_name`` is the crop's position — any of the predict modes (tree of life at a
    rank, ``--deepest-rank``, a region, custom labels). ``categories`` names the detection
    categories to crop (:func:`chosen_categories`). ``threads`` pictures are decoded at a
    time (JPEG decoding releases the GIL), each once for all its boxes.

    A picture that cannot be read is reported (CSV ``error`` column, ``failed``) and left
    as read: MegaDetector did process it, so its boxes (and an earlier classifier's
    classifications) stay, and the format's ``failure`` — "this file was not processed",
    with ``detections: null`` — would say otherwise and throw them away.
    """
    md_path, output = Path(md_path), Path(output)
    if output.suffix.lower() != ".json":
        raise UsageError(f"with --detections, --output must be a .json file (got {output})")
    if output.resolve() == md_path.resolve():
        raise UsageError(f"--output {output} would overwrite --detections; choose a new name")
    data = read_detections(md_path)
    chosen = chosen_categories(data, md_path, categories)
    version, version_note = written_version(data, md_path)
    root = Path(image_root) if image_root else md_path.parent
    notes: dict[tuple[int, int], str] = {}
    plan = _plan(data, chosen, threshold, root, notes)
    top, failed = _classify(data, plan, predict_rows, padding, notes, chunk, threads)

    earlier = {key for key, det in _numbered_detections(data) if det.get("classifications")}
    kept = earlier - top.keys()
    ours = _Categories(first=_first_free_id(data))
    _write_classifications(data, top, ours)
    _merge_categories(data, ours)
    info = data["info"]
    earlier_info = {k: info[k] for k in _CLASSIFIER_INFO if k in info}
    metadata = {
        **(classifier_info or {}),
        "typical_classification_threshold": typical_threshold,
        "detection_categories": list(chosen.values()),
        "detection_threshold": threshold,
        "crop_padding": padding,
        "n_classified": len(top),
        "n_failed": len(failed),
    }
    if kept and earlier_info:
        metadata["earlier_classifier"] = earlier_info
    info["format_version"] = version
    info["classifier"] = f"taxoclip {__version__}"
    info["classification_completion_time"] = time.strftime("%Y-%m-%d %H:%M:%S")
    info["classifier_metadata"] = metadata

    flat = flat_rows(data, top, notes, failed)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    csv_path = output.with_suffix(".csv")
    write_text_atomic(csv_path, rows_to_csv(flat))
    file_notes = [version_note] if version_note else []
    if earlier:
        who = earlier_info.get("classifier") or "an earlier classifier"
        file_notes.append(
            f"--detections {md_path} holds {who}'s classifications: replaced on "
            f"{len(earlier) - len(kept)}, kept on {len(kept)} detections (those not classified "
            f"here); taxoclip's categories are numbered from {ours.first}"
        )
    box_notes = [
        f"{data['images'][i]['file']} detection {j}: {text}"
        for (i, j), text in sorted(notes.items())
        if "clipped" in text
        or "outside" in text
        or "empty box" in text
        or "crop not" in text
        or "video" in text
    ]
    n_detections = sum(1 for _ in _numbered_detections(data))
    return DetectionsOutcome(
        n_images=len(plan),
        n_detections=n_detections,
        n_classified=len(top),
        failed=failed,
        notes=box_notes,
        written=[output, csv_path],
        rows=flat,
        categories=list(dict.fromkeys(chosen.values())),
        file_notes=file_notes,
    )


def _plan(
    data: dict, chosen: dict[str, str], threshold: float, root: Path, notes: dict
) -> list[tuple[int, list[int], Path]]:
    """``(image, its boxes to classify, path)`` per picture with a box to classify; why
    each other box is left alone goes into ``notes``."""
    plan = []
    for i, image in enumerate(data["images"]):
        wanted = []
        for j, det in enumerate(image.get("detections") or []):
            category = str(det["category"])
            if category not in chosen:
                notes[(i, j)] = f"category {data['detection_categories'][category]}: not classified"
            elif det["conf"] < threshold:
                notes[(i, j)] = f"conf {det['conf']} below --detection-threshold {threshold}"
            elif _is_video(image):
                notes[(i, j)] = "a video's frame: not classified (taxoclip reads still pictures)"
            else:
                wanted.append(j)
        if wanted:
            path = Path(image["file"])
            plan.append((i, wanted, path if path.is_absolute() else root / path))
    return plan


def _is_video(image: dict) -> bool:
    """The format gives videos (only) a frame rate and the frames processed."""
    return "frame_rate" in image or "frames_processed" in image


def _classify(
    data: dict,
    plan: list,
    predict_rows: PredictRows,
    padding: float,
    notes: dict,
    chunk: int,
    threads: int,
) -> tuple[dict[tuple[int, int], list[dict]], dict[str, str]]:
    """Prediction rows per ``(image, detection)`` classified, and the pictures that could
    not be read (file → reason)."""
    top: dict[tuple[int, int], list[dict]] = {}
    failed: dict[str, str] = {}
    pending: list[_Pending] = []

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

    for (i, wanted, path), loaded in zip(
        plan, _decoded([p for _, _, p in plan], threads), strict=True
    ):
        image = data["images"][i]
        picture, reason = loaded
        if picture is None:  # this image's failure, reported; the others go on
            failed[image["file"]] = reason
            log.warning("skipping %s: %s", path, reason)
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
    return top, failed


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
            row = {
                "file": image["file"],
                "detection": j,
                "category": data["detection_categories"][str(det["category"])],
                "conf": det["conf"],
                "bbox_x": x,
                "bbox_y": y,
                "bbox_w": w,
                "bbox_h": h,
            }
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
        raise InputError(
            f"{root}: not a folder (with --detections, give the folder MegaDetector ran on)"
        )
    mode = (
        "custom labels"
        if config.cls
        else "bins"
        if config.bins
        else f"deepest rank >= {config.deepest_rank}"
        if config.deepest_rank is not None
        else f"tree of life, {config.rank}"
    )
    info = {
        "model": config.model,
        "pretrained": config.pretrained,
        "index": config.index,
        "mode": mode,
        "region": config.region,
        "deny": config.deny,
    }
    # --deepest-rank T stops at the rank where a taxon holds T: the threshold the user chose
    typical = (
        TYPICAL_CLASSIFICATION_THRESHOLD if config.deepest_rank is None else config.deepest_rank
    )
    outcome = classify_detections(
        config.detections,
        config.output,
        predict_rows,
        image_root=root,
        categories=config.detection_categories,
        threshold=config.detection_threshold,
        padding=config.crop_padding,
        typical_threshold=typical,
        classifier_info={k: v for k, v in info.items() if v is not None},
        threads=max(1, auto_workers(config.workers)),
    )
    log_record.finish(
        n_images=outcome.n_images,
        n_detections=outcome.n_detections,
        n_classified=outcome.n_classified,
        n_failed=len(outcome.failed),
        failed=outcome.failed,
        output=[str(p) for p in outcome.written],
    )
    shown = outcome.notes[:EXAMPLE_NOTES]
    more = len(outcome.notes) - len(shown)
    box_notes = [f"taxoclip predict: {n}" for n in [*outcome.file_notes, *shown]]
    if more > 0:
        box_notes.append(f"taxoclip predict: … and {more} more notes (see the note column)")
    names = outcome.categories
    kinds = (
        "/".join(names) + " detections"
        if len(names) <= 3
        else f"detections of {len(names)} categories"
    )
    summary = [
        f"classified {outcome.n_classified} {kinds} (of {outcome.n_detections} in "
        f"{config.detections}) in {outcome.n_images - len(outcome.failed)} images; wrote "
        + " and ".join(map(str, outcome.written))
    ]
    return PredictResult(
        n_images=outcome.n_images,
        failed=sorted(outcome.failed),
        rows=outcome.rows,
        summary=summary,
        notes=[*notes, *box_notes],
    )
