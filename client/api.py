"""Async client for the REST API of docs/api.md (accounts, devices, keys, linking).

Binary values are ``bytes`` here and base64 only on the wire (fields named ``*_b64``).
Every failure is a ``SealpostError``: the server's ``{code, message, fields}`` keeps its
code; a connection that cannot be made is ``unreachable``; an answer outside the contract
is ``bad_response``. Responses are checked for shape before anything is returned, so the
rest of the client never handles a half-parsed dict.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlsplit

import httpx

from protocol.errors import ErrorCode

from .errors import LocalErrorCode, SealpostError

DEFAULT_TIMEOUT = 30.0
MAX_PROVISIONING_WAIT = 30  # seconds the server holds GET /api/v1/provisioning/{address}
CHUNK_CONTENT_TYPE = "application/offset+octet-stream"  # an attachment upload's PATCH body


@dataclass(frozen=True, slots=True)
class Registration:
    username: str
    device_id: int
    token: str


@dataclass(frozen=True, slots=True)
class DeviceUpload:
    """The ``device`` object of sign-up and of adding a device, as encoded keys."""

    certificate: bytes
    name: str
    signed_prekey: bytes
    last_resort_kem_prekey: bytes
    one_time_prekeys: Sequence[bytes]
    kem_prekeys: Sequence[bytes]


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    device_id: int
    registration_id: int
    certificate: bytes


@dataclass(frozen=True, slots=True)
class AccountKeys:
    """``GET /api/v1/accounts/{username}/keys``: the identity key, the devices the server
    serves, and the account's signed device list (``None`` if the server sent none)."""

    username: str
    identity_key: bytes
    devices: tuple[DeviceEntry, ...]
    device_list: bytes | None


@dataclass(frozen=True, slots=True)
class ClaimedBundle:
    device_id: int
    registration_id: int
    bundle: bytes


@dataclass(frozen=True, slots=True)
class ClaimedBundles:
    username: str
    identity_key: bytes
    bundles: tuple[ClaimedBundle, ...]


@dataclass(frozen=True, slots=True)
class PreKeyCounts:
    one_time_prekeys: int
    kem_prekeys: int
    low_watermark: int
    max_stored: int


@dataclass(frozen=True, slots=True)
class Expiring:
    """A provisioning address or a link token, with the server's expiry time."""

    value: str
    expires_at: str


@dataclass(frozen=True, slots=True)
class BlobUpload:
    """``POST /api/v1/attachments``: the new blob, and the chunk size the server suggests."""

    id: str  # 32 lower-case hex digits
    size: int
    offset: int
    chunk_bytes: int
    expires_at: str


@dataclass(frozen=True, slots=True)
class OwnDevice:
    """One entry of ``GET /api/v1/devices`` (the caller's own account)."""

    device_id: int
    name: str
    created_at: str
    last_seen_at: str | None
    current: bool


