"""``taxoclip export onnx``: a model folder plus its towers in ONNX, and how well they agree.

Writes into ``--out`` an ordinary open_clip model folder (``open_clip_config.json`` +
``open_clip_model.safetensors``, still loadable by open_clip and every taxoclip command)
plus ``image_encoder.onnx`` (``--int8``: also ``image_encoder.int8.onnx``, static QDQ
int8 calibrated on ``--images``: :mod:`.quantize`), the text tower ``text_encoder.onnx``
(+ int8, dynamically quantised) with ``tokenizer.json`` when the tokenizer is open_clip's
BPE one, the text tower on a key/value cache ``text_step.onnx`` (fp32;
:class:`~.text_torch.TextStep`, with which an index encodes shared caption prefixes once)
where its blocks allow, and ``export.json``: versions, opset, quantisation, preprocessing,
``logit_scale`` and the measured agreement with the torch model (max |Δ| and min cosine
of image features on sample images, top-1 agreement against ``--index`` when given, min
cosine of text features, whole captions and through the prefix cache).

Export uses the TorchScript exporter (``dynamo=False``, opset 18), which handles
open_clip's ViTs; batch (and, for text, sequence and past lengths) are dynamic axes.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from taxoclip import __version__
from taxoclip.errors import InputError, UsageError
from taxoclip.files import write_text_atomic
from taxoclip.models import load_model, save_model

from .cache import OPSET  # one definition: the export cache's key holds it
from .config import ExportOnnxConfig, ExportOnnxResult
from .images import IMAGE_SUFFIXES
from .index import TextIndex
from .onnx import (
    EXPORT_FILE,
    IMAGE_ONNX,
    IMAGE_ONNX_INT8,
    TEXT_ONNX,
    TEXT_ONNX_INT8,
    TEXT_STEP_ONNX,
    TOKENIZER_FILE,
    ExportedModel,
    OnnxImageEncoder,
    OnnxTextEncoder,
    import_onnxruntime,
)
from .quantize import quantize_image_tower
from .templates import OPENAI_IMAGENET_TEMPLATES
from .text import encode_captions
from .text_torch import TextStep, TrimmedText, can_step, can_trim, dynamic_length_attention
from .text_torch import kv_shape as text_kv_shape
from .tokenizer import BPETokenizer
from .torch_encoder import TorchImageEncoder

log = logging.getLogger(__name__)

SAMPLE_LABELS = ("a photo of a Animalia Chordata Aves Passeriformes Corvidae Corvus corax",
                 "a photo of a red fox.", "an origami bird.", "itap of a small fish.")  # fmt: skip


class _ImageTower(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels).float()


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str,
            dynamic: dict[int, str]) -> None:  # fmt: skip
    _export_graph(module, (example,), path, {input_name: dynamic}, {"features": {0: "batch"}})


def _export_graph(
    module: torch.nn.Module,
    examples: tuple,
    path: Path,
    inputs: dict[str, dict[int, str]],
    outputs: dict[str, dict[int, str]],
) -> None:
    import warnings

    # grad enabled: under no_grad nn.MultiheadAttention takes its fused fast path
    # (aten::_native_multi_head_attention), which has no ONNX symbolic.
    with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, examples, str(path), input_names=list(inputs), output_names=list(outputs),
            dynamic_axes={**inputs, **outputs}, opset_version=OPSET, dynamo=False,
            do_constant_folding=True,
        )  # fmt: skip


def _step_example(model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """Inputs for tracing :class:`TextStep`: batch 3, block 5, past 7 (sizes that are
    neither 1 nor equal to each other or to a fixed size, so none is baked in)."""
    shape = text_kv_shape(model)
    batch, block, past = 3, 5, 7
    tokens = torch.randint(1, 1000, (batch, block))
    positions = past + torch.arange(block).expand(batch, block)
    cache = torch.zeros(shape.layers, 2, batch, shape.heads, past, shape.head_dim)
    causal = torch.full((block, block), float("-inf")).triu(1)
    mask = torch.cat([torch.zeros(block, past), causal], dim=1).expand(batch, -1, -1)
    return tokens, positions, cache, mask.contiguous(), torch.tensor([4, 2, 0])


#: ``text_step.onnx``'s dynamic axes (its I/O: :data:`~.onnx.STEP_INPUTS` → features, present).
STEP_AXES = {
    "tokens": {0: "batch", 1: "length"},
    "positions": {0: "batch", 1: "length"},
    "past": {2: "batch", 4: "past"},
    "mask": {0: "batch", 1: "length", 2: "keys"},
    "pool": {0: "batch"},
}
STEP_OUTPUTS = {"features": {0: "batch"}, "present": {2: "batch", 4: "length"}}


def step_sample_texts() -> list[str]:
    """Captions with shared and unshared prefixes, for the prefix path's agreement."""
    lineages = (
        "Animalia Chordata Aves Passeriformes Corvidae Corvus corax common raven",
        "Animalia Chordata Aves Passeriformes Corvidae Corvus cornix hooded crow",
        "Plantae Tracheophyta Magnoliopsida Rosales Rosaceae Rosa canina dog rose",
    )
    templated = [t.format(name) for name in lineages for t in OPENAI_IMAGENET_TEMPLATES[:6]]
    return templated + list(SAMPLE_LABELS)


