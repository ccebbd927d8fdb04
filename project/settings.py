"""Sealpost's one settings module: everything that varies between machines comes from the
environment, so there are no per-machine settings files.

With no environment at all this is the *embedded default* for one machine: SQLite in
``var/``, the in-memory channel layer, one Daphne process, DEBUG off, and the HTTPS-only
protections relaxed because it listens on plain HTTP on the loopback. ``PRODUCTION=1``
turns the HTTPS protections on and makes SECRET_KEY and ALLOWED_HOSTS mandatory.

Environment variables:

=================  ==========================================================================
DEBUG              ``1`` for Django's debug mode (tracebacks in pages). Default off.
PRODUCTION         ``1`` behind TLS: secure cookies, HSTS, HTTPS redirect. Default off.
SECRET_KEY         Django's signing key. Required with PRODUCTION=1; otherwise generated once
                   into ``var/secret_key`` (mode 0600) and reused.
DATABASE_URL       e.g. ``postgres://user:pw@host/db``. Default: SQLite at
                   ``var/sealpost.sqlite3``.
REDIS_URL          e.g. ``redis://127.0.0.1:6379/0``: use Redis as the channel layer (needed
                   for more than one Daphne process). Default: in-memory layer.
CHANNEL_LAYER_PREFIX  key prefix in Redis, for deployments sharing one. Default ``asgi``.
REGION             the deployment's region (``deploy/regions/<region>.yaml``). Default ``eu``.
                   Its policy is validated here: an invalid one stops every command
                   (check, migrate, runserver, Daphne) with one line naming the field.
POLICY_DIR         where region policies live. Default ``deploy/regions`` (tests use others).
ENVELOPE_TTL_SECONDS  overrides the policy's undelivered-envelope maximum; must lie within
                   the policy's [minimum, maximum].
DEPLOYMENT_SIGNING_KEY  base64 of the 32-byte Ed25519 seed that signs /api/v1/policy.
                   Required with PRODUCTION=1; otherwise generated once into
                   ``var/deployment_signing_key`` (mode 0600).
PURGE_INTERVAL_SECONDS  seconds between runs of the retention purge (1-3600). Default 600.
PURGE_SCHEDULER    ``auto`` (default: in Daphne and runserver only), ``on`` or ``off``.
ALLOWED_HOSTS      comma-separated host names. Default: localhost, 127.0.0.1, [::1].
CSRF_TRUSTED_ORIGINS  comma-separated origins (``https://chat.example``), for a proxy.
LOG_LEVEL          level of the root logger. Default INFO.
ATTACHMENTS_DIR    where attachment blobs are stored. Default ``var/attachments``.
ATTACHMENTS_S3_BUCKET  store attachment blobs in this S3-compatible bucket instead (needs
                   django-storages[s3]; docs/deploy.md, "Attachment storage"), with
                   ATTACHMENTS_S3_ENDPOINT_URL and ATTACHMENTS_S3_REGION where needed.
ATTACHMENT_BYTES_PER_DAY  bytes of attachment blobs an account may create in 24 hours
                   (rate_limited beyond). Default 1 GiB.
CACHE_KEY_PREFIX   key prefix of the rate-limit counters in Redis (with REDIS_URL). Default:
                   CHANNEL_LAYER_PREFIX's value, else ``sealpost``.
NUM_PROXIES        trusted proxies in front of the server: the client address for rate limits
                   is the entry the outermost one appended to X-Forwarded-For. Default 0
                   (the socket's peer address).
SIGNUPS_PER_ADDRESS, PREKEY_CLAIMS_PER_ACCOUNT, PREKEY_CLAIMS_PER_DEVICE_PAIR,
PREKEY_CLAIMS_PER_TARGET_DEVICE, SENDS_PER_DEVICE_PER_SECOND, SEND_BURST_PER_DEVICE
                   override the abuse limits of the same names (SEALPOST below;
                   keys/throttles.py and messaging/consumers.py explain them).
=================  ==========================================================================
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from compliance.policy import PolicyError, default_policy_dir, load_policy, retention_settings

BASE_DIR = Path(__file__).resolve().parent.parent
# Everything the server writes by default (database, generated key, collected static
# files) lives here, out of version control.
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

DEBUG: bool = env.bool("DEBUG", default=False)
PRODUCTION: bool = env.bool("PRODUCTION", default=False)
REGION: str = env.str("REGION", default="eu")

# --- region policy ----------------------------------------------------------------------
# Loaded and validated before anything else is configured. A bad policy, or an
# ENVELOPE_TTL_SECONDS outside it, stops the process with one line naming the file and
# field (SystemExit prints it to stderr, without a traceback): no command, migration or
# server runs under a policy that breaks the law.

POLICY_DIR = default_policy_dir()
try:
    POLICY = load_policy(REGION, POLICY_DIR)
    _RETENTION = retention_settings(POLICY, os.environ)
except PolicyError as _error:
    raise SystemExit(str(_error)) from None
# The purge (compliance.services.purge_expired) runs this often inside the server, so
# nothing expired outlives its deadline by more than an hour (DESIGN.md).
PURGE_INTERVAL_SECONDS: int = env.int("PURGE_INTERVAL_SECONDS", default=600)
if not 1 <= PURGE_INTERVAL_SECONDS <= 3600:
    raise SystemExit(
        f"PURGE_INTERVAL_SECONDS={PURGE_INTERVAL_SECONDS}: must be between 1 and 3600, "
        "so that nothing expired outlives its deadline by more than an hour"
    )
PURGE_SCHEDULER: str = env.str("PURGE_SCHEDULER", default="auto")
if PURGE_SCHEDULER not in ("auto", "on", "off"):
    raise SystemExit(f"PURGE_SCHEDULER={PURGE_SCHEDULER!r}: must be auto, on or off")


def _embedded_secret_key(path: Path) -> str:
    """Return the key stored at ``path``, creating it (mode 0600) on first use.

    The key is written to a private temporary file and hard-linked into place, so two
    processes starting at once never read a half-written key: the loser of the race
    finds the link taken and reads the winner's key.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(50))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    key = path.read_text().strip()
    if len(key) < 50:
        raise ImproperlyConfigured(f"{path} holds no usable secret key; delete it to regenerate")
    return key


