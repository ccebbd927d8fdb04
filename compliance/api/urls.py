"""URLs of the compliance API, mounted under /api/v1/. No trailing slashes."""

from django.urls import path

from . import views

urlpatterns = [
    path("policy", views.PolicyView.as_view(), name="policy"),
    path("policy/public-key", views.PolicyKeyView.as_view(), name="policy-public-key"),
]
