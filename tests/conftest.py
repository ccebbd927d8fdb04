"""Suite-wide test set-up."""

from collections.abc import Iterator

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