def _quantize(source: Path, target: Path) -> None:
    import_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process logs on the root logger, per file
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def sample_images(n: int = 16, seed: int = 0) -> list[Image.Image]:
    """Deterministic sample images of several sizes and aspect ratios (noise + shapes),
    so crop, squash and resizing in both directions are all exercised."""
    rng = np.random.default_rng(seed)
    sizes = [(224, 224), (300, 200), (160, 240), (32, 32), (640, 480), (97, 131)]
    images = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        base = rng.integers(0, 256, size=(1, 1, 3))
        yy, xx = np.mgrid[0:h, 0:w]
        grad = ((xx / max(w - 1, 1))[..., None] * rng.integers(0, 256, size=3)).astype(np.float64)
        noise = rng.normal(0, 40, size=(h, w, 3))
        disk = (((xx - w / 2) ** 2 + (yy - h / 2) ** 2) < (min(w, h) / 3) ** 2)[..., None]
        pixels = np.clip(0.5 * base + 0.5 * grad + noise + 60 * disk, 0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels, "RGB"))
    return images


def _load_samples(images: str | None) -> tuple[list[Image.Image], str]:
    if not images:
        return sample_images(), "16 generated images (noise, gradients, a disk; 6 sizes)"
    folder = Path(images)
    files = sorted(
        p
        for p in (folder.rglob("*") if folder.is_dir() else [folder])
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )[:64]
    if not files:
        raise InputError(f"--images {images}: no images found")
    loaded = []
    for path in files:
        try:
            with Image.open(path) as opened:
                loaded.append(opened.convert("RGB"))
        except OSError as exc:
            log.warning("skipping sample image %s: %s", path, exc)
    if not loaded:
        raise InputError(f"--images {images}: none of the images could be read")
    return loaded, f"{len(loaded)} images from {images}"


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def _index_matrix(index: str | None, dim: int) -> np.ndarray | None:
    if not index:
        return None
    text_index = TextIndex.load(index)
    text_index.check_dim(dim, "being exported")
    return text_index.embeddings.astype(np.float32)


def image_agreement(reference: np.ndarray, candidate: np.ndarray,
                    index: np.ndarray | None) -> dict[str, Any]:  # fmt: skip
    """Raw-feature max |Δ|, min cosine, and (with an index) top-1 agreement and the largest
    softmax-score difference of the reference's top-1 class."""
    out: dict[str, Any] = {
        "n_images": int(reference.shape[0]),
        "max_abs_diff": float(np.abs(reference - candidate).max()),
        "min_cosine": float(_cosines(reference, candidate).min()),
    }
    if index is not None:
        ref_top = _cosines_to(reference, index).argmax(1)
        cand_top = _cosines_to(candidate, index).argmax(1)
        out["top1_agreement"] = float((ref_top == cand_top).mean())
    return out


