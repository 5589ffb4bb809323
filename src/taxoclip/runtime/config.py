"""Config and result of ``taxoclip export onnx`` (light: the CLI imports this for --help)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taxoclip.config import CommandConfig, CommandResult, command, option, shared


@command(
    "export onnx",
    help="export a model's image (and text) tower to ONNX, fp32 and optionally int8",
    description=(
        "Write --out as a normal model folder plus image_encoder.onnx (with --int8 also "
        "image_encoder.int8.onnx: static int8 calibrated on --images, else dynamic), text_encoder.onnx + tokenizer.json "
        "(custom labels and index without torch), and export.json: versions, opset, "
        "quantisation and the measured agreement with the torch model on sample images "
        "(top-1 agreement against --index when given). predict/embed/eval pick the ONNX "
        "runtime for such a folder by themselves (--runtime auto)."
    ),
    run="taxoclip.runtime.export:run_export_onnx",
)
@dataclass(kw_only=True)
class ExportOnnxConfig(CommandConfig):
    model: str = shared.model(required=True)
    pretrained: str | None = shared.pretrained()
    out: str = option(metavar="DIR", help="output model folder")
    int8: bool = option(
        False,
        help="also write int8 ONNX files (the image tower statically quantised, calibrated on --images)",
    )
    text: bool = option(
        True,
        flag="--no-text",
        negate=True,
        help="do not export the text tower (custom labels then use torch)",
    )
    images: str | None = option(
        None,
        metavar="DIR",
        help="sample images for the agreement check (default: 16 generated images)",
    )
    index: str | None = option(
        None, metavar="DIR", help="text index: also measure top-1 agreement against it"
    )
    offline: bool = shared.offline()


@dataclass
class ExportOnnxResult(CommandResult):
    out: Path
    files: list[str]
    agreement: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    def lines(self) -> list[str]:
        lines = [f"exported {', '.join(self.files)} into {self.out}"]
        for key, value in self.agreement.items():
            if isinstance(value, dict):
                parts = ", ".join(f"{k} {v:.6g}" for k, v in value.items() if isinstance(v, float))
                lines.append(f"  {key}: {parts}")
        lines.append(f"  text tower: {self.text}")
        return lines