def normalize_server_url(url: str) -> str:
    """``https://host[:port][/prefix]`` without a trailing slash; refuses other schemes."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SealpostError(
            ErrorCode.INVALID_VALUE,
            f"server URL {url!r} must start with http:// or https:// and name a host",
        )
    if parts.query or parts.fragment:
        raise SealpostError(ErrorCode.INVALID_VALUE, f"server URL {url!r} has a query or fragment")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


class Api:
    """One server, optionally authenticated as one device (``token``).

    ``transport`` is for tests: an ``httpx.MockTransport`` serves requests in memory.
    """

    def __init__(
        self,
        server_url: str,
        token: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.server_url = normalize_server_url(server_url)
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=self.server_url, headers=headers, timeout=timeout, transport=transport
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- accounts -----------------------------------------------------------------------

    async def create_account(
        self,
        username: str,
        password: str,
        identity_key: bytes,
        device: DeviceUpload,
        device_list: bytes,
        *,
        birth_date: date | None = None,
        age_confirmed: bool | None = None,
        consents: Sequence[str] | None = None,
    ) -> Registration:
        """Sign up. The region's age rule takes ``birth_date`` or ``age_confirmed``, and
        ``consents`` the purposes agreed to; each goes in the body only when given."""
        body: dict[str, Any] = {
            "username": username,
            "password": password,
            "identity_key_b64": _b64(identity_key),
            "device": _device_body(device),
            "device_list_b64": _b64(device_list),
        }
        if birth_date is not None:
            body["birth_date"] = birth_date.isoformat()
        if age_confirmed is not None:
            body["age_confirmed"] = age_confirmed
        if consents is not None:
            body["consents"] = list(consents)
        return _registration(await self._request("POST", "/api/v1/accounts", json=body))

    async def account_keys(self, username: str, *, bearer: str | None = None) -> AccountKeys:
        """``bearer`` replaces this object's token for this one request (a device being
        linked has only its link token)."""
        data = _object(
            await self._request("GET", f"/api/v1/accounts/{_path(username)}/keys", bearer=bearer)
        )
        devices = tuple(
            DeviceEntry(
                device_id=_int(item, "device_id"),
                registration_id=_int(item, "registration_id"),
                certificate=_bytes(item, "certificate_b64"),
            )
            for item in _list_of_objects(data, "devices")
        )
        # null or "" (an account from before device lists): no list to check against.
        has_list = data.get("device_list_b64") not in (None, "")
        device_list = _bytes(data, "device_list_b64") if has_list else None
        return AccountKeys(
            _str(data, "username"), _bytes(data, "identity_key_b64"), devices, device_list
        )

    async def claim_bundles(
        self, username: str, device_ids: Sequence[int] | None = None
    ) -> ClaimedBundles:
        body: dict[str, Any] = {} if device_ids is None else {"device_ids": list(device_ids)}
        data = _object(
            await self._request("POST", f"/api/v1/accounts/{_path(username)}/bundles", json=body)
        )
        bundles = tuple(
            ClaimedBundle(
                device_id=_int(item, "device_id"),
                registration_id=_int(item, "registration_id"),
                bundle=_bytes(item, "bundle_b64"),
            )
            for item in _list_of_objects(data, "bundles")
        )
        return ClaimedBundles(_str(data, "username"), _bytes(data, "identity_key_b64"), bundles)

    # --- linking a device ---------------------------------------------------------------

    async def create_provisioning_address(self) -> Expiring:
        """New device: a provisioning address (no authentication)."""
        data = _object(await self._request("POST", "/api/v1/provisioning", json={}))
        return Expiring(_str(data, "address"), _str(data, "expires_at"))

    async def wait_for_provisioning(self, address: str, wait: float) -> bytes | None:
        """New device: the sealed provisioning message, or None if ``wait`` seconds passed
        without one (the server holds the request that long)."""
        seconds = max(0, min(MAX_PROVISIONING_WAIT, math.ceil(wait)))
        data = await self._request(
            "GET",
            f"/api/v1/provisioning/{_path(address)}",
            params={"wait": str(seconds)},
            timeout=seconds + DEFAULT_TIMEOUT,
        )
        if data is None:  # 204: nothing yet
            return None
        return _bytes(_object(data), "sealed_b64")

    async def create_link_token(self) -> Expiring:
        """Existing device: a single-use token that lets one new device join the account."""
        data = _object(await self._request("POST", "/api/v1/devices/link-tokens", json={}))
        return Expiring(_str(data, "link_token"), _str(data, "expires_at"))

    async def put_provisioning(self, address: str, sealed: bytes) -> None:
        """Existing device: leave the sealed provisioning message at the new device's address."""
        await self._request(
            "PUT", f"/api/v1/provisioning/{_path(address)}", json={"sealed_b64": _b64(sealed)}
        )

    async def add_linked_device(
        self, username: str, link_token: str, device: DeviceUpload, device_list: bytes
    ) -> Registration:
        """New device: register with the link token (no bearer token)."""
        body = {
            "username": username,
            "link_token": link_token,
            "device": _device_body(device),
            "device_list_b64": _b64(device_list),
        }
        return _registration(await self._request("POST", "/api/v1/devices", json=body))

    # --- the calling device ---------------------------------------------------------------

    async def devices(self) -> list[OwnDevice]:
        data = await self._request("GET", "/api/v1/devices")
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise _bad_response("GET /api/v1/devices: expected a list of objects")
        return [_own_device(item) for item in data]

    async def rename_device(self, device_id: int, name: str) -> OwnDevice:
        data = await self._request("PATCH", f"/api/v1/devices/{device_id}", json={"name": name})
        return _own_device(_object(data))

    async def revoke_device(self, device_id: int, device_list: bytes) -> None:
        await self._request(
            "DELETE",
            f"/api/v1/devices/{device_id}",
            json={"device_list_b64": _b64(device_list)},
        )

    async def prekey_counts(self) -> PreKeyCounts:
        return _counts(await self._request("GET", "/api/v1/devices/self/prekeys"))

    async def upload_prekeys(
        self, one_time_prekeys: Sequence[bytes], kem_prekeys: Sequence[bytes]
    ) -> PreKeyCounts:
        body = {
            "one_time_prekeys_b64": [_b64(key) for key in one_time_prekeys],
            "kem_prekeys_b64": [_b64(key) for key in kem_prekeys],
        }
        return _counts(await self._request("POST", "/api/v1/devices/self/prekeys", json=body))

    async def put_signed_prekey(self, signed_prekey: bytes) -> None:
        await self._request(
            "PUT",
            "/api/v1/devices/self/signed-prekey",
            json={"signed_prekey_b64": _b64(signed_prekey)},
        )

    async def put_last_resort_kem_prekey(self, kem_prekey: bytes) -> None:
        await self._request(
            "PUT",
            "/api/v1/devices/self/last-resort-kem-prekey",
            json={"kem_prekey_b64": _b64(kem_prekey)},
        )

    # --- attachments (docs/api.md, "Attachments") ---------------------------------------

    async def create_blob(self, size: int, ttl_seconds: int | None = None) -> BlobUpload:
        """Announce an encrypted blob of ``size`` bytes (``protocol.attachments.blob_size``);
        ``ttl_seconds`` (a disappearing message's timer) has the server drop it that long
        after the upload completes."""
        body: dict[str, int] = {"size": size}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        data = _object(await self._request("POST", "/api/v1/attachments", json=body))
        return BlobUpload(
            _str(data, "id"),
            _int(data, "size"),
            _int(data, "offset"),
            _int(data, "chunk_bytes"),
            _str(data, "expires_at"),
        )

    async def upload_chunk(self, blob_id: str, offset: int, chunk: bytes) -> int:
        """Append ``chunk`` at ``offset`` (which must be where the server is); returns the
        new offset. A different offset is UPLOAD_OFFSET_MISMATCH: ask ``upload_offset``."""
        headers = {"Upload-Offset": str(offset), "Content-Type": CHUNK_CONTENT_TYPE}
        response = await self._raw("PATCH", _blob_path(blob_id), content=chunk, headers=headers)
        return _upload_offset(response, f"PATCH {_blob_path(blob_id)}")

    async def upload_offset(self, blob_id: str) -> int:
        """How many bytes of the blob the server holds: where an upload resumes."""
        response = await self._raw("HEAD", _blob_path(blob_id))
        return _upload_offset(response, f"HEAD {_blob_path(blob_id)}")

    async def download_blob(self, blob_id: str, start: int = 0) -> AsyncIterator[bytes]:
        """The blob's bytes from ``start`` on (one ``Range`` request), as they arrive. A
        lost connection raises UNREACHABLE mid-way: ask again from where it stopped."""
        path = _blob_path(blob_id)
        headers = {"Range": f"bytes={start}-", "Accept": "application/octet-stream"}
        try:
            async with self._http.stream("GET", path, headers=headers) as response:
                if not response.is_success:
                    await response.aread()
                    raise _error_from(response, f"GET {path}")
                skip = start if response.status_code == 200 else 0  # Range ignored
                async for piece in response.aiter_bytes():
                    if skip:
                        dropped = min(skip, len(piece))
                        piece, skip = piece[dropped:], skip - dropped
                    if piece:
                        yield piece
        except httpx.TimeoutException:
            raise SealpostError(
                LocalErrorCode.UNREACHABLE, f"{self.server_url} did not answer GET {path} in time"
            ) from None
        except httpx.TransportError as exc:
            raise SealpostError(
                LocalErrorCode.UNREACHABLE, f"GET {path} from {self.server_url}: {_reason(exc)}"
            ) from None

    async def _raw(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request whose answer is read from its headers, not a JSON body."""
        what = f"{method} {path}"
        try:
            response = await self._http.request(method, path, content=content, headers=headers)
        except httpx.TimeoutException:
            raise SealpostError(
                LocalErrorCode.UNREACHABLE, f"{self.server_url} did not answer {what} in time"
            ) from None
        except httpx.TransportError as exc:
            raise SealpostError(
                LocalErrorCode.UNREACHABLE, f"cannot reach {self.server_url}: {_reason(exc)}"
            ) from None
        if not response.is_success:
            raise _error_from(response, what)
        return response

    # --- plumbing -----------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        json: object = None,
        *,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
        bearer: str | None = None,
    ) -> Any:
        what = f"{method} {path}"
        headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else None
        try:
            response = await self._http.request(
                method,
                path,
                json=json,
                params=params,
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException:
            raise SealpostError(
                LocalErrorCode.UNREACHABLE, f"{self.server_url} did not answer {what} in time"
            ) from None
        except httpx.TransportError as exc:
            raise SealpostError(
                LocalErrorCode.UNREACHABLE, f"cannot reach {self.server_url}: {_reason(exc)}"
            ) from None
        if response.is_success:
            if response.status_code == 204 or not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise _bad_response(f"{what}: the answer is not JSON") from None
        raise _error_from(response, what)


def _error_from(response: httpx.Response, what: str) -> SealpostError:
    status = response.status_code
    retry_after = _retry_after(response.headers.get("Retry-After"))
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        return SealpostError(
            LocalErrorCode.BAD_RESPONSE,
            f"{what}: HTTP {status} without an error code",
            status=status,
            retry_after=retry_after,
        )
    slug = body["code"]
    message = body.get("message")
    message = message if isinstance(message, str) and message else f"HTTP {status}"
    fields = body.get("fields")
    clean_fields = fields if isinstance(fields, dict) else None
    try:
        code = ErrorCode.from_slug(slug)
    except KeyError:
        # A code newer than this client: keep it readable rather than guess.
        return SealpostError(
            LocalErrorCode.BAD_RESPONSE,
            f"{what}: HTTP {status} {slug}: {message}",
            status=status,
            fields=clean_fields,
            retry_after=retry_after,
        )
    return SealpostError(code, message, status=status, fields=clean_fields, retry_after=retry_after)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _reason(exc: httpx.TransportError) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


def _bad_response(message: str) -> SealpostError:
    return SealpostError(LocalErrorCode.BAD_RESPONSE, message)


def _path(username: str) -> str:
    return quote(username, safe="")


def _blob_path(blob_id: str) -> str:
    return f"/api/v1/attachments/{quote(blob_id, safe='')}"


def _upload_offset(response: httpx.Response, what: str) -> int:
    value = response.headers.get("Upload-Offset", "")
    if not value.isascii() or not value.isdigit():
        raise _bad_response(f"{what}: no Upload-Offset in the answer")
    return int(value)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _device_body(device: DeviceUpload) -> dict[str, Any]:
    return {
        "certificate_b64": _b64(device.certificate),
        "name": device.name,
        "signed_prekey_b64": _b64(device.signed_prekey),
        "last_resort_kem_prekey_b64": _b64(device.last_resort_kem_prekey),
        "one_time_prekeys_b64": [_b64(key) for key in device.one_time_prekeys],
        "kem_prekeys_b64": [_b64(key) for key in device.kem_prekeys],
    }


def _registration(data: Any) -> Registration:
    obj = _object(data)
    return Registration(
        username=_str(obj, "username"), device_id=_int(obj, "device_id"), token=_str(obj, "token")
    )


def _own_device(item: dict[str, Any]) -> OwnDevice:
    return OwnDevice(
        device_id=_int(item, "device_id"),
        name=_str(item, "name"),
        created_at=_str(item, "created_at"),
        last_seen_at=_optional_str(item, "last_seen_at"),
        current=_bool(item, "current"),
    )


def _counts(data: Any) -> PreKeyCounts:
    obj = _object(data)
    return PreKeyCounts(
        one_time_prekeys=_int(obj, "one_time_prekeys"),
        kem_prekeys=_int(obj, "kem_prekeys"),
        low_watermark=_int(obj, "low_watermark"),
        max_stored=_int(obj, "max_stored"),
    )


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _bad_response("expected a JSON object")
    return data


def _str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise _bad_response(f"field {key!r} is missing or not a string")
    return value


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise _bad_response(f"field {key!r} is not a string")
    return value


def _int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad_response(f"field {key!r} is missing or not an integer")
    return value


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise _bad_response(f"field {key!r} is missing or not a boolean")
    return value


def _bytes(data: dict[str, Any], key: str) -> bytes:
    value = _str(data, key)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad_response(f"field {key!r} is not standard base64") from None


def _list_of_objects(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _bad_response(f"field {key!r} is missing or not a list of objects")
    return value
