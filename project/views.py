"""Views that belong to no app."""

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.http import require_safe

from protocol.errors import ErrorCode


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process is up and answering HTTP. It touches no database, so a
    load balancer does not take every node out at once when the database is slow."""
    return JsonResponse({"status": "ok"})


# --- errors outside DRF's reach ---------------------------------------------------------------
# A URL under /api/ that no pattern matches (``devices/abc`` where an int is expected) or a
# crash outside a DRF view's exception handler would otherwise get Django's HTML page. An
# API client gets the API's {code, message} shape instead; the web pages keep theirs.

API_PREFIX = "/api/"


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith(API_PREFIX):
        return JsonResponse(
            {"code": ErrorCode.NOT_FOUND.slug, "message": f"no such resource: {request.path}"},
            status=404,
        )
    return defaults.page_not_found(request, exception or Http404())


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith(API_PREFIX):
        return JsonResponse(
            {"code": ErrorCode.INTERNAL.slug, "message": "internal error"},
            status=500,
        )
    return defaults.server_error(request)
