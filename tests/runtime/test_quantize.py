"""int8 that agrees: static QDQ quantisation calibrated on images, sensitive nodes fp32."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from taxoclip.runtime.export import sample_images
from taxoclip.runtime.onnx import IMAGE_ONNX, IMAGE_ONNX_INT8, OnnxImageEncoder
from taxoclip.runtime.quantize import sensitive_nodes


@pytest.fixture(scope="module")
def calibrated_t32(model_t32, tmp_path_factory):
    """The tiny model exported with --int8, calibrated on a folder of images."""
    from taxoclip.runtime.config import ExportOnnxConfig
    from taxoclip.runtime.export import export_onnx

    root = tmp_path_factory.mktemp("calib")
    images = root / "images"
    images.mkdir()
    for i, image in enumerate(sample_images(24, seed=11)):
        image.save(images / f"{i:02d}.png")
    out = root / "t32q"
    export_onnx(
        ExportOnnxConfig(
            model=str(model_t32), out=str(out), int8=True, text=False, images=str(images)
        )
    )
    return out


def test_sensitive_nodes_are_found_by_structure(calibrated_t32):
    import onnx

    roles = sensitive_nodes(calibrated_t32 / IMAGE_ONNX)
    layers = 4  # taxoclip-vit-t32
    assert len(roles["patch_embed"]) == 1
    assert len(roles["projection"]) == 1
    assert len(roles["attention_logits"]) == 2 * layers  # QKᵀ and softmax·V
    assert len(roles["attention_projections"]) == 2 * layers  # qkv and out projection
    assert all("out_proj" in n for n in roles["attention_projections"][1::2])
    weight_matmuls = [
        n for n in onnx.load(str(calibrated_t32 / IMAGE_ONNX)).graph.node if n.op_type == "MatMul"
    ]
    flagged = {n for names in roles.values() for n in names}
    mlp = [n.name for n in weight_matmuls if n.name not in flagged]
    assert len(mlp) == 2 * layers and all("/mlp/" in n for n in mlp)


def test_static_int8_is_calibrated_and_keeps_sensitive_nodes_fp32(calibrated_t32):
    import onnx

    record = json.loads((calibrated_t32 / "export.json").read_text())
    quant = record["quantization"]
    assert quant["method"] == "onnxruntime.quantization.quantize_static"
    assert quant["weight_type"] == "QInt8" and quant["image"]["method"] == "static"
    assert quant["files"] == [IMAGE_ONNX_INT8]
    image = quant["image"]
    assert image["format"] == "QDQ" and image["per_channel"] is True
    assert image["calibration_images"] == 24 and "24 images from" in image["calibration"]
    assert image["fp32_roles"] == {
        "patch_embed": 1,
        "projection": 1,
        "attention_logits": 8,
        "attention_projections": 8,
    }
    ops = Counter(n.op_type for n in onnx.load(str(calibrated_t32 / IMAGE_ONNX_INT8)).graph.node)
    assert ops["Conv"] == 1 and ops["LayerNormalization"] == 10 and ops["Softmax"] == 4
    assert ops["QuantizeLinear"] == 8  # the inputs of the 8 MLP MatMuls, nothing else
    # measured on this random model: min cosine 0.99998 on the calibration images
    for mode in ("crop", "squash"):
        assert record["agreement"][f"image_int8_{mode}"]["min_cosine"] > 0.9998


def test_static_int8_agrees_with_fp32_and_ignores_batch_mates(calibrated_t32):
    fp32 = OnnxImageEncoder(calibrated_t32)
    int8 = OnnxImageEncoder(calibrated_t32, int8=True)
    images = sample_images(12, seed=7)  # not the calibration images
    ref, got = fp32.encode(images), int8.encode(images)
    assert (ref * got).sum(1).min() > 0.9998
    # fixed activation scales: an image's features do not depend on its batch
    alone = np.concatenate([int8.encode([im]) for im in images[:3]])
    np.testing.assert_allclose(alone, got[:3], atol=1e-5)


def test_int8_without_calibration_images_is_dynamic(exported_t32):
    record = json.loads((exported_t32[0] / "export.json").read_text())
    # the export cache never lets auto pick a batch-dependent (dynamic) int8 by this name
    assert record["quantization"]["method"] == "onnxruntime.quantization.quantize_dynamic"
    assert record["quantization"]["image"]["method"] == "dynamic"
    assert record["quantization"]["image"]["calibration"].startswith("none (no --images)")
