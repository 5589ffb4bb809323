"""Uploads: the request-size guard, and decoding one uploaded image (errors as reasons).

Decoding goes through the engine's image loading (``load_rgb``, ``describe_error``), so an
upload fails with the same reasons a file on disk does; it adds what a server needs on
top: an empty upload is named as such and an image larger than ``max_pixels`` is refused
from its header, before a single pixel is decoded (PIL's own decompression-bomb guard
refuses anything over twice its limit at open).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

from PIL import Image

from taxoclip.runtime.images import describe_error, load_rgb


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 20_000_000  # one file
    max_files: int = 32  # one request
    max_pixels: int = 89_478_485  # PIL's Image.MAX_IMAGE_PIXELS
    form_slack: int = 1 << 20  # form fields, part headers, a subset CSV

    @property
    def max_body(self) -> int:
        """The largest request body read at all: every file at its limit, plus the form."""
        return self.max_files * self.max_upload_bytes + self.form_slack


def decode_upload(data: bytes, max_pixels: int) -> Image.Image:
    """A fully decoded RGB image from uploaded bytes; raises with a reason otherwise."""
    if not data:
        raise ValueError("empty file (0 bytes)")
    opened = Image.open(io.BytesIO(data))  # reads the header only
    width, height = opened.size
    if width * height > max_pixels:
        raise ValueError(
            f"image is {width}×{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (decompression-bomb guard, --max-pixels)"
        )
    return load_rgb(opened)  # decodes now: a truncated file fails here


def decode_or_reason(data: bytes, max_pixels: int) -> Image.Image | str:
    """The image, or the reason it cannot be read (never raises)."""
    try:
        return decode_upload(data, max_pixels)
    except Exception as exc:  # any failure belongs to this file, reported in its row
        return describe_error(exc)


class TooLarge(Exception):
    pass


#: Bytes of an over-limit body read and dropped before the 413, so that the client, still
#: sending, gets the answer rather than a reset connection; a larger body is cut off.
DRAIN_BYTES = 64 << 20


async def _drain(receive, most: int) -> None:
    dropped = 0
    while dropped <= most:
        message = await receive()
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class BodyLimit:
    """ASGI middleware: a request whose body exceeds ``limit`` bytes gets 413 — at once
    when its Content-Length says so, else as soon as the bytes read pass the limit."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            if int(length) <= self.limit + DRAIN_BYTES:
                await _drain(receive, DRAIN_BYTES + self.limit)
            return await self._refuse(send, int(length))
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise TooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except TooLarge:
            if not started:
                await _drain(receive, DRAIN_BYTES)
                await self._refuse(send, received)

    async def _refuse(self, send, size: int) -> None:
        body = json.dumps(
            {
                "detail": f"request body of {size:,}+ bytes is over the limit of "
                f"{self.limit:,} bytes (--max-files × --max-upload-bytes + form)"
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
