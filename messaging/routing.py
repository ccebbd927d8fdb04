"""WebSocket routes, mounted by project.asgi behind the Origin check."""

from django.urls import URLPattern, URLResolver, re_path

from messaging.consumers import RelayConsumer

websocket_urlpatterns: list[URLPattern | URLResolver] = [
    re_path(r"^ws/v1/$", RelayConsumer.as_asgi()),
]
