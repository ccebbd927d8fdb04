"""WebSocket routes, mounted by project.asgi behind the Origin check. The relay adds its
consumer here."""

from django.urls import URLPattern, URLResolver

websocket_urlpatterns: list[URLPattern | URLResolver] = []
