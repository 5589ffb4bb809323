"""int8 ONNX towers that agree with fp32 (issue #20): static QDQ quantisation of the
image tower, calibrated on sample images, with its sensitive nodes kept in fp32.

``quantize_image`` (``taxoclip export onnx --int8``) writes the int8 image tower:

- **static** (when calibration images are given: ``--images DIR``, up to 64 spread over
  it): ``onnxruntime.quantization.quantize_static`` in QDQ format, activation scales fixed
  from the calibration images (so a feature never depends on its batch-mates), weights
  int8 per output channel, MatMul outputs left fp32 (ONNX Runtime fuses each into one
  ``MatMulIntegerToFloat``). Only the MLP's two MatMuls per block are int8: the patch
  embedding (Conv), the final projection, the attention's qkv and out projections, QKᵀ
  and softmax·V, LayerNorm, Softmax and GELU stay fp32 — :func:`sensitive_nodes` finds
  them by graph structure, not by name. (With the attention projections int8 as well,
  top-1 agreement with torch fell to 97 % on a trained model.)
- **dynamic** (no calibration images): ``quantize_dynamic``, per-channel int8 weights,
  activation ranges per batch, the same nodes fp32.

Each returns the record that ``export.json`` keeps under ``quantization.image``. The
text tower stays dynamically quantised by the export (every MatMul).

Measured agreement and speed on trained models: docs/benchmarks.md ("int8 that agrees"),
``bench/int8_agreement.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .onnx import import_onnxruntime

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 16
CALIBRATION_IMAGES = 64
WEIGHT_OPS = ("MatMul", "Gemm")


@contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization logs its pre-processing advice on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


SHAPE_OPS = frozenset(
    {
        "Reshape",
        "Transpose",
        "Cast",
        "Squeeze",
        "Unsqueeze",
        "Identity",
        "Slice",
        "Split",
        "Gather",
        "Flatten",
    }
)


def sensitive_nodes(model_path: str | Path) -> dict[str, list[str]]:
    """Nodes to keep in fp32, by role, found by graph structure (not by name):

    - ``patch_embed``: every Conv;
    - ``projection``: weight MatMul/Gemm after the last LayerNorm (the final projection);
    - ``attention_logits``: MatMuls whose two inputs are both activations (QKᵀ, softmax·V);
    - ``attention_projections``: weight MatMuls that feed those (the qkv projection) or are
      fed by them (the out projection) — per-tensor int8 activations cost most agreement
      there (docs/benchmarks.md), so only the MLP's MatMuls are quantised.
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    nodes = list(graph.node)
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in nodes if node.op_type == "Constant" for out in node.output}
    producer = {out: node for node in nodes for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def weighted(node) -> bool:
        return node.op_type in WEIGHT_OPS and any(n in constants for n in node.input[:2])

    def act_by_act(node) -> bool:
        return node.op_type in WEIGHT_OPS and not weighted(node)

    def fed_by_attention(node) -> bool:  # walk up through shape ops from the data input
        current = producer.get(node.input[0])
        while current is not None and current.op_type in SHAPE_OPS:
            current = producer.get(current.input[0]) if current.input else None
        return current is not None and act_by_act(current)

    def feeds_attention(node) -> bool:  # reaches QKᵀ or softmax·V before a LayerNorm
        seen, frontier = set(), list(node.output)
        while frontier:
            for nxt in consumers.get(frontier.pop(), []):
                if act_by_act(nxt):
                    return True
                if nxt.name in seen or weighted(nxt) or nxt.op_type == "LayerNormalization":
                    continue
                seen.add(nxt.name)
                frontier.extend(nxt.output)
        return False

    roles: dict[str, list[str]] = {
        "patch_embed": [],
        "projection": [],
        "attention_logits": [],
        "attention_projections": [],
    }
    last_norm = max(
        (i for i, n in enumerate(nodes) if n.op_type == "LayerNormalization"), default=-1
    )
    for i, node in enumerate(nodes):
        if node.op_type == "Conv":
            roles["patch_embed"].append(node.name)
        elif act_by_act(node):
            roles["attention_logits"].append(node.name)
        elif weighted(node):
            if i > last_norm:
                roles["projection"].append(node.name)
            elif fed_by_attention(node) or feeds_attention(node):
                roles["attention_projections"].append(node.name)
    return roles


def quantize_dynamic_file(
    source: Path, target: Path, *, exclude: Sequence[str] = (), per_channel: bool = False
) -> dict[str, Any]:
    """``quantize_dynamic`` with int8 weights; returns the record for export.json."""
    import_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=True,  # 7-bit weights: see quantize_static_file
            nodes_to_exclude=list(exclude),
        )
    return {
        "method": "dynamic",
        "function": "onnxruntime.quantization.quantize_dynamic",
        "weight_type": "QInt8",
        "reduce_range": True,
        "per_channel": per_channel,
        "activations": "uint8, range per batch",
        "fp32_nodes": len(exclude),
    }


