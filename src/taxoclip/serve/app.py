"""The FastAPI app: JSON API, OpenAPI schema, a local API page and the web page.

``create_app(engine, limits)`` wires an :class:`~taxoclip.serve.engine.Engine` (model and
index, loaded once) to a :class:`~taxoclip.serve.batching.Batcher` (one model thread,
images of concurrent requests batched). Every upload is read in full and decoded before
its request joins the model's queue; a file that cannot be read becomes an error row of
that file, never a failed request. Nothing served loads anything from another host:
FastAPI's Swagger page (from a CDN) is replaced by a plain page built from the schema.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from taxoclip import __version__
from taxoclip.errors import TaxoclipError
from taxoclip.predict.config import DEFAULT_RANK, TOP_K
from taxoclip.runtime.rows import error_row
from taxoclip.taxonomy import RANK_NAMES, Rank

from . import page
from .batching import Batcher, Busy
from .engine import PLAIN, TREE, Engine
from .uploads import BodyLimit, Limits, decode_or_reason

#: No resource from another origin, ever; blob: for the page's own thumbnails.
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

IMAGES_FIELD = "files"
_FORM_SCHEMA = {
    "type": "object",
    "required": [IMAGES_FIELD],
    "properties": {
        IMAGES_FIELD: {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "images (repeat the field); each one is a row group",
        },
        "rank": {
            "type": "string",
            "enum": list(RANK_NAMES),
            "default": DEFAULT_RANK,
            "description": "rank of the tree-of-life prediction",
        },
        "k": {
            "type": "integer",
            "minimum": 1,
            "description": f"top-k (default {TOP_K}; all labels with cls)",
        },
        "cls": {
            "type": "string",
            "description": "custom labels, comma- or newline-separated (instead of rank)",
        },
        "subset": {
            "type": "string",
            "description": "restrict the tree of life: CSV text or "
            "an uploaded CSV whose first column is named by a rank",
        },
        "min_prob": {
            "type": "number",
            "default": 1e-9,
            "description": "species below this are left out of higher-rank sums",
        },
    },
}
_EMBED_SCHEMA = {
    "type": "object",
    "required": [IMAGES_FIELD],
    "properties": {
        IMAGES_FIELD: _FORM_SCHEMA["properties"][IMAGES_FIELD],
        "normalize": {"type": "boolean", "default": False, "description": "L2-normalise"},
    },
}


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def create_app(
    engine: Engine,
    limits: Limits | None = None,
    *,
    batch_wait_ms: float = 5.0,
    max_batch: int = 32,
    queue_timeout: float = 60.0,
) -> FastAPI:
    limits = limits or Limits()
    batcher = Batcher(
        engine.encode, max_batch=max_batch, wait_s=batch_wait_ms / 1000, timeout_s=queue_timeout
    )
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()

    app = FastAPI(
        title="taxoclip serve",
        version=__version__,
        description="Name organisms in images with a taxoclip model: the rows of "
        "`taxoclip predict --format json`, over HTTP.",
        docs_url=None,  # Swagger UI loads from a CDN: replaced by /docs below
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.engine, app.state.batcher, app.state.limits = engine, batcher, limits
    app.add_middleware(BodyLimit, limit=limits.max_body)

    _add_error_handlers(app)
    _add_pages(app)
    _add_health(app, engine, batcher, limits, started)
    _add_predict(app, engine, batcher, limits)
    _add_embed(app, engine, batcher, limits)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Our errors as JSON with the right status (400, 413, 503), never a bare 500."""

    @app.exception_handler(BadRequest)
    async def _bad_request(request: Request, exc: BadRequest):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(TaxoclipError)
    async def _usage(request: Request, exc: TaxoclipError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        status = exc.status_code
        if status == 400 and "Too many files" in str(exc.detail):
            status = 413  # the multipart parser's own count limit, above ours
        return JSONResponse({"detail": exc.detail}, status_code=status)


def _add_pages(app: FastAPI) -> None:
    """The web page, its script and style, and a local API page (no external resources)."""

    @app.get("/", include_in_schema=False)
    async def index_page() -> Response:
        return _html(page.INDEX_HTML)

    @app.get("/static/app.js", include_in_schema=False)
    async def script() -> Response:
        return Response(
            page.APP_JS, media_type="text/javascript", headers={"Content-Security-Policy": CSP}
        )

    @app.get("/static/style.css", include_in_schema=False)
    async def style() -> Response:
        return Response(
            page.STYLE_CSS, media_type="text/css", headers={"Content-Security-Policy": CSP}
        )

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return _html(page.api_page(app.openapi()))


def _add_health(
    app: FastAPI, engine: Engine, batcher: Batcher, limits: Limits, started: float
) -> None:
    @app.get("/healthz", summary="model, index, runtime, uptime and batching counters")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "model": engine.model_spec,
            "runtime": engine.runtime,
            "device": str(engine.device),
            "embed_dim": engine.embed_dim,
            "index": engine.index_path,
            "index_size": len(engine.index),
            "uptime_s": round(time.time() - started, 3),
            "load_s": round(engine.load_seconds, 3),
            "pending": batcher.pending,
            "batching": {
                "max_batch": batcher.max_batch,
                "wait_ms": batcher.wait_s * 1000,
                **batcher.stats.to_json(),
            },
            "limits": {
                "max_upload_bytes": limits.max_upload_bytes,
                "max_files": limits.max_files,
                "max_pixels": limits.max_pixels,
                "max_body_bytes": limits.max_body,
            },
        }


