"""What a served model accepts: one image per POST /predict, as the raw body or a multipart file, checked
in the HTTP process before it reaches the model (a bad request gets its 4xx and spoils no batch)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from PIL import Image, UnidentifiedImageError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
RAW_TYPES = ("image/", "application/octet-stream")
HOW = ("Send one image as the request body (Content-Type image/png, image/jpeg, ... or "
       "application/octet-stream: curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' URL) or as a "
       "multipart/form-data file (curl -F image=@photo.jpg URL).")


class BadUpload(Exception):
    """A request the server refuses, with its HTTP status and the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_image(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(width, height) of an image that decodes fully and has at most `max_pixels` pixels; else BadUpload.

    The size is read from the header first, so a decompression bomb is refused before it is decoded.
    """
    if not data:
        raise BadUpload(400, f"The request has an empty body: no image. {HOW}")
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own guard must not refuse what serve allows
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise BadUpload(413, f"Refused as a decompression bomb: {err}") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise BadUpload(400, f"The body is not an image Pillow can read ({len(data)} bytes). {HOW}") from err
    width, height = image.size
    if width * height > max_pixels:
        raise BadUpload(413, f"The image is {width}x{height} = {width * height:,} pixels, more than "
                             f"serve.max_image_pixels={max_pixels:,}.")
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as err:
        raise BadUpload(400, f"The image is truncated or corrupt ({image.format}, {width}x{height}): "
                             f"{err}.") from err
    return width, height


async def read_body(receive: Receive, limit: int) -> bytes:
    """The request body, refused (413) past `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadUpload(400, "The client disconnected before sending the whole body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BadUpload(413, f"The request body is larger than serve.max_request_bytes={limit:,}.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def multipart_file(scope: Scope, body: bytes) -> bytes:
    """The first file of a multipart/form-data body."""
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(scope, replay).form(max_files=1, max_fields=16)
    except Exception as err:  # starlette raises its own parse errors
        raise BadUpload(400, f"The multipart body cannot be parsed: {err}. {HOW}") from err
    files = [value for value in form.values() if isinstance(value, UploadFile)]
    if not files:
        raise BadUpload(400, f"The multipart form holds no file. {HOW}")
    return await files[0].read()


async def image_bytes(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The image of a POST: its raw body or its multipart file, by Content-Type."""
    headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type.startswith(RAW_TYPES) and content_type != "multipart/form-data":
        raise BadUpload(415, f"Content-Type {content_type or '(none)'} is not an image upload. {HOW}")
    length = headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise BadUpload(413, f"The request body ({int(length):,} bytes) is larger than "
                             f"serve.max_request_bytes={limit:,}.")
    body = await read_body(receive, limit)
    return await multipart_file(scope, body) if content_type == "multipart/form-data" else body


def query_options(scope: Scope) -> dict[str, str]:
    """`?format=json&top_k=3` as {"format": "json", "top_k": "3"}."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return {key: values[-1] for key, values in query.items() if key in ("format", "top_k")}


class ImageUploads:
    """ASGI middleware for `path`: checks the upload (type, size, decodability, pixels) and hands LitServe
    a JSON body {"image": base64, "format": ..., "top_k": ...}; refuses bad requests with a 4xx JSON
    {"detail": ...} itself, so that they never reach (or fail) a batch of good ones."""

    def __init__(self, app: Any, path: str = "/predict", max_image_pixels: int = 25_000_000,
                 max_request_bytes: int = 50 * 2**20) -> None:
        self.app = app
        self.path = path
        self.max_image_pixels = max_image_pixels
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            data = await image_bytes(scope, receive, self.max_request_bytes)
            check_image(data, self.max_image_pixels)
        except BadUpload as refused:
            await self.refuse(refused, send)
            return
        body = json.dumps({"image": base64.b64encode(data).decode("ascii"), **query_options(scope)}).encode()
        replaced = (b"content-type", b"content-length")
        headers = [(key, value) for key, value in scope["headers"] if key.lower() not in replaced]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)

    @staticmethod
    async def refuse(refused: BadUpload, send: Send) -> None:
        body = json.dumps({"detail": str(refused)}).encode()
        await send({"type": "http.response.start", "status": refused.status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
