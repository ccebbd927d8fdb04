"""Views that belong to no app."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_safe


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process is up and answering HTTP. It touches no database, so a
    load balancer does not take every node out at once when the database is slow."""
    return JsonResponse({"status": "ok"})
