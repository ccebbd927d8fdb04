"""Abuse limits of the keys app: sign-ups, password log-ins and prekey claims.

Every figure comes from ``settings.SEALPOST`` (names below); counters live in the cache
(project.ratelimit). A refusal is ``rate_limited`` (HTTP 429) with ``Retry-After``; the
prekey-claim limits never refuse (see ``one_time_prekeys_allowed``).

Sign-up: ``SIGNUPS_PER_ADDRESS`` attempts per client address in ``SIGNUP_WINDOW_SECONDS``.

Password log-in (``POST /session``, ``POST /devices`` with a password). The design goal is
that guessing is slow *and* that nobody can lock a victim out for good:

- Failures are counted per (username, address). From the
  ``LOGIN_FAILURES_PER_ADDRESS``-th on, that pair is locked for ``LOGIN_LOCKOUT_BASE_SECONDS``,
  doubling with every further failure, never more than ``LOGIN_LOCKOUT_MAX_SECONDS`` (15
  minutes). The pair counter is forgotten ``LOGIN_FAILURE_MEMORY_SECONDS`` after its first
  failure, or at once on a success. This lock binds only the attacker's own address: the
  victim, at another address, never meets it.
- Failures are also counted per username, over all addresses, in fixed windows of
  ``LOGIN_FAILURE_WINDOW_SECONDS`` (a distributed guess spreads over many addresses). From
  the ``LOGIN_FAILURES_PER_USERNAME``-th on, the username is locked the same way (growing,
  capped) — but only for addresses that have not logged in to it successfully in the last
  ``LOGIN_KNOWN_ADDRESS_SECONDS``. So the victim's usual addresses are never blocked by
  anyone else's failures, and a new address waits at most the cap per lock. One address
  alone cannot even set this lock off: its own growing pair lock lets it fail about 11
  times an hour, fewer than the username threshold.
- A locked attempt is refused before the password is checked: a lock is never a password
  oracle, and locked attempts are not counted (they would only lengthen the lock).
- Devices never log in with a password again after registering (bearer tokens), so an
  account's existing devices keep working through any lock.

Prekey claims: one-time prekeys are a scarce resource of the target device, refilled by
it (PREKEYS_LOW). Each bundle claimed is counted per requesting account
(``PREKEY_CLAIMS_PER_ACCOUNT``), per (requesting account, target device)
(``PREKEY_CLAIMS_PER_DEVICE_PAIR``) and per target device over all requesters
(``PREKEY_CLAIMS_PER_TARGET_DEVICE``), each in windows of ``PREKEY_CLAIM_WINDOW_SECONDS``.
Beyond any of them the claim still succeeds, but the bundle carries no one-time prekey of
either kind: the signed prekey and the last-resort KEM prekey only (PQXDH without a
one-time prekey, docs/protocol.md). A legitimate first message always gets through, and
no one can drain a device's one-time prekeys faster than the limits allow.
"""

from __future__ import annotations

from django.conf import settings

from project import ratelimit
from project.errors import ServiceError
from protocol.errors import ErrorCode


def _limit(name: str) -> int:
    return int(settings.SEALPOST[name])


def _refused(message: str, retry_after: int) -> ServiceError:
    return ServiceError(
        ErrorCode.RATE_LIMITED, f"{message}; retry in {retry_after} s", retry_after=retry_after
    )


# --- sign-up --------------------------------------------------------------------------------


def check_sign_up(address: str) -> None:
    """Count a sign-up attempt from ``address``; refuse it beyond the limit."""
    limit = _limit("SIGNUPS_PER_ADDRESS")
    counted = ratelimit.hit("signup", ratelimit.subject(address), _limit("SIGNUP_WINDOW_SECONDS"))
    if counted.count > limit:
        raise _refused(f"more than {limit} sign-ups from this address", counted.resets_in)


# --- password log-in ------------------------------------------------------------------------


def _login_keys(username: str, address: str) -> tuple[str, str]:
    return ratelimit.subject(username, address), ratelimit.subject(username)


def _lockout_seconds(failures: int, threshold: int) -> int:
    """Base, doubled per failure past the threshold, capped."""
    base, cap = _limit("LOGIN_LOCKOUT_BASE_SECONDS"), _limit("LOGIN_LOCKOUT_MAX_SECONDS")
    doublings = min(failures - threshold, 30)  # 2**30 s is far past any cap
    return int(min(cap, base * 2**doublings))


def check_login(username: str, address: str) -> None:
    """Refuse a password attempt while its (username, address) pair is locked, or the
    username is locked and this address has not logged in to it before."""
    pair, user = _login_keys(username, address)
    wait = ratelimit.locked_for("login.pair", pair)
    if wait:
        raise _refused("too many failed log-ins for this username from this address", wait)
    wait = ratelimit.locked_for("login.user", user)
    if wait and not ratelimit.marked("login.known", pair):
        raise _refused("too many failed log-ins for this username", wait)


def login_failed(username: str, address: str) -> None:
    pair, user = _login_keys(username, address)
    per_address = _limit("LOGIN_FAILURES_PER_ADDRESS")
    failures = ratelimit.counter("login.pair", pair, _limit("LOGIN_FAILURE_MEMORY_SECONDS"))
    if failures >= per_address:
        ratelimit.lock("login.pair", pair, _lockout_seconds(failures, per_address))
    per_username = _limit("LOGIN_FAILURES_PER_USERNAME")
    counted = ratelimit.hit("login.user", user, _limit("LOGIN_FAILURE_WINDOW_SECONDS"))
    if counted.count >= per_username:
        ratelimit.lock("login.user", user, _lockout_seconds(counted.count, per_username))


def login_succeeded(username: str, address: str) -> None:
    pair, _ = _login_keys(username, address)
    ratelimit.forget("login.pair", pair)
    ratelimit.unlock("login.pair", pair)
    ratelimit.mark("login.known", pair, _limit("LOGIN_KNOWN_ADDRESS_SECONDS"))


# --- prekey claims --------------------------------------------------------------------------


def one_time_prekeys_allowed(requester_account_pk: int | None, target_device_pk: int) -> bool:
    """Count one bundle of ``target_device_pk`` claimed by ``requester_account_pk`` (None:
    not tied to an account, counted under the target alone); whether it may carry
    one-time prekeys. Never refuses: beyond a limit the bundle goes out without them."""
    window = _limit("PREKEY_CLAIM_WINDOW_SECONDS")

    def within(name: str, limit: str, *who: object) -> bool:
        return ratelimit.hit(name, ratelimit.subject(*who), window).count <= _limit(limit)

    # Every counter is bumped (no short-circuit), so each sees every claim.
    allowed = [within("claim.target", "PREKEY_CLAIMS_PER_TARGET_DEVICE", target_device_pk)]
    if requester_account_pk is not None:
        allowed.append(within("claim.account", "PREKEY_CLAIMS_PER_ACCOUNT", requester_account_pk))
        allowed.append(
            within(
                "claim.pair",
                "PREKEY_CLAIMS_PER_DEVICE_PAIR",
                requester_account_pk,
                target_device_pk,
            )
        )
    return all(allowed)
