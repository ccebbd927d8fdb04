"""Attachment blobs (docs/api.md, "Attachments"): resumable chunked upload, download with
one Range, the limits, who may do what, expiry and the purge. Every refusal is checked by
status and ``code``; every test stores its blobs in a directory of its own."""

from __future__ import annotations

import io
import os
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from drf_spectacular.drainage import GENERATOR_STATS
from rest_framework.test import APIClient

from attachments import services
from attachments.models import Blob, BlobPart
from compliance import services as compliance_services
from keys.models import Device
from protocol.attachments import MAX_ATTACHMENT_BYTES, blob_size
from protocol.errors import ErrorCode
from tests.server.factories import SignedUp, add_device, authorized, sign_up
from tests.server.test_keys_api import assert_error

pytestmark = pytest.mark.django_db

CHUNK_TYPE = "application/offset+octet-stream"


@pytest.fixture(autouse=True)
def storage_dir(settings: Any, tmp_path: Path) -> Path:
    """The attachments storage of this test: a fresh directory."""
    location = tmp_path / "attachments"
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(location)},
        },
    }
    return location


def stored_files(location: Path) -> list[Path]:
    return sorted(path for path in location.rglob("*") if path.is_file())


def url(blob_id: str) -> str:
    return f"/api/v1/attachments/{blob_id}"


def create(client: APIClient, size: int) -> Any:
    return client.post("/api/v1/attachments", {"size": size}, format="json")


def created_id(client: APIClient, size: int) -> str:
    response = create(client, size)
    assert response.status_code == 201, response.json()
    blob_id: str = response.json()["id"]
    return blob_id


def patch(client: APIClient, blob_id: str, offset: int | None, data: bytes, **extra: Any) -> Any:
    if offset is not None:
        extra["HTTP_UPLOAD_OFFSET"] = str(offset)
    return client.generic("PATCH", url(blob_id), data, content_type=CHUNK_TYPE, **extra)


def upload(client: APIClient, data: bytes, chunk: int) -> str:
    """Create a blob of ``data`` and upload it in chunks of ``chunk`` bytes."""
    blob_id = created_id(client, len(data))
    for offset in range(0, len(data), chunk):
        response = patch(client, blob_id, offset, data[offset : offset + chunk])
        assert response.status_code == 204, response.content
    return blob_id


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content)


@pytest.fixture
def alice() -> SignedUp:
    return sign_up("alice")


# --- creating ----------------------------------------------------------------------------------


def test_create_answers_the_id_the_offset_and_when_the_upload_must_be_done(
    alice: SignedUp,
) -> None:
    before = timezone.now()
    response = create(alice.client(), 1234)

    assert response.status_code == 201, response.json()
    created = response.json()
    assert set(created) == {"id", "size", "offset", "chunk_bytes", "expires_at"}
    assert len(created["id"]) == 32
    assert int(created["id"], 16) >= 0 and created["id"] == created["id"].lower()
    assert (created["size"], created["offset"], created["chunk_bytes"]) == (1234, 0, 1048576)
    assert response["Location"] == url(created["id"])
    blob = Blob.objects.get()
    assert blob.device == Device.objects.get()
    assert blob.expires_at == blob.created_at + timedelta(hours=24)
    assert before <= blob.created_at <= timezone.now()


def test_the_size_limit_is_the_blob_of_100_mib_and_is_named_when_exceeded(
    alice: SignedUp,
) -> None:
    limit = django_settings.SEALPOST["MAX_ATTACHMENT_BLOB_BYTES"]
    assert limit == 104_857_600 + 16 * 1600

    too_big = create(alice.client(), limit + 1)
    assert_error(too_big, 413, "attachment_too_large", "size")
    assert str(limit) in too_big.json()["message"]
    assert create(alice.client(), limit).status_code == 201
    assert_error(create(alice.client(), 0), 400, "invalid_request", "size")
    assert_error(create(alice.client(), "many"), 400, "invalid_request", "size")  # type: ignore[arg-type]


def test_the_size_limit_matches_the_protocol() -> None:
    expected = blob_size(MAX_ATTACHMENT_BYTES)
    assert django_settings.SEALPOST["MAX_ATTACHMENT_BLOB_BYTES"] == expected


