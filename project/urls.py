"""Top-level URLs. Each app adds its API under /api/v1/ as it grows."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from project.views import healthz

# Under /api/ a 404 or 500 is JSON in the API's {code, message} shape (project/views.py).
handler404 = "project.views.page_not_found"
handler500 = "project.views.server_error"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start-up script as a separate file (?script), so the page
    # has no inline <script>; the UI's own files come from drf-spectacular-sidecar.
    path("api/v1/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="docs"),
    path("healthz", healthz, name="healthz"),
    # Accounts, sessions, devices and prekeys (docs/api.md); paths have no trailing slash.
    path("api/v1/", include(("keys.api.urls", "keys"))),
    # Groups: members, admins and the roster the relay fans group messages out to.
    path("api/v1/", include(("groups.api.urls", "groups"))),
    # Encrypted attachment blobs: create, upload in chunks, resume, download.
    path("api/v1/", include(("attachments.api.urls", "attachments"))),
    # The region policy, signed (/api/v1/policy), and the page generated from it
    # (/transparency).
    path("api/v1/", include(("compliance.api.urls", "compliance-api"))),
    path("", include(("compliance.urls", "compliance"))),
    # The web client's pages: /, /signup, /login, /chat, /security.
    path("", include("web.urls")),
]
