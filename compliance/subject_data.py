"""Everything the server holds about one person, model by model: the registry that export
and erasure follow.

Each app registers every model whose rows belong to or name a person (a key to the login,
the account or a device, directly or through one other model), saying how to find a
person's rows, how to export one row, and how erasure removes them::

    from compliance.subject_data import register

    register(
        Membership,
        rows=lambda subject: Membership.objects.filter(account=subject.account),
        export=lambda m: {"group_id": m.group.hex_id, "joined_at": m.joined_at},
        erase="cascade",  # deleted with the account
    )

in a module ``<app>/subject_data.py``, which ``autodiscover()`` imports at start-up for
every installed app (the compliance app registers the login, keys, messaging, admin and
its own models in ``compliance.registrations``). tests/compliance/test_subject_data.py
walks every installed model and fails for one with a path to a person that is not
registered, so a new model cannot be forgotten.

``erase`` is one of:

* ``"cascade"``: the rows go when the login is deleted (an ``on_delete=CASCADE`` chain);
  erasure checks afterwards that none is left.
* ``"delete"``: erasure deletes ``rows(subject)`` itself, before the login.
* a function ``(subject, now) -> Kept | None`` for rows a law keeps: it deletes what may
  go, pseudonymises what stays and says what it kept, why and until when
  (``keep_reason`` documents the same for the registry's readers).

What erasure never deletes: rows a legal floor still covers (connection logs in Brazil and
India), and the records that show the deployment obeyed the law (data-subject requests
and the admin audit log, for the audit-record retention). Those lose their link to the
account and carry a pseudonym instead of the username: an HMAC of the username under the
deployment's secret key, so a court order naming the username can still be matched to
them, and nobody without the key can read the name back.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import models, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from keys.models import Account

PSEUDONYM_SALT = "sealpost.compliance.erasure"
ARCHIVE_FORMAT = "sealpost-export-1"


@dataclass(frozen=True, slots=True)
class Subject:
    """The person a request is about: their login and, if they have one, their account.
    Held by id, so that it still names them while and after their rows are deleted."""

    user_id: int
    username: str
    account_id: int | None

    @property
    def pseudonym(self) -> str:
        return pseudonym(self.username)

    @classmethod
    def of(cls, user_or_account: AbstractBaseUser | Account) -> Subject:
        if isinstance(user_or_account, Account):
            user = user_or_account.user
            return cls(user.pk, str(user.get_username()), user_or_account.pk)
        account_id = (
            Account.objects.filter(user=user_or_account).values_list("pk", flat=True).first()
        )
        return cls(user_or_account.pk, str(user_or_account.get_username()), account_id)


def pseudonym(username: str) -> str:
    """What stands for an erased username in the rows a law keeps (see the module doc)."""
    digest = salted_hmac(
        PSEUDONYM_SALT, username, secret=settings.SECRET_KEY, algorithm="sha256"
    ).hexdigest()
    return f"erased-{digest[:20]}"


@dataclass(frozen=True, slots=True)
class Kept:
    """Rows an erasure left in place: how many, why, and until when at the latest."""

    rows: int
    reason: str
    until: datetime | None


Rows = Callable[[Subject], "models.QuerySet[Any]"]
Exporter = Callable[[Any], dict[str, Any]]
Eraser = Callable[[Subject, datetime], Kept | None]
# Files that go into the archive beside a row's JSON: (name, bytes), e.g. a blob's
# ciphertext. The name is relative to files/<app>.<model>/ in the zip.
Files = Callable[[Any], Iterable[tuple[str, bytes]]]


@dataclass(frozen=True, slots=True)
class Registration:
    model: type[models.Model]
    rows: Rows
    export: Exporter
    erase: Literal["cascade", "delete"] | Eraser
    keep_reason: str | None
    files: Files | None = None

    @property
    def label(self) -> str:
        return str(self.model._meta.label_lower)

    def rows_of(self, subject: Subject) -> models.QuerySet[Any]:
        return self.rows(subject)


_REGISTRY: dict[type[models.Model], Registration] = {}


def register(
    model: type[models.Model],
    *,
    rows: Rows,
    export: Exporter,
    erase: Literal["cascade", "delete"] | Eraser = "cascade",
    keep_reason: str | None = None,
    files: Files | None = None,
) -> None:
    """Declare how export and erasure treat ``model`` (see the module doc)."""
    if model in _REGISTRY:
        raise ValueError(f"{model._meta.label} is registered twice")
    if erase not in ("cascade", "delete") and not callable(erase):
        raise ValueError(f"{model._meta.label}: erase must be 'cascade', 'delete' or a function")
    _REGISTRY[model] = Registration(model, rows, export, erase, keep_reason, files)


def registrations() -> tuple[Registration, ...]:
    return tuple(_REGISTRY.values())


def registration(model: type[models.Model]) -> Registration:
    return _REGISTRY[model]


def autodiscover() -> None:
    """Import ``compliance.registrations`` and every installed app's ``subject_data``."""
    importlib.import_module("compliance.registrations")
    for config in apps.get_app_configs():
        if config.name == "compliance":
            continue
        module = f"{config.name}.subject_data"
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