def test_the_daily_quota_answers_429_with_retry_after(settings: Any, alice: SignedUp) -> None:
    settings.SEALPOST = {**settings.SEALPOST, "ATTACHMENT_BYTES_PER_DAY": 1000}
    first = created_id(alice.client(), 600)

    refused = create(alice.client(), 500)

    assert_error(refused, 429, "rate_limited")
    assert 86_000 < int(refused["Retry-After"]) <= 86_400  # when the first leaves the window
    assert create(alice.client(), 400).status_code == 201  # what still fits is taken
    assert create(sign_up("bob").client(), 1000).status_code == 201  # per account
    # 23 hours later the first blob leaves the window in an hour.
    Blob.objects.filter(pk=first).update(created_at=timezone.now() - timedelta(hours=23))
    later = create(alice.client(), 500)
    assert_error(later, 429, "rate_limited")
    assert 3500 < int(later["Retry-After"]) <= 3600
    Blob.objects.filter(pk=first).update(created_at=timezone.now() - timedelta(hours=25))
    assert create(alice.client(), 500).status_code == 201
    # A blob above the quota itself would never fit: 413, not a wait.
    assert_error(create(alice.client(), 1001), 413, "attachment_too_large", "size")


# --- uploading and downloading ----------------------------------------------------------------


def test_a_blob_uploaded_in_chunks_downloads_byte_for_byte(
    alice: SignedUp, storage_dir: Path
) -> None:
    data = os.urandom(250_000)
    blob_id = created_id(alice.client(), len(data))

    offsets = []
    for offset in range(0, len(data), 100_000):
        response = patch(alice.client(), blob_id, offset, data[offset : offset + 100_000])
        assert response.status_code == 204
        offsets.append(int(response["Upload-Offset"]))
        assert response["Upload-Length"] == str(len(data))
    download = alice.client().get(url(blob_id))

    assert offsets == [100_000, 200_000, 250_000]
    assert download.status_code == 200
    assert download["Content-Type"] == "application/octet-stream"
    assert download["Content-Length"] == str(len(data))
    assert download["Accept-Ranges"] == "bytes"
    assert body(download) == data
    blob = Blob.objects.get()
    assert blob.completed_at is not None
    ttl = timedelta(seconds=django_settings.SEALPOST["ATTACHMENT_TTL_SECONDS"])
    assert blob.expires_at == blob.created_at + ttl
    assert BlobPart.objects.count() == 3
    assert len(stored_files(storage_dir)) == 3
    assert all(
        str(path.relative_to(storage_dir)).startswith(f"blobs/{blob_id}/")
        for path in stored_files(storage_dir)
    )


def test_a_4_mib_chunk_is_taken_and_a_larger_one_refused(alice: SignedUp) -> None:
    data = os.urandom(4 * 1024 * 1024 + 1)
    blob_id = created_id(alice.client(), len(data))

    too_big = patch(alice.client(), blob_id, 0, data)
    taken = patch(alice.client(), blob_id, 0, data[:-1])

    assert_error(too_big, 413, "too_large", "Content-Length")
    assert taken.status_code == 204
    assert taken["Upload-Offset"] == str(len(data) - 1)


def test_a_mismatched_offset_gets_409_and_the_upload_resumes_from_the_stored_offset(
    alice: SignedUp, storage_dir: Path
) -> None:
    data = os.urandom(3000)
    blob_id = created_id(alice.client(), len(data))
    assert patch(alice.client(), blob_id, 0, data[:1000]).status_code == 204

    # The client lost the answer and sends the first chunk again, then jumps ahead.
    again = patch(alice.client(), blob_id, 0, data[:1000])
    ahead = patch(alice.client(), blob_id, 2000, data[2000:])

    for refused in (again, ahead):
        assert_error(refused, 409, "upload_offset_mismatch")
        assert refused["Upload-Offset"] == "1000"
        assert refused.json()["offset"] == 1000
    resume = alice.client().head(url(blob_id))
    assert resume.status_code == 200
    assert (resume["Upload-Offset"], resume["Upload-Length"]) == ("1000", "3000")
    assert resume["Cache-Control"] == "no-store"
    offset = int(resume["Upload-Offset"])
    assert patch(alice.client(), blob_id, offset, data[offset:2000]).status_code == 204
    assert patch(alice.client(), blob_id, 2000, data[2000:]).status_code == 204
    assert body(alice.client().get(url(blob_id))) == data
    # Nothing of a refused chunk was stored.
    assert list(BlobPart.objects.values_list("offset", flat=True)) == [0, 1000, 2000]
    assert len(stored_files(storage_dir)) == 3


