"""Views of the attachments API (docs/api.md, "Attachments"): each parses the request and
calls one service (attachments.services). Errors are raised, never built here:
project.errors turns them into ``{code, message, fields}``; the one exception is 416,
which HTTP ties to a ``Content-Range`` header and no error code has for its own.

Who may call what: every endpoint takes a device token. Only the device that created a
blob appends to it. Anyone with a device token may read the resume point or download: the
id is a 128-bit capability, handed out only inside end-to-end encrypted messages, and
what it names is ciphertext.

The protocol is tus-like: ``POST`` announces the blob's size, ``PATCH`` appends a chunk at
``Upload-Offset`` (which must be where the server is), ``HEAD`` tells where that is, and
``GET`` downloads, with one ``Range`` if asked.
"""

from __future__ import annotations

import re
from typing import Any, Final

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils.http import http_date
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from attachments import services
from attachments.models import Blob
from keys.api.schema import AUTHENTICATED, error_responses
from keys.api.serializers import ErrorSerializer
from keys.auth import DeviceTokenAuthentication
from keys.models import Device
from project.errors import ServiceError
from protocol.errors import ErrorCode

from . import serializers as s

BLOB_ID: Final = re.compile(r"[0-9a-f]{32}")
CHUNK_CONTENT_TYPE: Final = "application/offset+octet-stream"
BLOB_CONTENT_TYPE: Final = "application/octet-stream"
# One range of bytes: "bytes=10-19", "bytes=10-" or "bytes=-10" (the last ten).
SINGLE_RANGE: Final = re.compile(r"bytes=(\d*)-(\d*)")

BLOB_ID_PARAMETER = OpenApiParameter(
    "blob_id",
    str,
    OpenApiParameter.PATH,
    description="the blob's id: 16 random bytes as 32 lower-case hex digits",
)


# --- parsing ---------------------------------------------------------------------------------


def _invalid(field: str, message: str, code: ErrorCode = ErrorCode.INVALID_REQUEST) -> ServiceError:
    return ServiceError(
        code, f"{field}: {message}", fields={field: [{"code": code.slug, "message": message}]}
    )


def _blob_id(raw: str) -> str:
    if not BLOB_ID.fullmatch(raw):
        shown = raw if len(raw) <= 40 else f"{raw[:40]}…"
        raise _invalid("blob_id", f"{shown!r} is not 32 lower-case hex digits")
    return raw


def _caller_device(request: Request) -> Device:
    if not isinstance(request.auth, Device):
        raise ServiceError(ErrorCode.FORBIDDEN, "attachments take a device token")
    return request.auth


def _upload_offset(request: HttpRequest) -> int:
    raw = request.headers.get("Upload-Offset")
    if raw is None:
        raise _invalid("Upload-Offset", "this header is required: where the chunk goes")
    if not raw.isascii() or not raw.isdigit():
        raise _invalid("Upload-Offset", f"{raw[:40]!r} is not a whole number of bytes")
    return int(raw)


def _read_chunk(request: HttpRequest) -> bytes:
    """The whole body, or a refusal: a chunk cut short is never half stored.

    Read from the request stream rather than ``request.body``, whose
    DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MiB) is below the largest chunk. Under ASGI the
    server has buffered the complete body before the view runs (a client that drops the
    connection never reaches it); under WSGI the stream may end early, which is checked.
    """
    if request.content_type != CHUNK_CONTENT_TYPE:
        raise _invalid(
            "Content-Type",
            f"{request.content_type!r}: a chunk is sent as {CHUNK_CONTENT_TYPE}",
        )
    raw = request.META.get("CONTENT_LENGTH") or ""
    if not raw.isascii() or not raw.isdigit():
        raise _invalid(
            "Content-Length", "a chunk is sent with its length (no chunked transfer coding)"
        )
    length = int(raw)
    if length < 1:
        raise _invalid("Content-Length", "a chunk holds at least one byte")
    if length > services.MAX_CHUNK_BYTES:
        raise _invalid(
            "Content-Length",
            f"a chunk of {length} bytes is above the limit of {services.MAX_CHUNK_BYTES}",
            ErrorCode.TOO_LARGE,
        )
    pieces: list[bytes] = []
    received = 0
    try:
        while received < length:
            piece = request.read(length - received)
            if not piece:
                break
            pieces.append(piece)
            received += len(piece)
    except OSError:
        pass  # the client went away: what arrived is short, and refused below
    if received < length:
        raise ServiceError(
            ErrorCode.TRUNCATED,
            f"the body ended after {received} of its {length} bytes; none of it was stored",
        )
    return b"".join(pieces)


