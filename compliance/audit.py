"""The audit log of the admin: every change an operator makes, and every log-in to it.

Django's admin writes a ``LogEntry`` for each addition, change and deletion; each one is
copied here (``AdminAuditLog``) as it is written, with the account the object belongs
to, so that the copy outlives the actor's or the subject's erasure (pseudonymised) for the
audit-record retention. ``LogEntry.save()`` is caught by a ``post_save`` signal; the
admin's bulk deletions are written with ``bulk_create``, which sends no signal, so
``install()`` also wraps the log manager's ``log_actions`` to copy those. Log-ins,
failed log-ins and log-outs on the admin's pages come from the auth signals. Actions of
our own (running a data-subject request, downloading an export) call ``record``.

Nothing here stores a password, a token or a message: only who did what to which object.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_save
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from compliance.models import AdminAuditLog
from keys.models import Account, Device

logger = logging.getLogger(__name__)

ACTIONS: Final = {ADDITION: "add", CHANGE: "change", DELETION: "delete"}


def subject_of(obj: object) -> Account | None:
    """The account an object belongs to, if any."""
    if isinstance(obj, Account):
        return obj
    if isinstance(obj, get_user_model()):
        return Account.objects.filter(user=obj).first()
    if isinstance(obj, Device):
        return obj.account
    account = getattr(obj, "account", None)
    return account if isinstance(account, Account) else None


def record(
    actor: Any,
    action: str,
    *,
    obj: object | None = None,
    object_repr: str | None = None,
    detail: str = "",
    subject: Account | None = None,
) -> AdminAuditLog:
    """Add one entry: ``actor`` (a user, or None) did ``action`` to ``obj``."""
    user = actor if isinstance(actor, get_user_model()) and actor.pk is not None else None
    name = str(actor.get_username()) if user is not None else str(actor or "")
    meta = getattr(obj, "_meta", None)
    return AdminAuditLog.objects.create(
        actor=user,
        actor_name=name[:150],
        action=action[:32],
        object_type=meta.label_lower if meta is not None else "",
        object_id=str(getattr(obj, "pk", "") or "")[:64],
        object_repr=(object_repr if object_repr is not None else str(obj or ""))[:200],
        detail=detail,
        subject=subject if subject is not None else subject_of(obj),
        at=timezone.now(),
    )


def _copy(entry: LogEntry) -> None:
    content_type = entry.content_type
    obj = None
    if content_type is not None and entry.object_id:
        model = content_type.model_class()
        if model is not None:
            obj = model._default_manager.filter(pk=entry.object_id).first()
    AdminAuditLog.objects.create(
        actor_id=entry.user_id,
        actor_name=str(entry.user.get_username())[:150],
        action=ACTIONS.get(entry.action_flag, str(entry.action_flag)),
        object_type=(
            f"{content_type.app_label}.{content_type.model}" if content_type is not None else ""
        ),
        object_id=str(entry.object_id or "")[:64],
        object_repr=entry.object_repr[:200],
        detail=entry.get_change_message(),
        subject=subject_of(obj) if obj is not None else None,
        at=entry.action_time,
    )


def _log_entry_saved(sender: type, instance: LogEntry, created: bool, **kwargs: Any) -> None:
    if created:
        _copy(instance)


def _on_admin(request: HttpRequest | None) -> bool:
    if request is None:
        return False
    try:
        prefix = reverse("admin:index")
    except NoReverseMatch:
        return False
    return str(getattr(request, "path", "")).startswith(prefix)


def _logged_in(sender: type, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if _on_admin(request):
        record(user, "login", obj=user, object_repr=str(user.get_username()))


def _logged_out(sender: type, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if _on_admin(request) and user is not None:
        record(user, "logout", obj=user, object_repr=str(user.get_username()))


def _login_failed(
    sender: type, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # Django has already replaced the password in ``credentials`` with stars.
    if _on_admin(request):
        name = str(credentials.get("username", ""))
        record(None, "login_failed", object_repr=name, detail="wrong username or password")


def _wrap_log_actions() -> None:
    manager = LogEntry.objects
    if getattr(manager, "_sealpost_audited", False):
        return
    original = manager.log_actions

    def log_actions(*args: Any, **kwargs: Any) -> Any:
        entries = original(*args, **kwargs)
        # One entry is saved (post_save copies it); several are bulk-created, unsignalled.
        if isinstance(entries, list) and len(entries) > 1:
            for entry in entries:
                _copy(entry)
        return entries

    manager.log_actions = log_actions
    manager._sealpost_audited = True


def install() -> None:
    """Connect the signals (from ``ComplianceConfig.ready``)."""
    post_save.connect(_log_entry_saved, sender=LogEntry, dispatch_uid="compliance.audit.log")
    user_logged_in.connect(_logged_in, dispatch_uid="compliance.audit.login")
    user_logged_out.connect(_logged_out, dispatch_uid="compliance.audit.logout")
    user_login_failed.connect(_login_failed, dispatch_uid="compliance.audit.login_failed")
    _wrap_log_actions()