if "SECRET_KEY" in os.environ:
    SECRET_KEY: str = env.str("SECRET_KEY")
elif PRODUCTION:
    raise ImproperlyConfigured("PRODUCTION=1 needs SECRET_KEY in the environment")
else:
    SECRET_KEY = _embedded_secret_key(VAR_DIR / "secret_key")

ALLOWED_HOSTS: list[str] = env.list(
    "ALLOWED_HOSTS",
    default=[] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]"],
)
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("PRODUCTION=1 needs ALLOWED_HOSTS in the environment")
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTP security ----------------------------------------------------------------------

# Django's defaults already send nosniff, a same-origin referrer and opener policy, and
# X-Frame-Options: DENY.
# The embedded default serves plain HTTP on the loopback, where secure-only cookies would
# never come back and an HTTPS redirect would lead nowhere.
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_SSL_REDIRECT = PRODUCTION
SECURE_HSTS_SECONDS = 60 * 60 * 24 * 365 if PRODUCTION else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
# "preload" in the header only makes the domain eligible for the browsers' preload list;
# submitting it (hstspreload.org) stays the operator's decision. `check --deploy` wants it.
SECURE_HSTS_PRELOAD = PRODUCTION
if PRODUCTION:
    # TLS ends at the load balancer, which must set this header (and strip it from clients).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# The Content-Security-Policy of every response: code, styles and connections from this
