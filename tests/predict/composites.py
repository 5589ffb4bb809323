"""SynthToL camera-trap pictures with MegaDetector-style boxes (for tests and the docs).

Each picture pastes several SynthToL test images (scaled ``scale`` times) side by side at
random places in their own slots on a plain background; ``md.json`` holds their boxes as MegaDetector batch output 1.x
(plus a person box and a faint animal box below the typical threshold), ``truth.csv`` the
species of every animal box.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from PIL import Image


def make_camera_trap(
    synth: Path,
    out: Path,
    pictures: int = 4,
    per_picture: int = 3,
    scale: int = 2,
    seed: int = 0,
    extras: bool = True,
) -> tuple[Path, Path]:
    """Write ``out/images/*.jpg``, ``out/md.json`` and ``out/truth.csv``; returns
    ``(md.json, truth.csv)``. Boxes are rounded to 4 decimals, as MegaDetector writes."""
    rng = random.Random(seed)
    with (synth / "test" / "metadata.csv").open(newline="") as handle:
        tests = list(csv.DictReader(handle))
    rng.shuffle(tests)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, truth, used = [], [], 0
    first = Image.open(synth / "test" / tests[0]["filepath"])
    side = max(first.size) * scale
    canvas_size = (int(per_picture * side * 1.5), side * 2)  # one slot per animal, no overlap
    slot = canvas_size[0] // per_picture
    for p in range(pictures):
        colour = (rng.randrange(60, 120), rng.randrange(90, 140), 70)
        canvas = Image.new("RGB", canvas_size, colour)
        detections = []
        for k in range(per_picture):
            row = tests[used % len(tests)]
            used += 1
            animal = Image.open(synth / "test" / row["filepath"]).convert("RGB")
            animal = animal.resize((animal.width * scale, animal.height * scale))
            x = k * slot + rng.randrange(0, slot - animal.width + 1)
            y = rng.randrange(0, canvas_size[1] - animal.height + 1)
            canvas.paste(animal, (x, y))
            bbox = [
                round(x / canvas_size[0], 4),
                round(y / canvas_size[1], 4),
                round(animal.width / canvas_size[0], 4),
                round(animal.height / canvas_size[1], 4),
            ]
            detections.append(
                {"category": "1", "conf": round(rng.uniform(0.6, 0.99), 3), "bbox": bbox}
            )
            truth.append(
                {
                    "file": f"images/cam{p:03d}.jpg",
                    "detection": len(detections) - 1,
                    "species": row["species"],
                    "source": row["filepath"],
                }
            )
        if extras:
            detections.append({"category": "2", "conf": 0.81, "bbox": [0.0, 0.0, 0.1, 0.2]})
            detections.append({"category": "1", "conf": 0.05, "bbox": [0.9, 0.9, 0.1, 0.1]})
        canvas.save(out / "images" / f"cam{p:03d}.jpg", quality=95)
        images.append(
            {
                "file": f"images/cam{p:03d}.jpg",
                "max_detection_conf": max(d["conf"] for d in detections),
                "detections": detections,
            }
        )
    md = {
        "images": images,
        "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
        "info": {
            "format_version": "1.4",
            "detector": "md_v5a.0.0.pt",
            "detection_completion_time": "2026-01-01 12:00:00",
            "detector_metadata": {
                "megadetector_version": "v5a.0.0",
                "typical_detection_threshold": 0.2,
                "conservative_detection_threshold": 0.05,
            },
        },
    }
    md_path, truth_path = out / "md.json", out / "truth.csv"
    md_path.write_text(json.dumps(md, indent=1))
    with truth_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "detection", "species", "source"])
        writer.writeheader()
        writer.writerows(truth)
    return md_path, truth_path


if __name__ == "__main__":  # python -m tests.predict.composites SYNTH_DIR OUT_DIR [PICTURES]
    import sys

    made = make_camera_trap(
        Path(sys.argv[1]),
        Path(sys.argv[2]),
        pictures=int(sys.argv[3]) if len(sys.argv) > 3 else 6,
        scale=3,
    )
    print(f"wrote {made[0]} and {made[1]}")
