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
from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_http_methods, require_safe

from compliance import consent, dsr
from compliance.api.views import request_json
from compliance.models import DataSubjectRequest
from compliance.services import privacy_notice_context
from keys.models import Account
from project.errors import ServiceError


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    target = "web:chat" if request.user.is_authenticated else "web:signup"
    return HttpResponseRedirect(reverse(target))


# The pages that call the API carry the CSRF cookie, so the script can send the token
# with the session-cookie requests (sign-up, log-in, log-out) the API checks it on.
@require_safe
@ensure_csrf_cookie
def signup(request: HttpRequest) -> HttpResponse:
    context = {"page": "signup", "region": settings.REGION, **privacy_notice_context()}
    return render(request, "web/signup.html", context)


@require_safe
@ensure_csrf_cookie
def login(request: HttpRequest) -> HttpResponse:
    return render(request, "web/login.html", {"page": "login"})


@require_safe
@ensure_csrf_cookie
def chat(request: HttpRequest) -> HttpResponse:
    account = _account(request)
    # A new policy version that asks for consent again: the page says so until answered.
    reconsent = account is not None and consent.consent_state(account).reconsent_required
    return render(request, "web/chat.html", {"page": "chat", "reconsent_required": reconsent})


@require_safe
def security(request: HttpRequest) -> HttpResponse:
    """The plain-language explanation: static, and it loads no script at all."""
    return render(request, "web/security.html", {"page": "security"})


# --- the privacy page ---------------------------------------------------------------------------
# Plain forms (POST with the CSRF token) and no script: each answer is one request to the
# same verbs the API calls (compliance.consent, compliance.dsr), then a redirect back.


def _account(request: HttpRequest) -> Account | None:
    if not request.user.is_authenticated:
        return None
    return Account.objects.filter(user=request.user).first()


@require_http_methods(["GET", "HEAD", "POST"])
def privacy(request: HttpRequest) -> HttpResponse:
    """Consent per purpose, export and erasure, for the logged-in account."""
    account = _account(request)
    if account is None:
        return HttpResponseRedirect(f"{reverse('web:login')}?next={reverse('web:privacy')}")
    if request.method == "POST":
        return _privacy_post(request, account)
    state = consent.consent_state(account)
    requests = DataSubjectRequest.objects.filter(account=account).defer("archive")
    context = {
        "page": "privacy",
        "account": account,
        "state": state,
        "requests": [request_json(r) for r in requests],
        **privacy_notice_context(),
    }
    return render(request, "web/privacy.html", context)


def _privacy_post(request: HttpRequest, account: Account) -> HttpResponse:
    action = request.POST.get("action")
    back = HttpResponseRedirect(reverse("web:privacy"))
    try:
        if action == "consent":
            granted = request.POST.get("granted") == "on"
            state = consent.record_consent(account, request.POST.get("purpose", ""), granted, "web")
            word = "on" if state.granted else "off"
            messages.success(request, f"{state.purpose.id}: now {word}.")
        elif action == "export":
            done = dsr.run_request(dsr.open_request(account, "export", "web"))
            messages.success(request, f"Your export is ready (request {done.pk}).")
        elif action == "erasure":
            password = request.POST.get("password", "")
            if not password or not account.user.check_password(password):
                messages.error(request, "Wrong password: nothing was erased.")
                return back
            done = dsr.run_request(dsr.open_request(account, "erasure", "web"))
            logout(request)
            response = render(
                request, "web/erased.html", {"page": "erased", "report": done.report_data}
            )
            # The browser's keys and messages go too (IndexedDB, cookies, cache).
            response["Clear-Site-Data"] = '"cache", "cookies", "storage"'
            return response
        else:
            messages.error(request, "Unknown action.")
    except ServiceError as error:
        messages.error(request, error.message)
    return back