def _cosines_to(features: np.ndarray, index: np.ndarray) -> np.ndarray:
    return (features / np.linalg.norm(features, axis=1, keepdims=True)) @ index


def export_onnx(config: ExportOnnxConfig) -> ExportOnnxResult:
    """Export ``config.model`` into ``config.out`` (see the module docstring)."""
    started = time.perf_counter()
    ort = import_onnxruntime()  # fail early, before minutes of export
    import onnx

    loaded = load_model(config.model, pretrained=config.pretrained, device="cpu")
    if loaded.weights is None:
        log.warning("model %s has random weights (no pretrained given)", config.model)
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    save_model(loaded.model, out, loaded.model_cfg, loaded.preprocess_cfg)
    stale_files = (IMAGE_ONNX, IMAGE_ONNX_INT8, TEXT_ONNX, TEXT_ONNX_INT8, TEXT_STEP_ONNX)
    for stale in (*stale_files, TOKENIZER_FILE):
        (out / stale).unlink(missing_ok=True)
    model = loaded.model.eval()
    size = loaded.image_size
    size = size if isinstance(size, int) else size[0]
    files = [IMAGE_ONNX]
    _export(_ImageTower(model), torch.zeros(2, 3, size, size), out / IMAGE_ONNX, "pixels",
            {0: "batch"})  # fmt: skip
    onnx.checker.check_model(str(out / IMAGE_ONNX))
    image_int8 = None
    if config.int8:
        image_int8 = quantize_image_tower(out, config.images)  # static QDQ, see quantize.py
        files.append(IMAGE_ONNX_INT8)

    text_note = "exported: custom labels and `taxoclip index` run without torch"
    if not config.text:
        text_note = "not exported (--no-text): custom labels and index use torch"
    elif not can_trim(model):
        text_note = "not exported (text tower is not a causal argmax-pooled transformer)"
    elif not BPETokenizer.save_from_open_clip(loaded.tokenizer, out / TOKENIZER_FILE):
        text_note = "not exported (tokenizer is not open_clip's BPE tokenizer)"
    else:
        # batch 3 × length 7: sizes of 1 (or equal sizes) get baked into the trace
        example = loaded.tokenizer(["a photo of a bird.", "a fox", "a fish"])[:, :7]
        with dynamic_length_attention(model):
            _export(TrimmedText(model), example, out / TEXT_ONNX, "tokens",
                    {0: "batch", 1: "length"})  # fmt: skip
        onnx.checker.check_model(str(out / TEXT_ONNX))
        files += [TEXT_ONNX, TOKENIZER_FILE]
        if can_step(model):  # the prefix cache's graph (an index encodes shared prefixes once)
            example = _step_example(model)
            _export_graph(TextStep(model), example, out / TEXT_STEP_ONNX, STEP_AXES, STEP_OUTPUTS)
            onnx.checker.check_model(str(out / TEXT_STEP_ONNX))
            files.append(TEXT_STEP_ONNX)
        if config.int8:
            _quantize(out / TEXT_ONNX, out / TEXT_ONNX_INT8)
            files.append(TEXT_ONNX_INT8)

    record: dict[str, Any] = {
        "taxoclip": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
        "opset": OPSET,
        "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
        "source_model": str(config.model),
        "source_weights": loaded.weights,
        "embed_dim": loaded.embed_dim,
        "image_size": size,
        "context_length": loaded.context_length,
        "logit_scale": float(model.logit_scale.exp().item()),
        "files": files,
        "image_input": {"name": "pixels", "shape": ["batch", 3, size, size], "dtype": "float32"},
        "text_input": {"name": "tokens", "shape": ["batch", "length"], "dtype": "int64"},
        "text_step": (
            {
                "inputs": {
                    "tokens": ["batch", "length"],
                    "positions": ["batch", "length"],
                    "past": ["layers", 2, "batch", "heads", "past", "head_dim"],
                    "mask": ["batch", "length", "past + length"],
                    "pool": ["batch"],
                },
                "outputs": {
                    "features": ["batch", "embed_dim"],
                    "present": ["layers", 2, "batch", "heads", "length", "head_dim"],
                },
                "kv_shape": asdict(text_kv_shape(model)),
            }
            if TEXT_STEP_ONNX in files
            else None
        ),
        "outputs": "features (batch, embed_dim), float32, not normalised",
        "quantization": (
            {
                "method": image_int8["function"],  # cache.int8_meets_bars reads it
                "weight_type": "QInt8",
                "files": [f for f in files if ".int8." in f],
                "image": image_int8,
                "text": "onnxruntime.quantization.quantize_dynamic (QInt8, every MatMul)",
            }  # fmt: skip
            if image_int8
            else None
        ),
        "text_tower": text_note,
    }
    write_text_atomic(out / EXPORT_FILE, json.dumps(record, indent=2) + "\n")

    # ---- agreement with torch, measured on the files as written
    samples, described = _load_samples(config.images)
    index = _index_matrix(config.index, loaded.embed_dim)
    exported = ExportedModel.open(out)
    agreement: dict[str, Any] = {"samples": described, "index": config.index}
    for squash in (False, True):
        mode = "squash" if squash else "crop"
        reference_encoder = TorchImageEncoder.open(loaded, squash=squash)
        reference = reference_encoder.encode(samples, normalize=False)
        onnx_fp32 = OnnxImageEncoder(exported, squash=squash)
        pixels_torch = np.stack([reference_encoder.preprocess(im) for im in samples[:6]])
        pixels_np = onnx_fp32._pre.batch(samples[:6])
        agreement[f"preprocess_{mode}_max_abs_diff"] = float(np.abs(pixels_torch - pixels_np).max())
        agreement[f"image_fp32_{mode}"] = image_agreement(
            reference, onnx_fp32.encode(samples, normalize=False), index)  # fmt: skip
        if config.int8:
            int8 = OnnxImageEncoder(exported, int8=True, squash=squash)
            agreement[f"image_int8_{mode}"] = image_agreement(
                reference, int8.encode(samples, normalize=False), index)  # fmt: skip
    if TEXT_ONNX in files:
        tokens = loaded.tokenizer(list(SAMPLE_LABELS))
        with torch.inference_mode():
            reference = model.encode_text(tokens).float().numpy()
        for int8 in (False, True) if config.int8 else (False,):
            encoder = OnnxTextEncoder(exported, int8=int8)
            ours = encoder.tokenize(list(SAMPLE_LABELS))
            if not np.array_equal(ours, tokens.numpy()):
                raise InputError(f"export {out}: the torch-free tokenizer disagrees with open_clip")
            got = encoder.encode_tokens(ours[:, : int(ours.argmax(-1).max()) + 1], normalize=False)
            agreement[f"text_{'int8' if int8 else 'fp32'}_min_cosine"] = float(
                _cosines(reference, got).min())  # fmt: skip
    if TEXT_STEP_ONNX in files:  # the prefix path against whole captions at the full context
        texts = step_sample_texts()
        tokens = loaded.tokenizer(texts)
        with torch.inference_mode():
            reference = model.encode_text(tokens).float().numpy()
        encoder = OnnxTextEncoder(exported)
        got = encode_captions(encoder, encoder.tokenize(texts))
        agreement["text_step_fp32_min_cosine"] = float(_cosines(reference, got).min())
    record["agreement"] = agreement
    record["seconds"] = round(time.perf_counter() - started, 1)
    write_text_atomic(out / EXPORT_FILE, json.dumps(record, indent=2) + "\n")
    return ExportOnnxResult(out=out, files=files, agreement=agreement, text=text_note)


run_export_onnx = export_onnx