# --- export -----------------------------------------------------------------------------------


def _json_default(value: object) -> object:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (bytes, memoryview)):
        raise TypeError("an exporter must encode bytes itself (base64, with a *_b64 name)")
    raise TypeError(f"cannot export {type(value).__name__}")


def _dump(data: object) -> bytes:
    text = json.dumps(data, default=_json_default, indent=2, ensure_ascii=False, sort_keys=True)
    return (text + "\n").encode("utf-8")


def export_rows(subject: Subject) -> dict[str, list[dict[str, Any]]]:
    """Every registered model's rows of ``subject``, exported: {label: [row, ...]}.
    Each row carries its primary key as ``id``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in registrations():
        out[entry.label] = [
            {"id": obj.pk, **entry.export(obj)} for obj in entry.rows_of(subject).order_by("pk")
        ]
    return out


def export_archive(
    subject: Subject,
    *,
    now: datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> bytes:
    """A zip: ``manifest.json`` and one ``<app>.<model>.json`` per registered model."""
    moment = now or timezone.now()
    policy = settings.POLICY
    files: dict[str, int] = {}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for label, rows in export_rows(subject).items():
            name = f"{label}.json"
            archive.writestr(name, _dump(rows))
            files[name] = len(rows)
            if progress is not None:
                progress(f"exported {name}: {len(rows)} rows")
        for entry in registrations():
            if entry.files is None:
                continue
            for obj in entry.rows_of(subject).order_by("pk"):
                for file_name, data in entry.files(obj):
                    archive.writestr(f"files/{entry.label}/{file_name}", data)
        manifest = {
            "format": ARCHIVE_FORMAT,
            "username": subject.username,
            "region": policy.region.id,
            "policy_version": policy.version,
            "generated_at": moment,
            "files": files,
            "not_included": (
                "Message contents: the server holds queued messages only as ciphertext it "
                "cannot read and does not export them (their metadata is in "
                "messaging.envelope.json). Attachments are in files/ as the ciphertext the "
                "server stores, which only your devices can decrypt. Private keys never "
                "leave your devices."
            ),
        }
        archive.writestr("manifest.json", _dump(manifest))
    return buffer.getvalue()


# --- erasure ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErasureStep:
    label: str
    deleted: int
    kept: int = 0
    reason: str = ""
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What an erasure deleted and what it kept, why and until when."""

    username: str
    pseudonym: str
    region: str
    policy_version: str
    erased_at: datetime
    steps: tuple[ErasureStep, ...] = field(default=())

    @property
    def deleted(self) -> int:
        return sum(step.deleted for step in self.steps)

    @property
    def kept(self) -> tuple[ErasureStep, ...]:
        return tuple(step for step in self.steps if step.kept)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["erased_at"] = self.erased_at.isoformat()
        for step in data["steps"]:
            step["until"] = step["until"].isoformat() if step["until"] else None
        return data


def _count(entries: Iterable[Registration], subject: Subject) -> dict[str, int]:
    return {entry.label: entry.rows_of(subject).count() for entry in entries}


def erase(
    subject: Subject,
    *,
    now: datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> ErasureReport:
    """Delete everything registered about ``subject`` except what a law keeps, in one
    transaction, and report it. The login goes last, taking the cascades with it."""
    moment = now or timezone.now()
    policy = settings.POLICY
    say = progress or (lambda line: None)
    steps: list[ErasureStep] = []
    with transaction.atomic():
        entries = registrations()
        cascading = [e for e in entries if e.erase == "cascade"]
        before = _count(cascading, subject)
        for entry in entries:
            if callable(entry.erase):
                total = entry.rows_of(subject).count()
                kept = entry.erase(subject, moment)
                step = ErasureStep(
                    entry.label,
                    deleted=total - (kept.rows if kept else 0),
                    kept=kept.rows if kept else 0,
                    reason=kept.reason if kept else "",
                    until=kept.until if kept else None,
                )
            elif entry.erase == "delete":
                deleted, _ = entry.rows_of(subject).delete()
                step = ErasureStep(entry.label, deleted=deleted)
            else:
                continue
            steps.append(step)
            say(_step_line(step))
        get_user_model().objects.filter(pk=subject.user_id).delete()
        for entry in cascading:
            left = entry.rows_of(subject).count()
            if left:
                raise RuntimeError(f"{entry.label}: {left} rows survived the erasure cascade")
            step = ErasureStep(entry.label, deleted=before[entry.label])
            steps.append(step)
            say(_step_line(step))
    return ErasureReport(
        username=subject.username,
        pseudonym=subject.pseudonym,
        region=policy.region.id,
        policy_version=policy.version,
        erased_at=moment,
        steps=tuple(steps),
    )


def _step_line(step: ErasureStep) -> str:
    line = f"erased {step.label}: {step.deleted} deleted"
    if step.kept:
        line += f", {step.kept} kept ({step.reason})"
    return line