# origin only. No 'unsafe-inline' and no 'unsafe-eval' anywhere: the pages link every script
# and stylesheet from static/ (templates/base.html), so an injected <script>, style or
# event-handler attribute never runs. connect-src 'self' covers the same-origin WebSocket
# (CSP Level 3 matches ws:/wss: to the page's http:/https: origin). img-src allows data:
# and blob: for images built in the browser, and the API docs' icons.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:", "blob:"],
    # Voice messages play from the object URL of their decrypted blob.
    "media-src": [CSP.SELF, "blob:"],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
}

# --- applications -----------------------------------------------------------------------

INSTALLED_APPS = [
    # First, so that `manage.py runserver` serves ASGI (WebSockets included) through Daphne.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "keys",
    "messaging",
    "groups",
    "attachments",
    "compliance",
    "web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database ---------------------------------------------------------------------------

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'sealpost.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    _sqlite_name = str(DATABASES["default"]["NAME"])
    if _sqlite_name != ":memory:" and not _sqlite_name.startswith("file:"):
        Path(_sqlite_name).parent.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets readers run while one writer commits. synchronous stays at its default,
        # FULL: an envelope acknowledged to its sender must survive a power cut, which
        # NORMAL does not promise in WAL mode.
        "init_command": "PRAGMA journal_mode=WAL",
        # BEGIN IMMEDIATE takes the write lock up front. With the default DEFERRED a read
        # transaction that later writes can fail at once with "database is locked" when
        # another writer got there first, and the busy timeout cannot help it.
        "transaction_mode": "IMMEDIATE",
        # Seconds a connection waits for the write lock (sqlite3.connect's busy timeout).
        "timeout": 20,
        **DATABASES["default"].get("OPTIONS", {}),
    }
    # Tests that claim prekeys from several threads need a test database the threads
    # share. Django's default in-memory one uses SQLite's shared cache, whose table locks
    # fail at once instead of waiting out the busy timeout, so tests use a file. Its name
    # carries the pid: two runs in one work tree (or CI and a developer) would otherwise
    # delete each other's database. Django deletes it when the run ends; pytest-django adds
    # a suffix per xdist worker.
    DATABASES["default"]["TEST"] = {
        "NAME": str(VAR_DIR / f"test_sealpost_{os.getpid()}.sqlite3"),
        **DATABASES["default"].get("TEST", {}),
    }
else:
    # One test database per run (pid), for the same reason as SQLite's above: two runs
    # against one server would otherwise drop each other's.
    DATABASES["default"]["TEST"] = {
        "NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}",
        **DATABASES["default"].get("TEST", {}),
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- channel layer ----------------------------------------------------------------------

REDIS_URL: str | None = env.str("REDIS_URL", default=None)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # Capacity: events queued per consumer before the layer drops them. Delivery
            # never depends on an event arriving (the database is the queue), but a dropped
            # event delays delivery until the next one, so leave room for bursts.
            # redis-py 8 defaults break channels_redis: a 5 s socket timeout kills every
            # consumer that hears nothing for 5 s (its BZPOPMIN waits 5 s;
            # django/channels_redis#422), and a 100-connection pool fails when many
            # sockets connect at once. Both are turned off here (measured in make bench).
            "CONFIG": {
                "hosts": [
                    {"address": REDIS_URL, "socket_timeout": None, "max_connections": 2**31 - 1}
                ],
                "capacity": 2000,
                "expiry": 60,
                # Deployments sharing one Redis (or test servers) keep apart by prefix.
                "prefix": env.str("CHANNEL_LAYER_PREFIX", default="asgi"),
            },
        },
    }
else:
    # Only reaches consumers of this one process: the embedded default runs one Daphne.
    # Channels' in-memory layer with its per-message expiry sweep bounded (messaging.layers).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "messaging.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 2000, "expiry": 60},
        }
    }

