"""Pages of the compliance app (the API is in compliance.api.urls)."""

from django.urls import path

from . import views

urlpatterns = [
    path("transparency", views.transparency, name="transparency"),
]
