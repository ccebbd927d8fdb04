"""The in-memory server of ``fakes`` plus what attachments, typing and disappearing messages
need: the attachments REST API (docs/api.md, "Attachments": POST, PATCH at an offset,
HEAD, GET with one Range), EPHEMERAL sends (delivered with seq 0 to connected devices,
never queued) and EXPIRES sends (recorded with their ttl_seconds).

Fault injection: ``fail_patches`` drops the next N PATCHes after storing part of the chunk
(as a connection lost mid-body stores nothing on the real server, this stores nothing
either and raises a transport error); ``cut_download_after`` ends a GET early once that
many bytes went out; ``expired`` names blob ids that answer 410; ``downloads_down`` makes
every GET fail to connect.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx

from protocol.errors import ErrorCode
from protocol.frames import Deliver, Send, SendFlags

from .fakes import Envelope, FakeConnection, FakeServer, HttpError

MAX_CHUNK = 4 * 1024 * 1024


@dataclass
class FakeBlob:
    id: str
    size: int
    owner: str
    data: bytearray = field(default_factory=bytearray)
    ttl_seconds: int | None = None  # POST's ttl_seconds (a disappearing message's file)


class BlobServer(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.http = httpx.MockTransport(self._handle_blob_http)
        self.blobs: dict[str, FakeBlob] = {}
        self.chunk_bytes = 1024 * 1024
        self.fail_patches = 0
        self.cut_download_after: int | None = None
        self.expired: set[str] = set()
        self.downloads_down = False  # every GET fails to connect
        self.patched_bytes = 0  # every PATCH body, refused or not
        self.ephemeral_sends: list[Send] = []
        self._ephemeral = False

    def _handle_send(self, conn: FakeConnection, frame: Send) -> None:
        self._ephemeral = bool(frame.flags & SendFlags.EPHEMERAL)
        if self._ephemeral:
            self.ephemeral_sends.append(frame)
        try:
            super()._handle_send(conn, frame)
        finally:
            self._ephemeral = False

    def enqueue(
        self, recipient: str, device_id: int, sender: str, sender_device: int, payload: bytes
    ) -> Envelope:
        if not self._ephemeral:
            return super().enqueue(recipient, device_id, sender, sender_device, payload)
        device = self.device(recipient, device_id)
        envelope = Envelope(0, sender, sender_device, self.clock(), payload)
        for conn in device.connections:  # connected now, or never
            conn.push(Deliver(0, sender, sender_device, envelope.server_time_ms, payload))
        return envelope

    async def _handle_blob_http(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if not path.startswith("/api/v1/attachments"):
            return await self._handle_http(request)
        self.requests.append(f"{request.method} {path}")
        try:
            return self._blob_route(request, path)
        except HttpError as exc:
            return httpx.Response(exc.status, json={"code": exc.code.slug, "message": exc.message})

    def _blob_route(self, request: httpx.Request, path: str) -> httpx.Response:
        account, _ = self._authenticate(request)
        if path == "/api/v1/attachments" and request.method == "POST":
            announced = json.loads(request.content)
            size = announced["size"]
            if size > 104_857_600 + 16 * 1600:
                raise HttpError(413, ErrorCode.ATTACHMENT_TOO_LARGE, "too large")
            blob = FakeBlob(secrets.token_hex(16), size, account.username)
            blob.ttl_seconds = announced.get("ttl_seconds")
            self.blobs[blob.id] = blob
            body = {
                "id": blob.id,
                "size": size,
                "offset": 0,
                "chunk_bytes": self.chunk_bytes,
                "expires_at": "2026-11-28T00:00:00Z",
            }
            return httpx.Response(201, json=body)
        match = re.fullmatch(r"/api/v1/attachments/([0-9a-f]{32})", path)
        if match is None or match[1] not in self.blobs:
            raise HttpError(404, ErrorCode.UNKNOWN_ATTACHMENT, "no such blob")
        blob = self.blobs[match[1]]
        if blob.id in self.expired:
            raise HttpError(410, ErrorCode.ATTACHMENT_EXPIRED, "expired")
        headers = {"Upload-Offset": str(len(blob.data)), "Upload-Length": str(blob.size)}
        if request.method == "HEAD":
            return httpx.Response(200, headers=headers)
        if request.method == "PATCH":
            return self._patch(request, blob)
        if request.method == "GET":
            if self.downloads_down:
                raise httpx.ConnectError("connection refused", request=request)
            return self._get(request, blob)
        raise HttpError(405, ErrorCode.INVALID_REQUEST, "method not allowed")

    def _patch(self, request: httpx.Request, blob: FakeBlob) -> httpx.Response:
        assert request.headers["Content-Type"] == "application/offset+octet-stream"
        offset = int(request.headers["Upload-Offset"])
        chunk = request.content
        self.patched_bytes += len(chunk)
        if self.fail_patches:
            self.fail_patches -= 1
            raise httpx.RemoteProtocolError("connection dropped mid-body", request=request)
        if len(chunk) > MAX_CHUNK:
            raise HttpError(413, ErrorCode.TOO_LARGE, "chunk too large")
        if offset != len(blob.data) or offset + len(chunk) > blob.size:
            response = httpx.Response(
                409,
                json={"code": "upload_offset_mismatch", "message": "offset", "offset": offset},
                headers={"Upload-Offset": str(len(blob.data))},
            )
            return response
        blob.data += chunk
        return httpx.Response(204, headers={"Upload-Offset": str(len(blob.data))})

    def _get(self, request: httpx.Request, blob: FakeBlob) -> httpx.Response:
        if len(blob.data) < blob.size:
            raise HttpError(409, ErrorCode.UPLOAD_INCOMPLETE, "incomplete")
        start = 0
        status = 200
        if (wanted := re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))) is not None:
            start, status = int(wanted[1]), 206
        body = bytes(blob.data[start:])
        if self.cut_download_after is not None and len(body) > self.cut_download_after:
            cut, self.cut_download_after = self.cut_download_after, None
            return httpx.Response(status, stream=_CutStream(body[:cut], request))
        return httpx.Response(status, content=body)


class _CutStream(httpx.AsyncByteStream):
    """A body that breaks off: some bytes, then a transport error."""

    def __init__(self, head: bytes, request: httpx.Request) -> None:
        self.head = head
        self.request = request

    async def __aiter__(self) -> Any:
        yield self.head
        raise httpx.ReadError("connection lost mid-download", request=self.request)
