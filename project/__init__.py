"""Django project: settings, ASGI application and top-level URLs."""
