"""Pages of the web client.

The server knows nothing a page could usefully render: keys, contacts and messages live
only in the browser (IndexedDB), and the bundle (static/js/app.js) fills the page from
there. So a view renders a fixed template, and the only per-request input is the
deployment's region, for the privacy notice at sign-up.

Whether this browser holds a device is known only to the browser: ``/`` sends a visitor
with a logged-in session to ``/chat`` and everyone else to ``/signup``, and each page's
script corrects the guess (a page with no device goes to ``/signup``, a sign-up page in a
browser that already has one goes to ``/chat``).
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_safe


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    target = "web:chat" if request.user.is_authenticated else "web:signup"
    return HttpResponseRedirect(reverse(target))


# The pages that call the API carry the CSRF cookie, so the script can send the token
# with the session-cookie requests (sign-up, log-in, log-out) the API checks it on.
@require_safe
@ensure_csrf_cookie
def signup(request: HttpRequest) -> HttpResponse:
    return render(request, "web/signup.html", {"page": "signup", "region": settings.REGION})


@require_safe
@ensure_csrf_cookie
def login(request: HttpRequest) -> HttpResponse:
    return render(request, "web/login.html", {"page": "login"})


@require_safe
@ensure_csrf_cookie
def chat(request: HttpRequest) -> HttpResponse:
    return render(request, "web/chat.html", {"page": "chat"})


@require_safe
def security(request: HttpRequest) -> HttpResponse:
    """The plain-language explanation: static, and it loads no script at all."""
    return render(request, "web/security.html", {"page": "security"})
