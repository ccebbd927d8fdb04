"""The compliance app. At start-up (``ready``) it checks that settings hold a loaded region
policy, loads the deployment signing key, in a server process starts the retention purge,
collects what export and erasure cover, and starts auditing the admin. A misconfiguration
stops the process with one line on stderr, as an invalid policy does in settings: no
traceback to dig through, nothing served under a broken setup."""

from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings


class ComplianceConfig(AppConfig):
    name = "compliance"
    verbose_name = "Compliance"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from compliance import scheduler
        from compliance.policy import Policy
        from compliance.signing import SigningKeyError, deployment_key

        if not isinstance(getattr(settings, "POLICY", None), Policy):
            raise SystemExit(
                "settings.POLICY holds no region policy: load it with "
                "compliance.policy.load_policy (see project/settings.py)"
            )
        try:
            deployment_key()
        except SigningKeyError as exc:
            raise SystemExit(str(exc)) from None
        scheduler.start_if_configured(settings.PURGE_SCHEDULER, settings.PURGE_INTERVAL_SECONDS)
        # What export and erasure cover (every app's subject_data module), and the copy of
        # every admin action into the audit log.
        from compliance import audit, subject_data

        subject_data.autodiscover()
        audit.install()
