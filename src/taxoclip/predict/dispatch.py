"""Which runtime runs ``index``, ``predict`` and ``embed`` — decided before torch loads.

``--runtime auto`` picks ONNX Runtime for a folder made by ``taxoclip export onnx`` (and
torch for any other model, for ``--device cuda``, and for ``--detections``/``--region``/
``--deny``, which the ONNX path does not do yet); ``onnx``/``onnx-int8`` insist (a usage
error if something asked for needs torch); ``torch`` never uses ONNX. This module imports
neither path, so the ONNX one starts without importing torch at all.
"""

from __future__ import annotations

from typing import Any

from taxoclip.errors import UsageError

TORCH_ONLY = ("detections", "region", "deny")


def use_onnx(config: Any) -> bool:
    runtime = getattr(config, "runtime", "torch") or "torch"
    if runtime == "torch":
        return False
    needs_torch = [f"--{name}" for name in TORCH_ONLY if getattr(config, name, None)]
    device = str(getattr(config, "device", "auto"))
    if runtime == "auto":
        from taxoclip.runtime.onnx import find_exported

        if find_exported(config.model) is None or needs_torch:
            return False
        return not device.startswith("cuda")
    if needs_torch:
        raise UsageError(f"{', '.join(needs_torch)} need --runtime torch (not {runtime})")
    if device.startswith("cuda"):
        raise UsageError(f"--runtime {runtime} runs on the CPU; use --runtime torch for --device "
                         f"{device}")  # fmt: skip
    return True


def run_index(config):
    if use_onnx(config):
        from .onnx_run import run_index_onnx

        return run_index_onnx(config)
    from .run import run_index as run

    return run(config)


def run_predict(config):
    if use_onnx(config):
        from .onnx_run import run_predict_onnx

        return run_predict_onnx(config)
    from .run import run_predict as run

    return run(config)


def run_embed(config):
    if use_onnx(config):
        from .onnx_run import run_embed_onnx

        return run_embed_onnx(config)
    from .run import run_embed as run

    return run(config)
