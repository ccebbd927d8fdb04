"""Admin pages of the compliance app: the region policy, the consent ledger, age checks,
connection logs, data-subject requests with their deadlines, and the audit log of every
admin action.

Everything here is read-only except data-subject requests, which an operator may file
(a request received by mail) and answer (the "answer now" action); both go through
compliance.dsr and are audited. Ledger and audit rows can never be changed or deleted
here: the purge and erasure are the only ways they go. No page shows a message: export
archives are offered for download to the operator answering the request, and hold
envelope metadata only.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from compliance import audit, dsr
from compliance.models import (
    AdminAuditLog,
    AgeCheck,
    ConnectionLog,
    ConsentRecord,
    DataSubjectRequest,
    RegionPolicy,
)
from compliance.published import public_policy, signed_policy
from keys.models import Account


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by the compliance services: viewable, never edited here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ConsentRecord)
class ConsentRecordAdmin(ReadOnlyAdmin):
    list_display = ("account", "purpose", "granted", "policy_version", "method", "recorded_at")
    list_filter = ("purpose", "granted", "method", "policy_version")
    list_select_related = ("account__user",)
    search_fields = ("account__user__username",)
    date_hierarchy = "recorded_at"
    ordering = ("-recorded_at", "-pk")


@admin.register(AgeCheck)
class AgeCheckAdmin(ReadOnlyAdmin):
    list_display = ("account", "method", "self_consent_from", "policy_version", "checked_at")
    list_filter = ("method",)
    list_select_related = ("account__user",)
    search_fields = ("account__user__username",)


@admin.register(ConnectionLog)
class ConnectionLogAdmin(ReadOnlyAdmin):
    list_display = ("connected_at", "account", "subject", "device_id", "ip")
    list_select_related = ("account__user",)
    search_fields = ("account__user__username", "subject", "ip")
    date_hierarchy = "connected_at"


@admin.register(AdminAuditLog)
class AdminAuditLogAdmin(ReadOnlyAdmin):
    list_display = ("at", "actor_name", "action", "object_type", "object_repr")
    list_filter = ("action", "object_type")
    search_fields = ("actor_name", "object_repr")
    date_hierarchy = "at"


# --- data-subject requests ---------------------------------------------------------------------


class NewRequestForm(forms.ModelForm):
    """A request received outside the web client (mail, phone): whose, and what."""

    class Meta:
        model = DataSubjectRequest
        fields = ("account", "kind")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["account"].required = True
        self.fields["account"].queryset = Account.objects.select_related("user")


@admin.register(DataSubjectRequest)
class DataSubjectRequestAdmin(admin.ModelAdmin):
    list_display = (
        "username",
        "kind",
        "status",
        "channel",
        "received_at",
        "deadline_column",
        "completed_at",
    )
    list_filter = ("kind", "status", "channel")
    search_fields = ("username",)
    ordering = ("status", "deadline")
    actions = ("answer_now",)
    readonly_fields = (
        "username",
        "kind",
        "status",
        "channel",
        "region",
        "policy_version",
        "received_at",
        "deadline",
        "completed_at",
        "archive_link",
        "report_text",
    )

    class Media:
        css = {"all": ("compliance/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[DataSubjectRequest]:
        return super().get_queryset(request).defer("archive")

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = NewRequestForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> Any:
        # The archive is never a form field; the account only when filing a request.
        hidden = ("archive", "report", "archive_expires_at")
        return hidden if obj is None else (*hidden, "account")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("account", "kind") if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return () if obj is None else self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Viewable; changed only by the "answer now" action.
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the proof that the request was answered in time

    def save_model(
        self, request: HttpRequest, obj: DataSubjectRequest, form: Any, change: bool
    ) -> None:
        opened = dsr.open_request(form.cleaned_data["account"], form.cleaned_data["kind"], "admin")
        obj.pk = opened.pk
        obj.refresh_from_db()

    @admin.display(description="deadline", ordering="deadline")
    def deadline_column(self, request: DataSubjectRequest) -> str:
        when = f"{request.deadline:%Y-%m-%d %H:%M}"
        if request.status != "completed" and request.deadline < timezone.now():
            return format_html('<span class="dsr-overdue">{} (overdue)</span>', when)
        late = request.completed_at is not None and request.completed_at > request.deadline
        return (
            format_html('<span class="dsr-late">{} (answered late)</span>', when) if late else when
        )

    @admin.display(description="export archive")
    def archive_link(self, request: DataSubjectRequest) -> str:
        expires = request.archive_expires_at
        if request.kind != "export" or expires is None or expires <= timezone.now():
            return "-"
        url = reverse("admin:compliance_datasubjectrequest_archive", args=[request.pk])
        return format_html('<a href="{}">Download</a> (until {:%Y-%m-%d})', url, expires)

    @admin.display(description="report")
    def report_text(self, request: DataSubjectRequest) -> str:
        return json.dumps(request.report_data, indent=2) if request.report else "-"

    @admin.action(description="Answer the selected requests now (export or erase)")
    def answer_now(self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]) -> None:
        answered = 0
        for item in queryset.filter(status="received"):
            name = item.username
            if item.account_id is None:
                continue
            done = dsr.run_request(item)
            audit.record(
                request.user,
                f"answer {item.kind}",
                obj=done,
                object_repr=str(done),
                detail=f"request {item.pk} of {done.username if item.kind == 'erasure' else name}",
            )
            answered += 1
        self.message_user(request, f"Answered {answered} request(s).", messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        archive = path(
            "<int:request_id>/archive",
            self.admin_site.admin_view(self.archive_view),
            name="compliance_datasubjectrequest_archive",
        )
        return [archive, *super().get_urls()]

    def archive_view(self, request: HttpRequest, request_id: int) -> HttpResponse:
        item = get_object_or_404(DataSubjectRequest, pk=request_id, kind="export")
        if not self.has_view_permission(request, item) or item.account is None:
            return HttpResponse(status=403)
        archive = dsr.archive_of(item.account, item.pk)
        audit.record(request.user, "download export", obj=item, object_repr=str(item))
        response = HttpResponse(archive, content_type="application/zip")
        response["Content-Disposition"] = (
            f'attachment; filename="sealpost-export-{item.username}-{item.pk}.zip"'
        )
        response["Cache-Control"] = "no-store"
        return response


# --- the region policy -----------------------------------------------------------------------


@admin.register(RegionPolicy)
class RegionPolicyAdmin(ReadOnlyAdmin):
    """The loaded policy, as published (plus where it was read from). It changes only
    with a deployment: edit deploy/regions/<region>.yaml and restart."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        policy = settings.POLICY
        signed = signed_policy(policy).as_json("policy")
        context = {
            **self.admin_site.each_context(request),
            "title": f"Region policy: {policy.region.name} ({policy.region.id})",
            "opts": self.model._meta,
            "policy": policy,
            "document": json.dumps(public_policy(policy), indent=2, ensure_ascii=False),
            "public_key_b64": signed["public_key_b64"],
            "transparency_url": reverse("compliance:transparency"),
            "policy_url": reverse("compliance-api:policy"),
        }
        return TemplateResponse(request, "admin/compliance/regionpolicy/policy.html", context)
