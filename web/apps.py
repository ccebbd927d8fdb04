from django.apps import AppConfig


class WebConfig(AppConfig):
    """The web client's pages. Pages only: everything they show comes from the browser's
    own store through static/js/app.js; the server renders no message, key or contact."""

    name = "web"
    verbose_name = "Web client"
