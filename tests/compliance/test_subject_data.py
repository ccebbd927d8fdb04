"""Export and erasure cover every model that can hold a person's data, including models
that do not exist yet.

The walk: every installed model with a foreign key (or one-to-one) to the login, the
account or a device, directly or through one other model, must be registered in
compliance.subject_data. Then a person gets rows in every such model (a factory per
model: a new model fails here until it has one), the export must contain each of those
rows, and after erasure no row may still point at the person; what a law keeps is
declared in the report and pseudonymised.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.db import models
from django.utils import timezone

from attachments import services as attachments_services
from attachments.models import Blob
from compliance import audit, connections, consent, dsr
from compliance.subject_data import Subject, export_archive, pseudonym, registrations
from groups import services as groups_services
from keys import services as keys_services
from keys.models import Account, Device
from tests.server.relay_helpers import make_device, queue_envelopes

User = get_user_model()
TARGETS = (User, Account, Device)


@dataclass(frozen=True)
class Path:
    """How a model reaches a person: ``field`` (and then ``through``) to a target."""

    model: type[models.Model]
    lookup: str  # e.g. "device__account" or "account"
    target: type[models.Model]


def _links(model: type[models.Model]) -> list[tuple[str, type[models.Model]]]:
    return [
        (f.name, f.related_model)
        for f in model._meta.get_fields()
        if (f.many_to_one or f.one_to_one) and f.concrete and f.related_model is not None
    ]


def personal_paths() -> dict[type[models.Model], list[Path]]:
    """Every installed model's paths to the login, an account or a device (one hop or
    two)."""
    found: dict[type[models.Model], list[Path]] = {}
    for model in apps.get_models():
        for name, related in _links(model):
            if related in TARGETS:
                found.setdefault(model, []).append(Path(model, name, related))
            elif related is not model:
                for second, target in _links(related):
                    if target in TARGETS:
                        found.setdefault(model, []).append(Path(model, f"{name}__{second}", target))
    for target in TARGETS:
        found.setdefault(target, [])
    return found


def test_the_walk_finds_the_models_we_know() -> None:
    labels = {m._meta.label_lower for m in personal_paths()}
    assert {
        "auth.user",
        "keys.account",
        "keys.device",
        "keys.onetimeprekey",
        "keys.kemprekey",
        "keys.linktoken",
        "messaging.envelope",
        "admin.logentry",
        "compliance.consentrecord",
        "compliance.connectionlog",
        "compliance.datasubjectrequest",
        "compliance.adminauditlog",
    } <= labels


def test_every_model_that_can_hold_a_persons_data_is_registered() -> None:
    registered = {entry.model for entry in registrations()}
    missing = sorted(m._meta.label for m in personal_paths() if m not in registered)
    assert not missing, (
        f"{missing} can hold a person's data but are not registered for export and erasure: "
        "add <app>/subject_data.py (see compliance.subject_data)"
    )


# --- a person with a row in every such model ------------------------------------------------------


def _everything(username: str) -> Account:
    """``username`` with rows in every model the walk finds, and a peer with their own."""
    me = make_device(username)
    peer = make_device(f"{username}_peer")
    account = Account.objects.select_related("user").get(pk=Device.objects.get(pk=me.pk).account_id)
    device = Device.objects.get(pk=me.pk)
    queue_envelopes(me, peer, [b"to the peer: secret-ciphertext"])
    queue_envelopes(peer, me, [b"to me: secret-ciphertext"])
    keys_services.create_link_token(device)
    consent.record_sign_up(account, consent.check_sign_up(None, True, ["service", "diagnostics"]))
    consent.record_consent(account, "diagnostics", False, "api")
    connections.record_connection(device, "203.0.113.9")
    dsr.open_request(account, "export", "api")
    audit.record(account.user, "change", obj=device)
    LogEntry.objects.log_actions(account.user.pk, [device], CHANGE, "renamed")
    session = SessionStore()
    session["_auth_user_id"] = str(account.user.pk)
    session.create()
    groups_services.create_group(account, [f"{username}_peer"])
    blob = attachments_services.create_blob(device, 6)
    attachments_services.append_chunk(device, blob.id, 0, b"cipher")
    return account


FACTORIES: dict[str, Callable[[str], Account]] = {"everything": _everything}


def _rows_of(path: Path, user_id: int, account_id: int, device_ids: list[int]) -> set[Any]:
    value: Any = {User: [user_id], Account: [account_id], Device: device_ids}[path.target]
    if path.lookup == "":
        return set()
    return set(
        path.model._default_manager.filter(**{f"{path.lookup}__in": value}).values_list(
            "pk", flat=True
        )
    )


def _referencing(account: Account) -> dict[type[models.Model], set[Any]]:
    user_id, account_id = account.user_id, account.pk
    device_ids = list(Device.objects.filter(account_id=account_id).values_list("pk", flat=True))
    out: dict[type[models.Model], set[Any]] = {
        User: {user_id},
        Account: {account_id},
        Device: set(device_ids),
    }
    for model, paths in personal_paths().items():
        for path in paths:
            out.setdefault(model, set()).update(_rows_of(path, user_id, account_id, device_ids))
    return out


@pytest.mark.django_db(transaction=True)
def test_export_holds_every_row_and_erasure_leaves_none() -> None:
    alice = _everything("alice")
    subject = Subject.of(alice)
    before = _referencing(alice)
    empty = sorted(m._meta.label for m, pks in before.items() if not pks)
    assert not empty, f"no factory makes rows of {empty}: add one to _everything"

    archive = zipfile.ZipFile(io.BytesIO(export_archive(subject)))
    for model, pks in before.items():
        name = f"{model._meta.label_lower}.json"
        exported = {row["id"] for row in json.loads(archive.read(name))}
        assert pks <= exported, f"{name} misses rows {sorted(pks - exported)}"
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["username"] == "alice" and manifest["files"]
    # Attachments travel as the ciphertext the server holds.
    (blob_id,) = before[Blob]
    assert archive.read(f"files/attachments.blob/{blob_id}.bin") == b"cipher"
    everything = b"".join(archive.read(name) for name in archive.namelist())
    assert b"secret-ciphertext" not in everything  # envelope payloads never leave
    assert b"c2VjcmV0LWNpcGhlcnRleHQ" not in everything  # not even in base64

    report = dsr.erase_user(alice)

    after = _referencing_ids(before)
    assert not after, f"rows still pointing at the person: {after}"
    assert report.username == "alice" and report.pseudonym == pseudonym("alice")
    kept = {step.label: step for step in report.kept}
    assert set(kept) <= {
        "compliance.connectionlog",
        "compliance.datasubjectrequest",
        "compliance.adminauditlog",
    }
    assert "compliance.datasubjectrequest" in kept and "compliance.adminauditlog" in kept
    for step in kept.values():
        assert step.reason and step.until and step.until > timezone.now()
    # The peer keeps everything of their own.
    assert Account.objects.filter(user__username="alice_peer").exists()


def _referencing_ids(before: dict[type[models.Model], set[Any]]) -> dict[str, list[Any]]:
    """Of the rows that pointed at the person before, those that still exist and still
    point at them (through the same paths)."""
    user_id = next(iter(before[User]))
    account_id = next(iter(before[Account]))
    device_ids = list(before[Device])
    left: dict[str, list[Any]] = {}
    for model, paths in personal_paths().items():
        pks: set[Any] = set()
        for path in paths:
            pks |= _rows_of(path, user_id, account_id, device_ids)
        if model in TARGETS:
            pks |= set(
                model._default_manager.filter(pk__in=before[model]).values_list("pk", flat=True)
            )
        if pks:
            left[model._meta.label] = sorted(pks)
    return left


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("region", "logs_kept"), [("eu", 0), ("br", 1), ("in", 1)])
def test_erasure_keeps_connection_logs_only_under_a_legal_floor(
    use_region: Any, region: str, logs_kept: int
) -> None:
    from compliance.models import ConnectionLog

    policy = use_region(region)
    alice = _everything("alice")
    old = Device.objects.filter(account=alice).first()
    assert old is not None
    connections.record_connection(old, "198.51.100.2", now=timezone.now() - timedelta(days=400))

    report = dsr.erase_user(alice)

    kept = [step for step in report.kept if step.label == "compliance.connectionlog"]
    assert len(kept) == logs_kept
    left = ConnectionLog.objects.all()
    assert left.count() == logs_kept
    if logs_kept:
        assert kept[0].until is not None
        assert left.get().subject == pseudonym("alice") and left.get().account is None
        assert policy.retention.connection_logs.legal_floor is not None
        assert policy.retention.connection_logs.legal_floor.law in kept[0].reason