def _batches(input_name: str, pixels: np.ndarray, batch: int) -> list[dict[str, np.ndarray]]:
    return [
        {input_name: np.ascontiguousarray(pixels[i : i + batch], dtype=np.float32)}
        for i in range(0, len(pixels), batch)
    ]


def quantize_static_file(
    source: Path,
    target: Path,
    pixels: np.ndarray,
    *,
    exclude: Sequence[str] = (),
    calibrate: str = "MinMax",
    symmetric_activations: bool = False,
    per_channel: bool = True,
    op_types: Sequence[str] = WEIGHT_OPS,
    quantize_outputs: bool = False,
    batch: int = CALIBRATION_BATCH,
) -> dict[str, Any]:
    """Static QDQ quantisation calibrated on ``pixels``; returns the export.json record."""
    import_onnxruntime()
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        """Preprocessed (N, 3, S, S) pixels, in batches."""

        def __init__(self) -> None:
            input_name = onnx.load(str(source), load_external_data=False).graph.input[0].name
            self._batches = iter(_batches(input_name, pixels, batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    reader = Reader()
    activation = QuantType.QInt8 if symmetric_activations else QuantType.QUInt8
    with _quiet():
        quantize_static(
            str(source),
            str(target),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            per_channel=per_channel,
            activation_type=activation,
            weight_type=QuantType.QInt8,
            # 7-bit weights: on x86 CPUs without VNNI (AVX2 only, as on this project's
            # CI box) ONNX Runtime's u8s8 kernels use VPMADDUBSW, whose 16-bit sums
            # saturate with full-range weights; measured here, min cosine to fp32 fell
            # from >0.9998 to 0.9983-0.9987 (tests/runtime/test_quantize.py) without it.
            reduce_range=True,
            nodes_to_exclude=list(exclude),
            calibrate_method=CalibrationMethod[calibrate],
            extra_options={
                "ActivationSymmetric": symmetric_activations,
                "WeightSymmetric": True,
                "OpTypesToExcludeOutputQuantization": list(op_types)
                if not quantize_outputs
                else [],
            },
        )
    return {
        "method": "static",
        "function": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "weight_type": "QInt8",
        "reduce_range": True,
        "per_channel": per_channel,
        "activations": f"{'int8 symmetric' if symmetric_activations else 'uint8'}, "
        f"fixed ranges ({calibrate})",
        "op_types": list(op_types),
        "calibration_images": int(len(pixels)),
        "fp32_nodes": len(exclude),
    }


def quantize_image(
    source: Path, target: Path, pixels: np.ndarray | None, described: str = ""
) -> dict[str, Any]:
    """The int8 image tower: static QDQ calibrated on ``pixels`` (preprocessed, as the
    encoder feeds them), dynamic when there are none; sensitive nodes stay fp32."""
    roles = sensitive_nodes(source)
    exclude = [name for names in roles.values() for name in names]
    if pixels is None or len(pixels) == 0:
        record = quantize_dynamic_file(source, target, exclude=exclude, per_channel=True)
    else:
        record = quantize_static_file(source, target, pixels, exclude=exclude)
    record["fp32_roles"] = {role: len(names) for role, names in roles.items()}
    record["calibration"] = described
    return record


def calibration_pixels(
    folder: Path, images: str | None, limit: int = CALIBRATION_IMAGES
) -> tuple[np.ndarray | None, str]:
    """Up to ``limit`` images spread evenly over ``images`` (a folder, searched
    recursively, or one file), preprocessed as the exported folder's encoder does."""
    from PIL import Image

    from .images import IMAGE_SUFFIXES
    from .onnx import CONFIG_FILE, read_json
    from .preprocess import Preprocess

    if not images:
        return None, "none (no --images): dynamic quantisation"
    root = Path(images)
    files = sorted(
        p
        for p in (root.rglob("*") if root.is_dir() else [root])
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if len(files) > limit:
        files = [files[int(i * len(files) / limit)] for i in range(limit)]
    loaded = []
    for path in files:
        try:
            with Image.open(path) as opened:
                loaded.append(opened.convert("RGB"))
        except OSError as exc:
            log.warning("skipping calibration image %s: %s", path, exc)
    if not loaded:
        return None, f"none readable in {images}: dynamic quantisation"
    config = read_json(Path(folder) / CONFIG_FILE, "model folder")
    pre = Preprocess.from_cfg(dict(config.get("preprocess_cfg") or {}))
    return pre.batch(loaded), f"{len(loaded)} images from {images}"


def quantize_image_tower(folder: Path, images: str | None) -> dict[str, Any]:
    """``export onnx --int8``: the folder's image tower to int8, calibrated on ``images``
    (``--images``); the record for export.json's ``quantization``."""
    from .onnx import IMAGE_ONNX, IMAGE_ONNX_INT8

    pixels, described = calibration_pixels(folder, images)
    return quantize_image(
        Path(folder) / IMAGE_ONNX, Path(folder) / IMAGE_ONNX_INT8, pixels, described
    )
