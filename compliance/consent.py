"""Consent and the age rule: the verbs that write the consent ledger and the age check, and
the rules that read them. (Part of the compliance service layer, with
``compliance.services``; views and sign-up call these, nothing else writes the ledger.)

The ledger (``ConsentRecord``) is append-only: giving or withdrawing consent adds a
record, and a purpose's state is its latest record. What that record means:

* A ``necessary`` purpose (the service itself, on contract) is always on. Sign-up records
  it, so the ledger shows when the person was told; it cannot be withdrawn, since
  withdrawing it means closing the account (an erasure request).
* A ``required`` purpose that is not necessary (India's service purpose, on consent) must
  be given at sign-up, and cannot be withdrawn either, for the same reason.
* An optional ``opt_in`` purpose is off until a record grants it.
* An optional ``opt_out`` purpose is on unless a record withdraws it, for a person who may
  consent for themselves; the sign-up form shows it ticked.
* Below the region's age of self-consent, or when the age was not stated, every optional
  purpose stays off and cannot be turned on: Sealpost has no verified parental-consent
  flow (``age.parental_consent_flow`` must be false), so there is nobody who could give
  that consent (research: "forced off unless parental_flow").
* When the policy says ``consent.reconsent.on_version_change`` and its version changed
  since an ``opt_in`` purpose was granted, that grant no longer counts: the purpose is off
  and ``reconsent_required`` until the person answers again. A withdrawal stays valid
  across versions, and so does an opt-out.

The age rule at sign-up (``check_sign_up``): a birth date below ``age.minimum_signup_age``
is refused with ``under_age`` (HTTP 403) naming the minimum, and nothing is stored. Between
the minimum and the age of self-consent the account is made with every optional purpose
off, unless a required purpose rests on consent, which such a person cannot give without
a parent: then sign-up is refused too. ``age_confirmed: true`` states that the person is of
the age of self-consent. An API sign-up that states neither is let in only where no
required purpose needs consent, with its optional purposes off (as for a minor). The birth
date itself is never stored, only the day the person reaches the age of self-consent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from compliance.models import AgeCheck, ConsentRecord
from compliance.policy import Policy, Purpose
from keys.models import Account
from project.errors import ServiceError
from protocol.errors import ErrorCode

Method = Literal["signup", "web", "api", "admin"]
AgeMethod = Literal["birth_date", "confirmed", "not_stated"]
OLDEST_AGE = 130


def _policy(policy: Policy | None) -> Policy:
    return policy or settings.POLICY


def _field_error(code: ErrorCode, field: str, message: str) -> ServiceError:
    return ServiceError(
        code, f"{field}: {message}", fields={field: [{"code": code.slug, "message": message}]}
    )


def _needs_consent(purpose: Purpose) -> bool:
    return purpose.legal_basis == "consent" or purpose.mode == "opt_in"


def _add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February in a year that has none: the birthday is 1 March
        return date(day.year + years, 3, 1)


def age_on(birth_date: date, today: date) -> int:
    years = today.year - birth_date.year
    return years - 1 if (today.month, today.day) < (birth_date.month, birth_date.day) else years


# --- sign-up -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignUpAnswers:
    """What sign-up checked and will record: the age check and the consents given."""

    age_method: AgeMethod
    self_consent_from: date | None  # None: may consent for themselves (or not stated)
    granted: tuple[str, ...]  # purpose ids to record as granted
    withdrawn: tuple[str, ...]  # optional purposes left unticked, recorded as withdrawn

    @property
    def may_consent(self) -> bool:
        return self.age_method != "not_stated" and self.self_consent_from is None


def check_sign_up(
    birth_date: date | None,
    age_confirmed: bool | None,
    consents: Sequence[str] | None,
    *,
    policy: Policy | None = None,
    today: date | None = None,
) -> SignUpAnswers:
    """Apply the age rule and check the consents of a sign-up; raises ServiceError.

    ``consents`` lists the optional (and required, non-necessary) purposes the person
    ticked; necessary purposes are recorded whatever it says. ``None`` means the client
    did not ask (an API client): nothing optional is recorded, so each purpose keeps its
    default.
    """
    policy = _policy(policy)
    today = today or timezone.localdate()
    age = policy.age
    region = policy.region.name
    needs_consent = [p for p in policy.consent.purposes if p.required and _needs_consent(p)]

    if birth_date is not None and age_confirmed is not None:
        raise _field_error(
            ErrorCode.INVALID_REQUEST, "age_confirmed", "send birth_date or age_confirmed, not both"
        )
    method: AgeMethod
    self_consent_from: date | None = None
    if birth_date is not None:
        if birth_date > today:
            raise _field_error(
                ErrorCode.INVALID_REQUEST, "birth_date", f"{birth_date} is in the future"
            )
        years = age_on(birth_date, today)
        if years > OLDEST_AGE:
            raise _field_error(
                ErrorCode.INVALID_REQUEST,
                "birth_date",
                f"{birth_date} is not a plausible birth date",
            )
        if years < age.minimum_signup_age:
            raise ServiceError(
                ErrorCode.UNDER_AGE,
                f"Sealpost in {region} is for people aged {age.minimum_signup_age} or over",
                fields={
                    "birth_date": [
                        {
                            "code": ErrorCode.UNDER_AGE.slug,
                            "message": f"under the minimum age of {age.minimum_signup_age}",
                        }
                    ]
                },
                details={"minimum_age": age.minimum_signup_age, "region": policy.region.id},
            )
        method = "birth_date"
        if years < age.self_consent_age:
            self_consent_from = _add_years(birth_date, age.self_consent_age)
            if needs_consent and not age.parental_consent_flow:
                raise ServiceError(
                    ErrorCode.UNDER_AGE,
                    f"in {region}, using Sealpost needs consent ({needs_consent[0].id}), which "
                    f"under {age.self_consent_age} only a parent can give, and this deployment "
                    "cannot take a parent's consent yet",
                    details={"minimum_age": age.self_consent_age, "region": policy.region.id},
                )
    elif age_confirmed is False:
        raise _field_error(
            ErrorCode.INVALID_REQUEST,
            "age_confirmed",
            f"false: if you are under {age.self_consent_age}, send birth_date instead",
        )
    elif age_confirmed:
        method = "confirmed"
    else:
        method = "not_stated"
        if needs_consent:
            raise _field_error(
                ErrorCode.INVALID_REQUEST,
                "birth_date",
                f"sign-up in {region} needs your age: send birth_date (YYYY-MM-DD) or "
                f"age_confirmed (true if you are {age.self_consent_age} or older)",
            )

    known = {p.id: p for p in policy.consent.purposes}
    ticked: list[str] = []
    for index, purpose_id in enumerate(consents or ()):
        if purpose_id not in known:
            raise _field_error(
                ErrorCode.INVALID_REQUEST,
                f"consents[{index}]",
                f"unknown purpose {purpose_id!r} (purposes: {', '.join(known)})",
            )
        if purpose_id not in ticked:
            ticked.append(purpose_id)
    for purpose in policy.consent.purposes:
        if purpose.required and purpose.mode != "necessary" and purpose.id not in ticked:
            raise ServiceError(
                ErrorCode.CONSENT_REQUIRED,
                f"using Sealpost in {region} needs your consent to {purpose.id!r}: "
                f"add it to consents",
                fields={
                    "consents": [
                        {"code": ErrorCode.CONSENT_REQUIRED.slug, "message": purpose.description}
                    ]
                },
            )
    may_consent = method != "not_stated" and self_consent_from is None
    granted = [p.id for p in policy.consent.purposes if p.mode == "necessary" or p.required]
    withdrawn: list[str] = []
    if consents is not None and may_consent:
        for purpose in policy.consent.purposes:
            if purpose.required:
                continue
            (granted if purpose.id in ticked else withdrawn).append(purpose.id)
    return SignUpAnswers(method, self_consent_from, tuple(granted), tuple(withdrawn))


def record_sign_up(
    account: Account,
    answers: SignUpAnswers,
    *,
    policy: Policy | None = None,
    now: datetime | None = None,
) -> None:
    """Record the age check and the sign-up's consents (inside sign-up's transaction)."""
    policy = _policy(policy)
    moment = now or timezone.now()
    AgeCheck.objects.create(
        account=account,
        method=answers.age_method,
        self_consent_from=answers.self_consent_from,
        policy_version=policy.version,
        checked_at=moment,
    )
    ConsentRecord.objects.bulk_create(
        ConsentRecord(
            account=account,
            purpose=purpose_id,
            granted=granted,
            policy_version=policy.version,
            recorded_at=moment,
            method="signup",
        )
        for purpose_ids, granted in ((answers.granted, True), (answers.withdrawn, False))
        for purpose_id in purpose_ids
    )


# --- the state of each purpose -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PurposeState:
    purpose: Purpose
    granted: bool  # in effect now
    answered: bool  # whether the ledger holds an answer for it
    recorded_at: datetime | None
    recorded_version: str | None
    method: str | None
    reconsent_required: bool
    can_grant: bool
    can_withdraw: bool
    note: str  # why it cannot change, in words ("" if it can)


@dataclass(frozen=True, slots=True)
class ConsentState:
    policy_version: str
    may_consent: bool  # of the age of self-consent, as far as the server knows
    self_consent_from: date | None
    purposes: tuple[PurposeState, ...]

    @property
    def reconsent_required(self) -> bool:
        return any(p.reconsent_required for p in self.purposes)

    def purpose(self, purpose_id: str) -> PurposeState:
        for state in self.purposes:
            if state.purpose.id == purpose_id:
                return state
        raise KeyError(purpose_id)


def _may_consent(account: Account, today: date) -> tuple[bool, date | None]:
    check = AgeCheck.objects.filter(account=account).first()
    if check is None or check.method == "not_stated":
        return False, None
    if check.self_consent_from is not None and check.self_consent_from > today:
        return False, check.self_consent_from
    return True, None


def consent_state(
    account: Account, *, policy: Policy | None = None, today: date | None = None
) -> ConsentState:
    """Each purpose of the region's policy as it stands for ``account`` now."""
    policy = _policy(policy)
    today = today or timezone.localdate()
    may_consent, self_consent_from = _may_consent(account, today)
    latest: dict[str, ConsentRecord] = {}
    for record in ConsentRecord.objects.filter(account=account).order_by("recorded_at", "pk"):
        latest[record.purpose] = record
    reconsent_on_change = policy.consent.reconsent.on_version_change
    age_note = (
        f"until {self_consent_from:%Y-%m-%d} (the age of self-consent, "
        f"{policy.age.self_consent_age}) this stays off"
        if self_consent_from
        else "stays off until you state your age"
    )
    states = []
    for purpose in policy.consent.purposes:
        record = latest.get(purpose.id)
        stale = (
            record is not None
            and record.granted
            and purpose.mode == "opt_in"
            and reconsent_on_change
            and record.policy_version != policy.version
        )
        if purpose.mode == "necessary":
            granted, can_grant, can_withdraw = True, False, False
            note = "needed to run your account: to stop it, close your account"
        elif purpose.required:
            granted = record is not None and record.granted and not stale
            can_grant, can_withdraw = not granted, False
            note = "" if can_grant else "needed to run your account: to stop it, close your account"
        elif not may_consent:
            granted, can_grant, can_withdraw = False, False, False
            note = age_note
        else:
            default = purpose.mode == "opt_out"
            granted = (record.granted if record is not None else default) and not stale
            can_grant, can_withdraw, note = not granted, granted, ""
        states.append(
            PurposeState(
                purpose=purpose,
                granted=granted,
                answered=record is not None,
                recorded_at=record.recorded_at if record else None,
                recorded_version=record.policy_version if record else None,
                method=record.method if record else None,
                reconsent_required=stale,
                can_grant=can_grant or (stale and may_consent),
                can_withdraw=can_withdraw,
                note=note,
            )
        )
    return ConsentState(policy.version, may_consent, self_consent_from, tuple(states))


