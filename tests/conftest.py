"""Suite-wide test set-up."""

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings


@pytest.fixture(autouse=True, scope="session")
def _plain_static_storage() -> Iterator[None]:
    """pytest-django runs with DEBUG off, where settings pick the manifest storage and
    WhiteNoise serves only what `collectstatic` wrote. Tests use the source files instead,
    as DEBUG does, so no test depends on a collectstatic run."""
    storages = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    with override_settings(
        STORAGES=storages, WHITENOISE_USE_FINDERS=True, WHITENOISE_AUTOREFRESH=True
    ):
        yield


@pytest.fixture(autouse=True)
def _fresh_rate_limits(settings: Any) -> None:
    """Rate-limit counters (project.ratelimit, in the cache) start from zero in every test:
    the same cache backend under a key prefix of the test's own. Never a cache.clear(),
    which on Redis (make test-scale) would flush the database live servers share."""
    caches = {name: dict(config) for name, config in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-{uuid.uuid4().hex}"
    settings.CACHES = caches


def fresh_channel_layers() -> dict[str, Any]:
    """CHANNEL_LAYERS for one test: a new in-memory layer, or under ``REDIS_URL`` (the
    scale-out run, ``make test-scale``) the Redis layer with a key prefix of the test's own,
    so no event of another test (or an earlier run) can reach it."""
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        return {"default": {"BACKEND": "messaging.layers.InMemoryChannelLayer"}}
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": redis_url, "socket_timeout": None}],
                "prefix": f"test-{uuid.uuid4().hex}",
                "expiry": 60,
            },
        }
    }