def test_a_chunk_that_loses_a_race_for_its_offset_leaves_nothing_behind(
    alice: SignedUp, storage_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob_id = created_id(alice.client(), 100)
    real = services._check_append
    calls: list[int] = []

    def another_patch_won(blob: Blob, device: Device, offset: int, length: int) -> None:
        calls.append(offset)
        if len(calls) == 2:  # under the row lock, after the object was written
            Blob.objects.filter(pk=blob.pk).update(offset=40)
            blob.offset = 40
        real(blob, device, offset, length)

    monkeypatch.setattr(services, "_check_append", another_patch_won)
    response = patch(alice.client(), blob_id, 0, b"x" * 50)

    assert_error(response, 409, "upload_offset_mismatch")
    assert response["Upload-Offset"] == "40"
    assert not BlobPart.objects.exists()
    assert stored_files(storage_dir) == []


def test_a_body_cut_short_stores_nothing(alice: SignedUp, storage_dir: Path) -> None:
    blob_id = created_id(alice.client(), 1000)

    # Content-Length promises 1000 bytes; the connection delivers 600.
    response = alice.client().generic(
        "PATCH",
        url(blob_id),
        b"",
        content_type=CHUNK_TYPE,
        HTTP_UPLOAD_OFFSET="0",
        CONTENT_LENGTH="1000",
        **{"wsgi.input": io.BytesIO(os.urandom(600))},
    )

    assert_error(response, 400, "truncated")
    assert "600 of its 1000" in response.json()["message"]
    assert Blob.objects.get().offset == 0
    assert stored_files(storage_dir) == []


def test_chunks_must_fit_the_blob_and_say_where_they_go(alice: SignedUp) -> None:
    blob_id = created_id(alice.client(), 100)
    client = alice.client()

    past_the_end = patch(client, blob_id, 0, b"x" * 101)
    no_offset = patch(client, blob_id, None, b"x")
    bad_offset = patch(client, blob_id, None, b"x", HTTP_UPLOAD_OFFSET="-1")
    json_body = client.patch(url(blob_id), {"data": "x"}, format="json", HTTP_UPLOAD_OFFSET="0")
    empty = client.generic(
        "PATCH", url(blob_id), b"", content_type=CHUNK_TYPE, HTTP_UPLOAD_OFFSET="0"
    )

    assert_error(past_the_end, 400, "invalid_request")
    assert "past the blob's size of 100" in past_the_end.json()["message"]
    assert_error(no_offset, 400, "invalid_request", "Upload-Offset")
    assert_error(bad_offset, 400, "invalid_request", "Upload-Offset")
    assert_error(json_body, 400, "invalid_request", "Content-Type")
    assert_error(empty, 400, "invalid_request", "Content-Length")
    assert Blob.objects.get().offset == 0


def test_a_complete_blob_takes_no_more_chunks(alice: SignedUp) -> None:
    blob_id = upload(alice.client(), b"y" * 10, 10)

    response = patch(alice.client(), blob_id, 10, b"z")

    assert_error(response, 409, "upload_offset_mismatch")
    assert response["Upload-Offset"] == "10"


def test_range_downloads(alice: SignedUp) -> None:
    data = os.urandom(3000)
    blob_id = upload(alice.client(), data, 1000)  # three parts
    client = alice.client()

    def get_range(value: str) -> Any:
        return client.get(url(blob_id), HTTP_RANGE=value)

    for header, start, end in (
        ("bytes=100-199", 100, 200),
        ("bytes=900-2100", 900, 2101),  # across all three parts
        ("bytes=2500-", 2500, 3000),
        ("bytes=-50", 2950, 3000),
        ("bytes=2990-9999", 2990, 3000),  # the end is clamped
        ("bytes=0-0", 0, 1),
    ):
        response = get_range(header)
        assert response.status_code == 206, header
        assert response["Content-Range"] == f"bytes {start}-{end - 1}/3000", header
        assert response["Content-Length"] == str(end - start), header
        assert body(response) == data[start:end], header

    for ignored in ("bytes=0-9,20-29", "items=0-9", "bytes=20-10"):
        whole = get_range(ignored)
        assert whole.status_code == 200, ignored
        assert body(whole) == data

    unsatisfiable = get_range("bytes=3000-")
    assert unsatisfiable.status_code == 416
    assert unsatisfiable["Content-Range"] == "bytes */3000"
    assert unsatisfiable.json()["code"] == "invalid_request"


def test_a_download_before_the_upload_is_complete_gets_409(alice: SignedUp) -> None:
    blob_id = created_id(alice.client(), 100)
    patch(alice.client(), blob_id, 0, b"x" * 40)

    response = alice.client().get(url(blob_id))

    assert_error(response, 409, "upload_incomplete")
    assert response["Upload-Offset"] == "40"


# --- who may do what ----------------------------------------------------------------------------


def test_only_the_uploading_device_may_upload_but_any_device_may_download(
    alice: SignedUp,
) -> None:
    _, second_token = add_device(alice, 2)
    bob = sign_up("bob")
    blob_id = created_id(alice.client(), 20)

    for other in (authorized(second_token), bob.client()):
        assert_error(patch(other, blob_id, 0, b"x" * 20), 403, "forbidden")
    assert patch(alice.client(), blob_id, 0, b"x" * 20).status_code == 204
    for reader in (authorized(second_token), bob.client()):
        response = reader.get(url(blob_id))
        assert response.status_code == 200
        assert body(response) == b"x" * 20
        assert reader.head(url(blob_id))["Upload-Offset"] == "20"


def test_unknown_ids_answer_404_and_malformed_ones_400(alice: SignedUp) -> None:
    client = alice.client()
    unknown = "0" * 32

    assert_error(client.get(url(unknown)), 404, "unknown_attachment")
    assert_error(patch(client, unknown, 0, b"x"), 404, "unknown_attachment")
    assert client.head(url(unknown)).status_code == 404
    for bad in ("xyz", "A" * 32, "0" * 33, "g" * 32):
        assert_error(client.get(url(bad)), 400, "invalid_request", "blob_id")
        assert_error(patch(client, bad, 0, b"x"), 400, "invalid_request", "blob_id")


def test_every_endpoint_needs_a_device_token(alice: SignedUp) -> None:
    blob_id = upload(alice.client(), b"x" * 5, 5)
    anonymous = APIClient()

    assert_error(create(anonymous, 5), 401, "unauthorized")
    assert_error(patch(anonymous, blob_id, 5, b"x"), 401, "unauthorized")
    assert_error(anonymous.get(url(blob_id)), 401, "unauthorized")
    assert anonymous.head(url(blob_id)).status_code == 401
    assert_error(authorized("not-a-token").get(url(blob_id)), 401, "unauthorized")


def test_a_deleted_device_leaves_its_blobs_to_their_expiry(alice: SignedUp) -> None:
    blob_id = upload(alice.client(), b"x" * 5, 5)
    bob = sign_up("bob")

    Device.objects.filter(account__user__username="alice").delete()

    blob = Blob.objects.get()
    assert blob.device is None
    assert body(bob.client().get(url(blob_id))) == b"x" * 5


# --- expiry and the purge ------------------------------------------------------------------------


def test_an_expired_blob_answers_410(alice: SignedUp) -> None:
    complete = upload(alice.client(), b"x" * 5, 5)
    incomplete = created_id(alice.client(), 5)
    Blob.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    assert_error(alice.client().get(url(complete)), 410, "attachment_expired")
    assert_error(patch(alice.client(), incomplete, 0, b"x"), 410, "attachment_expired")
    assert alice.client().head(url(incomplete)).status_code == 410


def test_a_blob_whose_objects_are_gone_answers_410(alice: SignedUp, storage_dir: Path) -> None:
    blob_id = upload(alice.client(), b"x" * 5, 5)
    for path in stored_files(storage_dir):
        path.unlink()

    assert_error(alice.client().get(url(blob_id)), 410, "attachment_expired")


def test_the_purge_deletes_expired_blobs_with_their_files_and_nothing_else(
    alice: SignedUp, storage_dir: Path, django_capture_on_commit_callbacks: Any
) -> None:
    expired = upload(alice.client(), os.urandom(3000), 1000)
    kept = upload(alice.client(), b"kept", 4)
    abandoned = created_id(alice.client(), 100)
    patch(alice.client(), abandoned, 0, b"x" * 10)
    # An object a crash left without a row, under the expired blob's prefix.
    (storage_dir / "blobs" / expired / "000000003000-orphan").write_bytes(b"orphan")
    blob = Blob.objects.get(pk=expired)
    kept_files = [p for p in stored_files(storage_dir) if kept in str(p)]

    deadline = blob.expires_at
    with django_capture_on_commit_callbacks(execute=True):
        early = compliance_services.purge_expired(now=deadline - timedelta(seconds=1))
    assert early["attachments"] == 1  # only the abandoned upload, after its 24 hours
    assert not Blob.objects.filter(pk=abandoned).exists()
    Blob.objects.filter(pk=kept).update(expires_at=deadline + timedelta(days=1))
    with django_capture_on_commit_callbacks(execute=True):
        counts = compliance_services.purge_expired(now=deadline, batch_size=1)

    assert counts["attachments"] == 1
    assert list(Blob.objects.values_list("pk", flat=True)) == [kept]
    assert list(BlobPart.objects.values_list("blob_id", flat=True)) == [kept]
    assert stored_files(storage_dir) == kept_files
    assert sorted(p.name for p in (storage_dir / "blobs").iterdir()) == [kept]


def test_a_disappearing_messages_blob_expires_its_ttl_after_completion(
    alice: SignedUp, storage_dir: Path, django_capture_on_commit_callbacks: Any
) -> None:
    response = alice.client().post(
        "/api/v1/attachments", {"size": 10, "ttl_seconds": 60}, format="json"
    )
    assert response.status_code == 201, response.json()
    blob_id = response.json()["id"]
    blob = Blob.objects.get(pk=blob_id)
    assert blob.ttl_seconds == 60
    assert blob.expires_at == blob.created_at + timedelta(hours=24)  # the upload's time
    assert patch(alice.client(), blob_id, 0, b"x" * 10).status_code == 204
    blob.refresh_from_db()
    assert blob.completed_at is not None
    assert blob.expires_at == blob.completed_at + timedelta(seconds=60)
    regular = upload(alice.client(), b"y" * 10, 10)  # no ttl: the usual retention
    assert Blob.objects.get(pk=regular).expires_at > blob.expires_at + timedelta(days=1)

    with django_capture_on_commit_callbacks(execute=True):
        counts = compliance_services.purge_expired(now=blob.expires_at)
    assert counts["attachments"] == 1
    assert list(Blob.objects.values_list("pk", flat=True)) == [regular]
    assert not any(blob_id in str(p) for p in stored_files(storage_dir))


def test_a_ttl_longer_than_the_retention_is_capped(settings: Any, alice: SignedUp) -> None:
    limits = dict(settings.SEALPOST)
    limits["ATTACHMENT_TTL_SECONDS"] = 3600
    settings.SEALPOST = limits
    response = alice.client().post(
        "/api/v1/attachments", {"size": 4, "ttl_seconds": 31_536_000}, format="json"
    )
    blob_id = response.json()["id"]
    assert response.json()["expires_at"] is not None
    assert patch(alice.client(), blob_id, 0, b"zzzz").status_code == 204
    blob = Blob.objects.get(pk=blob_id)
    assert blob.expires_at == blob.created_at + timedelta(seconds=3600)


def test_ttl_seconds_out_of_range_is_refused_by_name(alice: SignedUp) -> None:
    for ttl in (0, 31_536_001, "soon"):
        response = alice.client().post(
            "/api/v1/attachments", {"size": 4, "ttl_seconds": ttl}, format="json"
        )
        assert_error(response, 400, "invalid_request", "ttl_seconds")
    assert not Blob.objects.exists()
    with pytest.raises(services.ServiceError) as info:
        services.create_blob(Device.objects.get(), 4, ttl_seconds=0)
    assert info.value.code is ErrorCode.INVALID_REQUEST


def test_the_purge_leaves_the_storage_directory_empty(
    alice: SignedUp, storage_dir: Path, django_capture_on_commit_callbacks: Any
) -> None:
    for size in (10, 20, 30):
        upload(alice.client(), b"z" * size, 7)

    with django_capture_on_commit_callbacks(execute=True):
        counts = compliance_services.purge_expired(
            now=timezone.now() + timedelta(days=400), batch_size=2
        )

    assert counts["attachments"] == 3
    assert not Blob.objects.exists() and not BlobPart.objects.exists()
    assert stored_files(storage_dir) == []
    assert list((storage_dir / "blobs").iterdir()) == []


def test_the_purge_deletes_files_only_after_its_transaction_commits(
    alice: SignedUp, storage_dir: Path, django_capture_on_commit_callbacks: Any
) -> None:
    upload(alice.client(), b"z" * 10, 10)

    with django_capture_on_commit_callbacks() as callbacks:
        services.purge_expired_blobs(timezone.now() + timedelta(days=400), 10)
        assert not Blob.objects.exists()
        assert len(stored_files(storage_dir)) == 1  # the rows are gone, not yet committed

    assert len(callbacks) == 1
    callbacks[0]()
    assert stored_files(storage_dir) == []


# --- over ASGI, as under Daphne -----------------------------------------------------------------


def asgi_client(token: str) -> httpx.AsyncClient:
    from project.asgi import application

    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application),
        base_url="http://localhost",
        headers={"Authorization": f"Bearer {token}"},
    )


