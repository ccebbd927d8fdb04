"""URLs of the compliance API, mounted under /api/v1/. No trailing slashes."""

from django.urls import path

from . import views

urlpatterns = [
    path("policy", views.PolicyView.as_view(), name="policy"),
    path("policy/public-key", views.PolicyKeyView.as_view(), name="policy-public-key"),
    path("consent", views.ConsentView.as_view(), name="consent"),
    path("data-requests", views.DataRequestsView.as_view(), name="data-requests"),
    path(
        "data-requests/<int:request_id>/archive",
        views.DataRequestArchiveView.as_view(),
        name="data-request-archive",
    ),
]