def _multipart_body(schema: dict) -> dict:
    """OpenAPI for a required multipart form body of ``schema``."""
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }


def _add_predict(app: FastAPI, engine: Engine, batcher: Batcher, limits: Limits) -> None:
    @app.post(
        "/predict",
        summary="top-k taxa (or custom labels) per image: `taxoclip predict --format json` rows",
        openapi_extra=_multipart_body(_FORM_SCHEMA),
        responses={
            200: {
                "description": "rows in upload order; a file that could not be read has "
                "one row with file_name and error"
            },
            400: {"description": "a bad field (rank, k, cls, subset)"},
            413: {"description": "too many files, or a file or request too large"},
            503: {"description": "the model did not get to the request in time"},
        },
    )
    async def predict(request: Request) -> list[dict[str, Any]]:
        form = await _form(request, limits)
        cls = _text(form, "cls")
        rank_text = _text(form, "rank")
        if cls and rank_text:
            raise BadRequest("give either rank (tree of life) or cls (custom labels), not both")
        min_prob = _float(form, "min_prob", 1e-9)
        subset_text = await _subset_text(form)
        good_keys: list[str] = []  # the readable images' keys, known once they are decoded
        if cls:
            labels = [item.strip() for item in cls.replace("\n", ",").split(",") if item.strip()]
            if not labels:
                raise BadRequest("cls: no labels (comma- or newline-separated)")
            if subset_text:
                raise BadRequest("subset applies to tree-of-life predictions, not cls")
            kind = PLAIN
            k = _int(form, "k")  # every label unless given

            def finish(features):
                return engine.label_rows(features, good_keys, labels, k)
        else:
            try:
                rank = Rank.parse(_text(form, "rank", DEFAULT_RANK))
            except (ValueError, KeyError) as exc:
                raise BadRequest(
                    f"rank must be one of {', '.join(RANK_NAMES)} (got {rank_text!r})"
                ) from exc
            subset = engine.subset_key(subset_text) if subset_text else None
            kind = TREE
            k = _int(form, "k", TOP_K)

            def finish(features):
                return engine.tree_rows(features, good_keys, rank, k, min_prob, subset)

        keys, decoded = await _images(form, limits)  # fields first: a bad one costs no decoding
        good = [i for i, item in enumerate(decoded) if not isinstance(item, str)]
        images = [decoded[i] for i in good]
        good_keys.extend(keys[i] for i in good)
        rows = await batcher.submit(kind, images, finish) if images else []
        return _in_order(decoded, keys, rows)