class _Unsatisfiable(Exception):
    pass


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one range a ``Range`` header asks for, as [start, end); None for the whole blob.

    A header this does not understand (another unit, several ranges, a last byte before
    the first) is ignored, as RFC 9110 §14.2 allows: the answer is then the whole blob.
    A range that starts at or past the end raises _Unsatisfiable (416).
    """
    match = SINGLE_RANGE.fullmatch(header.strip()) if header else None
    if match is None:
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        end = min(int(last) + 1, size) if last else size
        if last and int(last) < start:
            return None
        if start >= size:
            raise _Unsatisfiable
        return start, end
    if last:
        suffix = int(last)
        if suffix == 0:
            raise _Unsatisfiable
        return max(0, size - suffix), size
    return None


def _upload_headers(response: HttpResponse, blob: Blob) -> HttpResponse:
    response["Upload-Offset"] = str(blob.offset)
    response["Upload-Length"] = str(blob.size)
    response["Upload-Expires"] = http_date(blob.expires_at.timestamp())
    response["Cache-Control"] = "no-store"
    return response


# --- views ---------------------------------------------------------------------------------


UPLOAD_OFFSET_HEADER = OpenApiParameter(
    "Upload-Offset",
    int,
    OpenApiParameter.HEADER,
    required=True,
    description="where this chunk goes: the offset the server has reached",
)
UPLOAD_HEADERS = [
    OpenApiParameter(
        "Upload-Offset",
        int,
        OpenApiParameter.HEADER,
        response=[200, 204, 409],
        description="bytes received so far: where the next chunk goes",
    ),
    OpenApiParameter(
        "Upload-Length",
        int,
        OpenApiParameter.HEADER,
        response=[200, 204],
        description="the blob's size",
    ),
    OpenApiParameter(
        "Upload-Expires",
        str,
        OpenApiParameter.HEADER,
        response=[200, 204],
        description="when the blob expires (an HTTP date)",
    ),
]
RANGE_HEADER = OpenApiParameter(
    "Range",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="one range of bytes (`bytes=0-1023`, `bytes=1024-`, `bytes=-1024`): 206",
)
DOWNLOAD_HEADERS = [
    OpenApiParameter(
        "Content-Range",
        str,
        OpenApiParameter.HEADER,
        response=[206, 416],
        description="`bytes first-last/size`; on 416 `bytes */size`",
    ),
    OpenApiParameter(
        "Accept-Ranges", str, OpenApiParameter.HEADER, response=[200, 206], description="`bytes`"
    ),
    OpenApiParameter(
        "Upload-Offset",
        int,
        OpenApiParameter.HEADER,
        response=[409],
        description="how far the upload got",
    ),
]
CREATED_HEADERS = [
    OpenApiParameter(
        "Location",
        str,
        OpenApiParameter.HEADER,
        response=[201],
        description="the blob's path, `/api/v1/attachments/{id}`",
    ),
    OpenApiParameter(
        "Retry-After",
        int,
        OpenApiParameter.HEADER,
        response=[429],
        description="seconds until enough of the day's quota is free again",
    ),
]


class AttachmentsView(APIView):
    authentication_classes = (DeviceTokenAuthentication,)
    parser_classes = (JSONParser,)

    @extend_schema(
        operation_id="create_attachment",
        summary="Announce an encrypted blob of `size` bytes; upload it with PATCH",
        description=(
            "The blob is the file encrypted as docs/protocol.md §17.5 says: its size is the "
            "file's plus 16 bytes per 64 KiB chunk, at most `MAX_ATTACHMENT_BLOB_BYTES` "
            "(100 MiB of file). The account may create at most `ATTACHMENT_BYTES_PER_DAY` "
            "bytes of blobs in any 24 hours (429 with `Retry-After` beyond). The upload must "
            "be complete within 24 hours. `ttl_seconds` (a disappearing message's timer) "
            "keeps the complete blob at most that long after its completion."
        ),
        parameters=CREATED_HEADERS,
        request=s.CreateBlobSerializer,
        responses={
            201: s.BlobSerializer,
            **error_responses(
                *AUTHENTICATED, ErrorCode.ATTACHMENT_TOO_LARGE, ErrorCode.RATE_LIMITED
            ),
        },
        tags=["attachments"],
    )
    def post(self, request: Request) -> Response:
        device = _caller_device(request)
        serializer = s.CreateBlobSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        blob = services.create_blob(
            device,
            serializer.validated_data["size"],
            serializer.validated_data.get("ttl_seconds"),
        )
        body = {
            "id": blob.id,
            "size": blob.size,
            "offset": blob.offset,
            "chunk_bytes": services.SUGGESTED_CHUNK_BYTES,
            "expires_at": blob.expires_at,
        }
        return Response(
            s.BlobSerializer(body).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": reverse("attachments:attachment", args=[blob.id])},
        )


class AttachmentView(APIView):
    """PATCH appends, HEAD tells the resume point, GET downloads (docs/api.md)."""

    authentication_classes = (DeviceTokenAuthentication,)
    # PATCH reads its raw body itself (_read_chunk); nothing here parses request.data.
    parser_classes = ()

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # A download may be asked for with "Accept: application/octet-stream", which no
        # renderer offers: fall back to JSON for the error bodies instead of answering 406.
        return super().perform_content_negotiation(request, force=True)

    def handle_exception(self, exc: Exception) -> Response:
        response: Response = super().handle_exception(exc)
        if isinstance(exc, ServiceError) and "offset" in exc.details:
            # Where the upload stands, so a client resumes from there.
            response["Upload-Offset"] = str(exc.details["offset"])
        return response

    @extend_schema(
        operation_id="upload_attachment_chunk",
        summary="Append one chunk (1 byte to 4 MiB) at `Upload-Offset`",
        description=(
            "The body is raw bytes (`Content-Type: application/offset+octet-stream`, with "
            "`Content-Length`). `Upload-Offset` must equal the offset the server has reached "
            "(else 409 `upload_offset_mismatch`, with the stored offset in `Upload-Offset`: "
            "continue from there). A chunk is stored whole or not at all. Only the device "
            "that created the blob may upload; once every byte is there the blob is complete "
            "and further PATCHes get 409. `HEAD` on the same path answers 200 with "
            "`Upload-Offset`, `Upload-Length` and `Upload-Expires` (the resume point)."
        ),
        parameters=[BLOB_ID_PARAMETER, UPLOAD_OFFSET_HEADER, *UPLOAD_HEADERS],
        request={CHUNK_CONTENT_TYPE: OpenApiTypes.BINARY},
        responses={
            204: OpenApiResponse(description="stored; `Upload-Offset` is the new offset"),
            **error_responses(
                *AUTHENTICATED,
                ErrorCode.TRUNCATED,
                ErrorCode.TOO_LARGE,
                ErrorCode.UNKNOWN_ATTACHMENT,
                ErrorCode.ATTACHMENT_EXPIRED,
                ErrorCode.UPLOAD_OFFSET_MISMATCH,
            ),
        },
        tags=["attachments"],
    )
    def patch(self, request: Request, blob_id: str) -> Response:
        device = _caller_device(request)
        blob_id = _blob_id(blob_id)
        offset = _upload_offset(request._request)
        data = _read_chunk(request._request)
        blob = services.append_chunk(device, blob_id, offset, data)
        response = Response(status=status.HTTP_204_NO_CONTENT)
        _upload_headers(response, blob)
        return response

    def head(self, request: Request, blob_id: str) -> Response:
        # Not in the OpenAPI schema (drf-spectacular leaves HEAD out); PATCH describes it.
        _caller_device(request)
        blob = services.upload_state(_blob_id(blob_id))
        response = Response(status=status.HTTP_200_OK)
        _upload_headers(response, blob)
        return response

    @extend_schema(
        operation_id="download_attachment",
        summary="Download a complete blob, or one range of it",
        description=(
            "Any device may download: the id is the capability, and the bytes are "
            "ciphertext. `Range` with one range answers 206 with `Content-Range`, so a "
            "download resumes too; a range starting past the end answers 416. A blob still "
            "being uploaded answers 409 `upload_incomplete` (with `Upload-Offset`); an "
            "expired one 410 `attachment_expired`."
        ),
        parameters=[BLOB_ID_PARAMETER, RANGE_HEADER, *DOWNLOAD_HEADERS],
        request=None,
        responses={
            (200, BLOB_CONTENT_TYPE): OpenApiResponse(
                OpenApiTypes.BINARY, description="the whole blob"
            ),
            (206, BLOB_CONTENT_TYPE): OpenApiResponse(
                OpenApiTypes.BINARY, description="the requested range"
            ),
            **error_responses(
                *AUTHENTICATED,
                ErrorCode.UNKNOWN_ATTACHMENT,
                ErrorCode.ATTACHMENT_EXPIRED,
                ErrorCode.UPLOAD_INCOMPLETE,
            ),
            416: OpenApiResponse(
                ErrorSerializer,
                description="`code` is one of: `invalid_request` (the range starts at or "
                "past the end of the blob)",
            ),
        },
        tags=["attachments"],
    )
    def get(self, request: Request, blob_id: str) -> HttpResponse:
        _caller_device(request)
        blob = services.stored_blob(_blob_id(blob_id))
        try:
            wanted = _byte_range(request.headers.get("Range"), blob.size)
        except _Unsatisfiable:
            error = ServiceError(
                ErrorCode.INVALID_REQUEST,
                f"Range: {request.headers.get('Range')!r} starts at or past the end of "
                f"the blob ({blob.size} bytes)",
            )
            return Response(
                error.body(),
                status=status.HTTP_416_REQUESTED_RANGE_NOT_SATISFIABLE,
                headers={"Content-Range": f"bytes */{blob.size}"},
            )
        start, end = wanted or (0, blob.size)
        # Over ASGI (Daphne) the bytes must come from an asynchronous iterator, or Django
        # would read the whole blob into memory before sending it; the test client and
        # WSGI servers take the synchronous one.
        content = (
            services.aread_blob(blob, start, end)
            if isinstance(request._request, ASGIRequest)
            else services.read_blob(blob, start, end)
        )
        response = StreamingHttpResponse(
            content,
            status=status.HTTP_206_PARTIAL_CONTENT if wanted else status.HTTP_200_OK,
            content_type=BLOB_CONTENT_TYPE,
        )
        response["Content-Length"] = str(end - start)
        response["Accept-Ranges"] = "bytes"
        response["Cache-Control"] = "private, no-store"
        if wanted:
            response["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
        return response