# --- cache: rate-limit counters and lock-outs ------------------------------------------
# project.ratelimit counts attempts here (sign-ups, failed log-ins, prekey claims). With
# REDIS_URL every process shares the counters (INCR is atomic); the embedded default's one
# process keeps them in memory. Nothing else is cached.

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # Deployments (and test servers) sharing one Redis keep their counters apart.
            "KEY_PREFIX": env.str(
                "CACHE_KEY_PREFIX", default=env.str("CHANNEL_LAYER_PREFIX", default="sealpost")
            ),
            # redis-py 8's pool fails at once beyond 100 connections (see CHANNEL_LAYERS).
            "OPTIONS": {"max_connections": 2**31 - 1},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "sealpost",
            # Counters expire on their own; this only bounds memory under a flood of
            # distinct addresses (the oldest entries go first).
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }

# --- auth -------------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- i18n -------------------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- static files -----------------------------------------------------------------------

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # With DEBUG off, `collectstatic` (run by `make run`) writes hashed, compressed
        # copies that WhiteNoise serves with far-future cache headers. With DEBUG on,
        # WhiteNoise serves the source files straight from the finders.
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        ),
    },
    # Encrypted attachment blobs (attachments.services), never served as files: only the
    # API reads them back. Private to the server's user on a filesystem.
    "attachments": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": env.path("ATTACHMENTS_DIR", default=VAR_DIR / "attachments"),
            "file_permissions_mode": 0o600,
            "directory_permissions_mode": 0o700,
        },
    },
}
ATTACHMENTS_S3_BUCKET: str = env.str("ATTACHMENTS_S3_BUCKET", default="")
if ATTACHMENTS_S3_BUCKET:
    # django-storages' S3 backend (not a dependency: install django-storages[s3] where it
    # is used). Credentials come the way boto3 finds them: AWS_ACCESS_KEY_ID and
    # AWS_SECRET_ACCESS_KEY in the environment, or the instance's role.
    STORAGES["attachments"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": ATTACHMENTS_S3_BUCKET,
            "endpoint_url": env.str("ATTACHMENTS_S3_ENDPOINT_URL", default=None),
            "region_name": env.str("ATTACHMENTS_S3_REGION", default=None),
            "location": "attachments",
            "default_acl": "private",
            "file_overwrite": False,
            "querystring_auth": True,
        },
    }

# --- REST API ---------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Every error leaves as {code, message, fields} with a code from protocol.errors.
    "EXCEPTION_HANDLER": "project.errors.exception_handler",
    # Devices authenticate with their bearer token; the web pages with the session cookie.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "keys.auth.DeviceTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Sealpost API",
    "DESCRIPTION": "Accounts, devices, prekeys, attachments and compliance. "
    "The server only ever sees ciphertext.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The UIs' JavaScript and CSS come from drf-spectacular-sidecar via our own static
    # files, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- logging ----------------------------------------------------------------------------
# Logs carry no request bodies, ciphertext or keys. No handler here formats the request
# object, the mail_admins handler (which would mail POST data) is not configured, and
# django.db.backends stays above DEBUG so SQL parameters (which will hold ciphertext and
# public keys) are never written even when DEBUG is on.

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "{asctime} {levelname} {name}: {message}", "style": "{"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.db.backends": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}

# --- Sealpost limits --------------------------------------------------------------------
# Every limit a client can hit, with the error code it gets (docs/api.md). Signal's
# figures where it publishes them. Retention figures come from the region policy
# (deploy/regions/), never from here.

