"""URLs of the attachments API, mounted under /api/v1/ (docs/api.md). Paths have no
trailing slash, exactly as documented."""

from django.urls import path

from . import views

urlpatterns = [
    path("attachments", views.AttachmentsView.as_view(), name="attachments"),
    path("attachments/<str:blob_id>", views.AttachmentView.as_view(), name="attachment"),
]