def _add_embed(app: FastAPI, engine: Engine, batcher: Batcher, limits: Limits) -> None:
    @app.post(
        "/embed",
        summary="image embeddings (raw features unless normalize)",
        openapi_extra=_multipart_body(_EMBED_SCHEMA),
    )
    async def embed(request: Request) -> dict[str, Any]:
        form = await _form(request, limits)
        keys, decoded = await _images(form, limits)
        normalize = _text(form, "normalize", "false").lower() in ("1", "true", "yes", "on")
        good = [i for i, item in enumerate(decoded) if not isinstance(item, str)]

        def finish(features):
            if normalize:
                norms = (features**2).sum(axis=1, keepdims=True) ** 0.5
                features = features / norms.clip(min=1e-12)
            return [
                [{"file_name": keys[i], "embedding": [float(x) for x in row]}]
                for i, row in zip(good, features, strict=True)
            ]

        images = [decoded[i] for i in good]
        rows = await batcher.submit(PLAIN, images, finish) if images else []
        return {
            "model": engine.model_spec,
            "dim": engine.embed_dim,
            "normalized": normalize,
            "rows": _in_order(decoded, keys, rows),
        }


def _html(text: str) -> Response:
    return HTMLResponse(
        text, headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
    )


async def _form(request: Request, limits: Limits):
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise BadRequest(
            f"send multipart/form-data with images in the field '{IMAGES_FIELD}' "
            f"(got content-type {content_type or 'none'!r})"
        )
    # one spare file for an uploaded subset CSV; past that the parser itself refuses (→ 413)
    return await request.form(max_files=limits.max_files + 1, max_fields=100)


async def _images(form, limits: Limits) -> tuple[list[str], list[Any]]:
    uploads = [item for item in form.getlist(IMAGES_FIELD) if isinstance(item, UploadFile)]
    if not uploads:
        raise BadRequest(
            f"no images: send one or more files in the multipart field '{IMAGES_FIELD}'"
        )
    if len(uploads) > limits.max_files:
        raise BadRequest(
            f"{len(uploads)} files in one request; the limit is {limits.max_files} (--max-files)",
            status=413,
        )
    keys, blobs = [], []
    for position, upload in enumerate(uploads):
        key = upload.filename or f"file{position}"
        data = await upload.read()
        if len(data) > limits.max_upload_bytes:
            raise BadRequest(
                f"file {key} is {len(data):,} bytes; the limit is "
                f"{limits.max_upload_bytes:,} bytes per file (--max-upload-bytes)",
                status=413,
            )
        keys.append(key)
        blobs.append(data)
    decoded = await run_in_threadpool(
        lambda: [decode_or_reason(data, limits.max_pixels) for data in blobs]
    )
    return keys, decoded


def _in_order(decoded: list[Any], keys: list[str], groups: list[list[dict]]) -> list[dict]:
    """The good images' row groups, in upload order, an error row in each bad one's place."""
    groups_left = iter(groups)
    out: list[dict] = []
    for key, item in zip(keys, decoded, strict=True):
        out.extend([error_row(key, item)] if isinstance(item, str) else next(groups_left))
    return out


def _text(form, name: str, default: str | None = None) -> str | None:
    """The field's text, stripped; ``default`` when it is absent or blank."""
    value = form.get(name)
    if value is None or isinstance(value, UploadFile) or not value.strip():
        return default
    return value.strip()


def _int(form, name: str, default: int | None = None) -> int | None:
    text = _text(form, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a whole number (got {text!r})") from exc
    if value < 1:
        raise BadRequest(f"{name} must be at least 1 (got {value})")
    return value


def _float(form, name: str, default: float) -> float:
    text = _text(form, name)
    if text is None:
        return default
    try:
        return float(text)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a number (got {text!r})") from exc


async def _subset_text(form) -> str | None:
    value = form.get("subset")
    if isinstance(value, UploadFile):
        data = await value.read()
        try:
            return data.decode("utf-8-sig").strip() or None
        except UnicodeDecodeError as exc:
            raise BadRequest(f"subset {value.filename}: not UTF-8 text") from exc
    return _text(form, "subset")
