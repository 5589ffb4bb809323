"""``taxoclip export onnx``: the folder, its record, and its agreement with torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from taxoclip.errors import InputError, UsageError
from taxoclip.models import load_model
from taxoclip.runtime.export import sample_images
from taxoclip.runtime.onnx import (
    IMAGE_ONNX,
    ExportedModel,
    OnnxImageEncoder,
    OnnxTextEncoder,
    Preprocess,
)


def test_export_writes_a_normal_model_folder_plus_onnx(exported_t32, model_t32):
    out, result = exported_t32
    for name in ("open_clip_config.json", "open_clip_model.safetensors", "image_encoder.onnx",
                 "image_encoder.int8.onnx", "text_encoder.onnx", "text_encoder.int8.onnx",
                 "tokenizer.json", "export.json"):  # fmt: skip
        assert (out / name).is_file(), name
    # still an open_clip model folder, with the source's weights
    again, source = load_model(out), load_model(model_t32)
    for (name, a), (_, b) in zip(again.model.state_dict().items(),
                                 source.model.state_dict().items(), strict=True):  # fmt: skip
        assert torch.equal(a, b), name
    record = json.loads((out / "export.json").read_text())
    assert record["opset"] == 18 and record["embed_dim"] == 128 and record["image_size"] == 32
    assert record["quantization"]["weight_type"] == "QInt8"
    assert record["logit_scale"] == pytest.approx(source.model.logit_scale.exp().item())
    agreement = record["agreement"]
    for mode in ("crop", "squash"):
        assert agreement[f"image_fp32_{mode}"]["min_cosine"] > 0.99999
        assert agreement[f"image_fp32_{mode}"]["max_abs_diff"] < 1e-4
        assert agreement[f"image_int8_{mode}"]["min_cosine"] > 0.99
    assert agreement["preprocess_crop_max_abs_diff"] < 1e-5
    assert agreement["preprocess_squash_max_abs_diff"] < 1e-3
    assert agreement["text_fp32_min_cosine"] > 0.99999
    assert result.agreement == agreement


def test_onnx_features_match_torch(exported_t32):
    out, _ = exported_t32
    loaded = load_model(out)
    images = sample_images(6, seed=5)
    encoder = OnnxImageEncoder(out)
    with torch.inference_mode():
        pixels = torch.stack([loaded.preprocess_val(im) for im in images])
        reference = loaded.model.encode_image(pixels).numpy()
    np.testing.assert_allclose(encoder.encode(images, normalize=False), reference, atol=1e-4)
    assert np.allclose(np.linalg.norm(encoder.encode(images), axis=1), 1.0, atol=1e-5)


def test_preprocess_equals_open_clip_and_pybioclip_squash(model_t32):
    from taxoclip.runtime.torch_encoder import SquashTransform

    loaded = load_model(model_t32)
    crop = Preprocess.from_cfg(loaded.preprocess_cfg)
    squash = Preprocess.from_cfg(loaded.preprocess_cfg, squash=True)
    reference_squash = SquashTransform(32, crop.mean, crop.std)
    for image in sample_images(12, seed=1):
        np.testing.assert_allclose(crop(image), loaded.preprocess_val(image).numpy(), atol=1e-6)
        np.testing.assert_allclose(squash(image), reference_squash(image).numpy(), atol=1e-3)
    grey = Image.new("L", (50, 20), 128)  # converted to RGB first, as every path does
    assert crop(grey).shape == (3, 32, 32)


def test_torch_free_tokenizer_equals_open_clip(exported_t32, model_t32):
    out, _ = exported_t32
    tokenizer = load_model(model_t32).tokenizer
    texts = ["a photo of a Corvus corax.", "Ünïcode café — naïve façade &amp; <b>tags</b>",
             "   many    spaces ", "123 4567 x", "a " * 80, ""]  # fmt: skip
    ours = OnnxTextEncoder(ExportedModel.open(out)).tokenize(texts)
    assert np.array_equal(ours, tokenizer(texts).numpy())


def test_trimmed_text_tower_equals_encode_text(model_t32):
    from taxoclip.runtime.text_torch import encode_text_trimmed

    loaded = load_model(model_t32)
    tokens = loaded.tokenizer(["a bird", "a photo of the small red fox in the snow", "x"])
    with torch.inference_mode():
        full = loaded.model.encode_text(tokens)
    torch.testing.assert_close(encode_text_trimmed(loaded.model, tokens), full, atol=1e-5,
                               rtol=1e-5)  # fmt: skip


def test_class_texts_agree_across_text_runtimes(exported_t32):
    """Index columns: the fast torch path and the ONNX text tower against the old recipe."""
    import torch.nn.functional as F

    from taxoclip.runtime.templates import OPENAI_IMAGENET_TEMPLATES as T
    from taxoclip.runtime.text import class_text_matrix
    from taxoclip.runtime.text_torch import TorchTextEncoder

    out, _ = exported_t32
    loaded = load_model(out)
    labels = ["Animalia Chordata Aves Passeriformes Corvidae Corvus corax common raven",
              "red fox", "a very long label " * 6]  # fmt: skip
    with torch.inference_mode():
        texts = [t.format(label) for label in labels for t in T]
        feats = F.normalize(loaded.model.encode_text(loaded.tokenizer(texts)).float(), dim=-1)
        old = F.normalize(feats.view(len(labels), len(T), -1).mean(1), dim=-1).T.numpy()
    exported = ExportedModel.open(out)
    fast = class_text_matrix(TorchTextEncoder(loaded.model, loaded.tokenizer), labels)
    onnx = class_text_matrix(OnnxTextEncoder(exported), labels)
    int8 = class_text_matrix(OnnxTextEncoder(exported, int8=True), labels)
    assert (old * fast).sum(0).min() > 0.99999
    assert (old * onnx).sum(0).min() > 0.99999
    assert (old * int8).sum(0).min() > 0.99


# --------------------------------------------------------------------------- bad input


def _copy(out, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(out, target)
    return target


def test_missing_onnx_file_is_a_clear_input_error(exported_t32, tmp_path):
    folder = _copy(exported_t32[0], tmp_path)
    (folder / IMAGE_ONNX).unlink()
    with pytest.raises(InputError, match="missing image_encoder.onnx"):
        OnnxImageEncoder(folder)
    other = _copy(exported_t32[0], tmp_path / "b")
    (other / "image_encoder.int8.onnx").unlink()
    with pytest.raises(InputError, match=r"missing image_encoder.int8.onnx \(export with --int8\)"):
        OnnxImageEncoder(other, int8=True)


def test_onnx_file_that_does_not_match_the_config(exported_t32, tmp_path):
    folder = _copy(exported_t32[0], tmp_path)
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"]["embed_dim"] = 64
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="D=128 features but the model config says embed_dim=64"):
        OnnxImageEncoder(folder)
    config["model_cfg"]["embed_dim"] = 128
    config["preprocess_cfg"]["size"] = 64
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(
        InputError, match=r"input has shape \(B, 3, 32, 32\).*wants \(B, 3, 64, 64\)"
    ):
        OnnxImageEncoder(folder)
    (folder / IMAGE_ONNX).write_bytes(b"not an onnx file")
    with pytest.raises(InputError, match="cannot load"):
        OnnxImageEncoder(folder)


def test_not_an_exported_folder(model_t32):
    with pytest.raises(InputError, match="not an exported model folder"):
        OnnxImageEncoder(model_t32)


def test_missing_onnxruntime_names_the_extra(exported_t32):
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from taxoclip.cli import main\n"
        f"raise SystemExit(main(['embed', {str(exported_t32[0] / 'x.png')!r}, '--model', "
        f"{str(exported_t32[0])!r}, '--output', 'never.npy', '-q']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == UsageError.exit_code, done.stderr
    assert "pip install 'taxoclip[onnx]'" in done.stderr


def test_export_cli_refuses_a_bad_index(model_t32, tmp_path):
    from taxoclip.cli import main

    (tmp_path / "idx").mkdir()
    np.save(tmp_path / "idx" / "txt_emb_species.npy", np.zeros((64, 3), np.float32))
    code = main(["export", "onnx", "--model", str(model_t32), "--out", str(tmp_path / "x"),
                 "--index", str(tmp_path / "idx"), "--no-text"])  # fmt: skip
    assert code == InputError.exit_code