def has_consent(account: Account, feature: str, *, policy: Policy | None = None) -> bool:
    """Whether ``feature`` (policy.FEATURES) may run for ``account`` now."""
    policy = _policy(policy)
    purpose = policy.consent.purpose_for_feature(feature)
    return consent_state(account, policy=policy).purpose(purpose.id).granted


def record_consent(
    account: Account,
    purpose_id: str,
    granted: bool,
    method: Method,
    *,
    policy: Policy | None = None,
    now: datetime | None = None,
) -> PurposeState:
    """Give or withdraw consent for one purpose: a new ledger record. Raises ServiceError
    for an unknown purpose, a necessary or required one withdrawn, or an optional one given
    by someone who cannot consent for themselves."""
    policy = _policy(policy)
    moment = now or timezone.now()
    known = [p.id for p in policy.consent.purposes]
    if purpose_id not in known:
        raise _field_error(
            ErrorCode.INVALID_REQUEST,
            "purpose",
            f"unknown purpose {purpose_id!r} (purposes: {', '.join(known)})",
        )
    with transaction.atomic():
        # The account row's lock keeps two answers for one account in order.
        Account.objects.select_for_update().filter(pk=account.pk).first()
        state = consent_state(account, policy=policy, today=timezone.localdate(moment))
        current = state.purpose(purpose_id)
        if not granted and current.purpose.required:
            raise _field_error(
                ErrorCode.FORBIDDEN,
                "granted",
                f"{purpose_id!r} is needed to run your account and cannot be withdrawn; "
                "to stop it, ask for your account's erasure (POST /api/v1/data-requests "
                '{"kind": "erasure"})',
            )
        if granted and not current.can_grant and not current.granted:
            raise ServiceError(
                ErrorCode.UNDER_AGE,
                f"{purpose_id!r}: {current.note}",
                fields={"granted": [{"code": ErrorCode.UNDER_AGE.slug, "message": current.note}]},
                details={"minimum_age": policy.age.self_consent_age},
            )
        ConsentRecord.objects.create(
            account=account,
            purpose=purpose_id,
            granted=granted,
            policy_version=policy.version,
            recorded_at=moment,
            method=method,
        )
        return consent_state(account, policy=policy, today=timezone.localdate(moment)).purpose(
            purpose_id
        )
