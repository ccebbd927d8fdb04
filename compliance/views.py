"""The compliance app's pages: the transparency page, generated from the region policy."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from compliance.transparency import transparency_page


@require_safe
def transparency(request: HttpRequest) -> HttpResponse:
    """What the server stores, for how long, where, and what it cannot see. Public."""
    return render(
        request, "compliance/transparency.html", {"page": transparency_page(settings.POLICY)}
    )
