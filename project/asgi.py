"""ASGI entry point, served by Daphne: HTTP goes to Django, WebSockets to Channels.

WebSocket routes live in ``messaging.routing`` (the relay); connections are refused
unless their Origin is one of ALLOWED_HOSTS, so another site's page cannot open a socket
with the user's cookies.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Set up Django (apps, models) before importing anything that may import models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from messaging.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
    }
)