@database_sync_to_async
def _sign_up() -> str:
    return sign_up("alice").token


@pytest.mark.django_db(transaction=True)
async def test_over_asgi_a_blob_uploads_and_streams_without_loading_it_whole() -> None:
    token = await _sign_up()
    data = os.urandom(700_000)
    async with asgi_client(token) as client:
        created = await client.post("/api/v1/attachments", json={"size": len(data)})
        blob_id = created.json()["id"]
        for offset in range(0, len(data), 300_000):
            response = await client.patch(
                url(blob_id),
                content=data[offset : offset + 300_000],
                headers={"Content-Type": CHUNK_TYPE, "Upload-Offset": str(offset)},
            )
            assert response.status_code == 204, response.text
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            whole = await client.get(url(blob_id))
            part = await client.get(url(blob_id), headers={"Range": "bytes=299990-300009"})

    assert whole.status_code == 200
    assert whole.content == data
    assert part.status_code == 206
    assert part.content == data[299_990:300_010]
    # Django warns when it must load a synchronous iterator whole to send it over ASGI.
    assert not [w for w in caught if "StreamingHttpResponse" in str(w.message)]


# --- admin and schema ---------------------------------------------------------------------------


def test_the_admin_lists_blobs_read_only(alice: SignedUp, client: Client) -> None:
    blob_id = upload(alice.client(), b"x" * 5, 5)
    get_user_model().objects.create_superuser("root", password="root-password-1")
    client.login(username="root", password="root-password-1")

    listing = client.get("/admin/attachments/blob/")
    page = client.get(f"/admin/attachments/blob/{blob_id}/change/")

    assert listing.status_code == page.status_code == 200
    assert blob_id in listing.content.decode()
    assert client.get("/admin/attachments/blob/add/").status_code == 403
    assert (
        client.post(f"/admin/attachments/blob/{blob_id}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert Blob.objects.exists()


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import yaml

    path = tmp_path_factory.mktemp("schema") / "schema.yaml"
    GENERATOR_STATS.reset()
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def test_the_schema_documents_the_attachment_endpoints(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    create_op = paths["/api/v1/attachments"]["post"]
    chunk_op = paths["/api/v1/attachments/{blob_id}"]["patch"]
    download_op = paths["/api/v1/attachments/{blob_id}"]["get"]

    assert "`attachment_too_large`" in create_op["responses"]["413"]["description"]
    assert "`rate_limited`" in create_op["responses"]["429"]["description"]
    assert "`upload_offset_mismatch`" in chunk_op["responses"]["409"]["description"]
    assert "`forbidden`" in chunk_op["responses"]["403"]["description"]
    assert "application/offset+octet-stream" in chunk_op["requestBody"]["content"]
    assert "Upload-Offset" in chunk_op["responses"]["204"]["headers"]
    assert "`upload_incomplete`" in download_op["responses"]["409"]["description"]
    assert "`attachment_expired`" in download_op["responses"]["410"]["description"]
    assert "`unknown_attachment`" in download_op["responses"]["404"]["description"]
    assert "application/octet-stream" in download_op["responses"]["206"]["content"]
    for operation in (create_op, chunk_op, download_op):
        assert operation["security"] == [{"deviceToken": []}]
        for status, response in operation["responses"].items():
            if status.startswith("4") and status != "416":
                content = response["content"]["application/json"]["schema"]
                assert content == {"$ref": "#/components/schemas/Error"}


def test_error_codes_used_here_exist() -> None:
    for code in (
        "attachment_too_large",
        "unknown_attachment",
        "attachment_expired",
        "upload_offset_mismatch",
        "upload_incomplete",
    ):
        ErrorCode.from_slug(code)