SEALPOST = {
    # device_limit_reached
    "MAX_DEVICES_PER_ACCOUNT": env.int("MAX_DEVICES_PER_ACCOUNT", default=6),
    "MAX_PREKEYS_PER_UPLOAD": 100,  # prekey_batch_too_large
    "MAX_PREKEYS_STORED": 1_000,  # per kind and device: prekey_store_full
    "PREKEY_LOW_WATERMARK": 10,  # below this, the device gets a PREKEYS_LOW notice
    "MAX_QUEUE_PER_DEVICE": env.int("MAX_QUEUE_PER_DEVICE", default=10_000),  # queue_full
    # Members per group (group_too_large); never above protocol.groups.MAX_GROUP_MEMBERS.
    "MAX_GROUP_MEMBERS": env.int("MAX_GROUP_MEMBERS", default=1_000),
    # The policy's maximums for undelivered envelopes, attachments and idle devices and
    # accounts (ENVELOPE_TTL_SECONDS may lower the first, within the policy).
    "ENVELOPE_TTL_SECONDS": _RETENTION.envelope_ttl_seconds,
    "ATTACHMENT_TTL_SECONDS": _RETENTION.attachment_ttl_seconds,
    "IDLE_DEVICE_EXPIRY_SECONDS": _RETENTION.idle_device_expiry_seconds,
    "IDLE_ACCOUNT_EXPIRY_SECONDS": _RETENTION.idle_account_expiry_seconds,
    "DELIVERY_PAGE": 100,  # envelopes read from the queue at a time
    "MAX_UNACKED": 256,  # envelopes in flight to one connection before it must ack
    "WS_FRAMES_PER_SECOND": env.int("WS_FRAMES_PER_SECOND", default=100),  # rate_limited
    "WS_FRAME_BURST": env.int("WS_FRAME_BURST", default=400),
    # rate_limited: SEND and GROUP_SEND frames per device, shared by its connections.
    "SENDS_PER_DEVICE_PER_SECOND": env.int("SENDS_PER_DEVICE_PER_SECOND", default=30),
    "SEND_BURST_PER_DEVICE": env.int("SEND_BURST_PER_DEVICE", default=300),
    # attachment_too_large: 100 MiB of file in 1,600 chunks of 64 KiB, each with its
    # 16-byte tag (docs/protocol.md §17.5).
    "MAX_ATTACHMENT_BLOB_BYTES": 104_857_600 + 16 * 1600,
    # rate_limited: bytes of blobs one account may create in any 24 hours.
    "ATTACHMENT_BYTES_PER_DAY": env.int("ATTACHMENT_BYTES_PER_DAY", default=1024**3),
    # --- abuse limits (keys/throttles.py, docs/threat-model.md). Counters in CACHES. ---
    # Trusted proxies in front of the server, for the client address (project.ratelimit).
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
    # rate_limited: sign-up attempts per client address and window.
    "SIGNUPS_PER_ADDRESS": env.int("SIGNUPS_PER_ADDRESS", default=20),
    "SIGNUP_WINDOW_SECONDS": 3600,
    # rate_limited: password log-ins. A (username, address) pair is locked from its 5th
    # failure on, for 60 s doubling per failure up to 15 min; the username as a whole from
    # its 20th failure in an hour, the same way, but never for addresses that logged in to
    # it in the last 30 days.
    "LOGIN_FAILURES_PER_ADDRESS": 5,
    "LOGIN_FAILURES_PER_USERNAME": 20,
    "LOGIN_FAILURE_WINDOW_SECONDS": 3600,
    "LOGIN_FAILURE_MEMORY_SECONDS": 86_400,
    "LOGIN_LOCKOUT_BASE_SECONDS": 60,
    "LOGIN_LOCKOUT_MAX_SECONDS": 900,
    "LOGIN_KNOWN_ADDRESS_SECONDS": 30 * 86_400,
    # Prekey claims per window. Beyond any, a claim succeeds without one-time prekeys
    # (signed + last-resort KEM prekey only), so nobody can drain a device's stock.
    "PREKEY_CLAIMS_PER_ACCOUNT": env.int("PREKEY_CLAIMS_PER_ACCOUNT", default=1_000),
    "PREKEY_CLAIMS_PER_DEVICE_PAIR": env.int("PREKEY_CLAIMS_PER_DEVICE_PAIR", default=5),
    "PREKEY_CLAIMS_PER_TARGET_DEVICE": env.int("PREKEY_CLAIMS_PER_TARGET_DEVICE", default=200),
    "PREKEY_CLAIM_WINDOW_SECONDS": 3600,
}
