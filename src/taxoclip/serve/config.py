"""Config and result of ``taxoclip serve`` (light: no torch, no FastAPI)."""

from __future__ import annotations

from dataclasses import dataclass

from taxoclip.config import CommandConfig, CommandResult, command, option, shared

#: The runtimes ``taxoclip.runtime`` offers (kept here as text: this module imports no numpy).
RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")
#: PIL's decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``), as a number: no PIL here.
PIL_MAX_PIXELS = 89_478_485


@command(
    "serve",
    help="a warm JSON API and a web page: predict and embed over HTTP",
    description=(
        "Load a model and a tree-of-life index once and serve them: POST /predict and "
        "POST /embed (multipart images), GET /healthz, /openapi.json, and a web page at / "
        "for people (drop photos, see top-k with lineage and scores). Images from "
        "concurrent requests share forward passes. Stop with Ctrl-C."
    ),
    run="taxoclip.serve.run:run_serve",
)
@dataclass(kw_only=True)
class ServeConfig(CommandConfig):
    model: str = shared.model()
    pretrained: str | None = shared.pretrained()
    index: str | None = option(
        None, metavar="DIR", help="tree-of-life text index (default: the model's published one)"
    )
    host: str = option(
        "127.0.0.1",
        metavar="HOST",
        help="address to listen on (0.0.0.0 exposes the server to the network)",
    )
    port: int = option(8000, metavar="PORT", help="TCP port (0: any free port, printed)")
    runtime: str = option(
        "auto",
        choices=RUNTIMES,
        help="image tower: auto (ONNX Runtime fp32, the model exported once into the cache; "
        "torch where it cannot be), torch, onnx, onnx-int8",
    )
    device: str = shared.device()
    max_upload_bytes: int = option(
        20_000_000, metavar="BYTES", help="largest image file accepted (413 above it)"
    )
    max_files: int = option(32, metavar="N", help="most images in one request (413 above it)")
    max_pixels: int = option(
        PIL_MAX_PIXELS,
        metavar="PIXELS",
        help="largest image (width × "
        "height) decoded; bigger is a per-file error (decompression bomb)",
    )
    max_batch: int = option(
        32, metavar="B", help="most images in one forward pass, gathered across concurrent requests"
    )
    batch_wait_ms: float = option(
        5.0, metavar="MS", help="how long the first request of a batch waits for others to join it"
    )
    queue_timeout: float = option(
        60.0, metavar="SECONDS", help="a request waiting longer than this for the model gets 503"
    )
    access_log: bool = option(False, help="log every request (uvicorn's access log)")
    offline: bool = shared.offline()

    def check(self) -> list[str]:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"--port must be 0..65535 (got {self.port})")
        for flag, value in (
            ("--max-upload-bytes", self.max_upload_bytes),
            ("--max-files", self.max_files),
            ("--max-pixels", self.max_pixels),
            ("--max-batch", self.max_batch),
        ):
            if value < 1:
                problems.append(f"{flag} must be at least 1 (got {value})")
        if self.batch_wait_ms < 0:
            problems.append(f"--batch-wait-ms must be ≥ 0 (got {self.batch_wait_ms})")
        if self.queue_timeout <= 0:
            problems.append(f"--queue-timeout must be > 0 (got {self.queue_timeout})")
        return problems


@dataclass
class ServeResult(CommandResult):
    url: str
    requests: int
    images: int
    batches: int

    def lines(self) -> list[str]:
        return [
            f"served {self.requests} requests ({self.images} images in {self.batches} "
            f"forward passes) at {self.url}"
        ]
