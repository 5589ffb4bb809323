"""MegaDetector's own verdict on batch-output files, for the tests: its validator
(``megadetector.postprocessing.validate_batch_results``) and the image- and sequence-level
classification smoothing of ``megadetector.postprocessing.classification_postprocessing``.

The ``megadetector`` package lives apart from the venv (``make venv`` installs it with
``pip --no-deps --target .venv/compat/megadetector``: its full requirements pull another
torch), so it runs in a subprocess with that folder first on the path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

COMPAT_MD = Path(sys.prefix) / "compat" / "megadetector"
MISSING = f"{COMPAT_MD} missing: run `make venv` (pip install --no-deps --target … megadetector)"

# Smoothing gets one sequence per folder and the detection categories we classified (its
# default, ["animal"], is a KeyError on files without a category named so).
PROBE = textwrap.dedent(
    """
    import contextlib, io, json, os, sys
    from megadetector.postprocessing import classification_postprocessing as smoothing
    from megadetector.postprocessing.validate_batch_results import validate_batch_results

    def smooth(path, categories):
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if "classification_categories" not in data:
            return {"image": "no classifications", "sequence": "no classifications"}
        sequences = [{"file_name": im["file"], "seq_id": os.path.dirname(im["file"])}
                     for im in data["images"]]
        verdicts = {}
        for level in ("image", "sequence"):
            options = smoothing.ClassificationSmoothingOptions()
            options.detection_category_names_to_smooth = categories
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    if level == "image":
                        smoothing.smooth_classification_results_image_level(path, None, options)
                    else:
                        smoothing.smooth_classification_results_sequence_level(
                            path, sequences, None, options)
                verdicts[level] = "ok"
            except Exception as exc:
                verdicts[level] = f"{type(exc).__name__}: {exc}"
        return verdicts

    verdicts = []
    for path, categories in json.loads(sys.argv[1]):
        with contextlib.redirect_stdout(io.StringIO()):
            checked = validate_batch_results(path)["validation_results"]
        verdicts.append({"errors": checked["errors"], "warnings": checked["warnings"],
                         **smooth(path, categories)})
    print(json.dumps(verdicts))
    """
)


def available() -> bool:
    return (COMPAT_MD / "megadetector").is_dir()


def verdicts(*files: tuple[Path, list[str]]) -> list[dict]:
    """Per ``(file, detection category names to smooth)``: the validator's ``errors`` and
    ``warnings``, and ``"ok"`` or the error of smoothing at ``image`` and ``sequence`` level."""
    path = [str(COMPAT_MD), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
    request = json.dumps([[str(p), categories] for p, categories in files])
    result = subprocess.run(
        [sys.executable, "-c", PROBE, request],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,  # a hang guard on a loaded machine
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_accepts(*paths: Path) -> None:
    """Each of our outputs passes MegaDetector's validator without an error and its
    smoothing runs on it. The one warning allowed is about a non-standard key at the top
    level: we add none, so it is one the file read had (the tests' files carry one).
    Checked where the package is installed (``make venv``); elsewhere only our schema
    checks them, and the real-samples test says it skipped."""
    if not available():
        return
    files = []
    for path in paths:
        metadata = json.loads(path.read_text(encoding="utf-8"))["info"]["classifier_metadata"]
        files.append((path, metadata["detection_categories"]))
    got = verdicts(*files)
    for verdict in got:  # (a helper: pytest does not spell out its asserts, so they say)
        warnings = [w for w in verdict.pop("warnings") if "non-standard key" not in w]
        assert (verdict, warnings) == ({"errors": [], "image": "ok", "sequence": "ok"}, []), got
